"""The runtime helper: device selection, precision, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viscoin_cli.errors import UserError
from viscoin_cli.runtime import seed_everything, seed_for, select_device, setup_runtime


def test_auto_device_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_user_error(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        select_device(spec)


def test_unknown_device():
    with pytest.raises(UserError, match="expected auto, cpu, cuda or cuda:N"):
        select_device("tpu")


def test_bad_precision():
    with pytest.raises(UserError, match="--precision"):
        setup_runtime("cpu", "fp8")


def test_fp16_needs_cuda():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        setup_runtime("cpu", "fp16")


def test_single_process_runtime():
    rt = setup_runtime("cpu", "fp32", seed=3)
    assert rt.is_main and not rt.distributed and rt.world_size == 1 and rt.device.type == "cpu"


def test_bf16_autocast_on_cpu():
    rt = setup_runtime("cpu", "bf16")
    with rt.autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.bfloat16


def test_seeding_is_reproducible():
    seed_everything(5)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_seed_for_is_stable_and_distinguishes_parts():
    assert seed_for(1, 2) == seed_for(1, 2)
    assert len({seed_for(0, e, r) for e in range(10) for r in range(4)}) == 40


def test_loader_generator_depends_on_epoch():
    rt = setup_runtime("cpu", "fp32", seed=0)
    draws = [torch.randint(0, 10**9, (1,), generator=rt.loader_generator(e)).item() for e in (0, 0, 1)]
    assert draws[0] == draws[1] != draws[2]
