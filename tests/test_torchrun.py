"""Every trainer under `torchrun --nproc_per_node=2` on the CPU (gloo) against one process with the same global
batch: the same run folder written by rank 0 alone, one JSON document, a resume, the same loss curve within
each trainer's tolerance, and one process's error ending the run with one line instead of a hang.

The processes share out the global batch one process takes (the same images, augmented alike, and for the
GAN and VisCoIN the same latents), so the curves differ only where the maths does (docs/method.md,
"Multi-process training"): batch statistics over a process's share (BatchNorm in f and in FLINT's decoder,
FLINT's diversity term), FLINT's dropout and G's per-pixel noise, which come from each process's generator,
and the order of float sums (about 1e-7 relative). Each tolerance is 3x or more what was measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_cli, save_tiny_classifier, save_tiny_generator

from viscoin_cli.runtime import Runtime
from viscoin_cli.training.run import EpochShard, SeededItems, TickBatches

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "viscoin_cli"]


@dataclass(frozen=True)
class Trainer:
    args: tuple[str, ...]  # the command and its tiny settings, with F and G for f's and G's checkpoints
    length: str  # the option that sets how long it trains
    short: str  # the first torchrun's length, which the resume takes to `long`
    long: str
    key: str  # what counts the records of metrics.jsonl
    losses: tuple[str, ...]  # the curve compared, record by record
    rtol: float  # |two - one| <= rtol * |one| for every loss of every record


CONCEPTS = ("--classifier", "F", "--dataset", "digits", "--device", "cpu", "--quiet")
TRAINERS = {
    # f's BatchNorm normalises each process's 32 images, one process's 64 (measured: 1.5e-3, then 1.4e-2)
    "classifier": Trainer(
        ("pretrain-classifier", "--dataset", "digits", "--width", "4", "--batch-size", "64", "--device", "cpu",
         "--quiet"),
        "--epochs", "1", "2", "epoch", ("train_loss",), 5e-2,
    ),
    # minibatch-std groups of 4 in each process's 8 are the groups of one process's 16; G's per-pixel noise
    # comes from each process's generator (measured: 8e-4, with or without ADA)
    "gan": Trainer(
        ("finetune-gan", "--dataset", "digits", "--resolution", "16", "--batch-size", "16", "--mbstd", "4",
         "--tick-kimg", "0.064", "--snap", "1", "--grid-size", "4", "--cbase", "256", "--cmax", "16", "--map", "1",
         "--device", "cpu", "--quiet"),
        "--kimg", "0.064", "0.128", "tick", ("loss_G", "loss_D_fake", "loss_D_real", "loss_r1"), 1e-2,
    ),
    "viscoin": Trainer(
        ("train", *CONCEPTS, "--generator", "G", "--concepts", "8", "--hidden", "8", "--real-batch", "4",
         "--synthetic-batch", "4", "--log-every", "2", "--grid-every", "2"),
        "--iterations", "2", "4", "step", ("loss", "fidelity", "rec_l2", "sparsity", "orthogonality", "w_reg"), 1e-4,
    ),
    # BatchNorm in the decoder, the diversity term over each process's share, dropout drawn per process
    # (measured: 1.4e-4)
    "flint": Trainer(
        ("train", "--method", "flint", *CONCEPTS, "--resolution", "16", "--concepts", "4", "--real-batch", "8",
         "--log-every", "2", "--grid-every", "4"),
        "--iterations", "4", "8", "step", ("loss", "output_fidelity", "input_fidelity"), 2e-3,
    ),
    "flaem": Trainer(
        ("train", "--method", "flaem", *CONCEPTS, "--resolution", "16", "--concepts", "4", "--real-batch", "8",
         "--log-every", "2", "--grid-every", "4"),
        "--iterations", "4", "8", "step", ("loss", "fidelity", "reconstruction", "sparsity"), 1e-4,
    ),
}  # fmt: skip


def torchrun(*args: object, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=timeout,
        check=False,
    )


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("parents")
    f, G = save_tiny_classifier(folder / "f.safetensors"), save_tiny_generator(folder / "G.safetensors")
    return {"F": str(f), "G": str(G)}


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINERS)
def test_two_processes_write_and_learn_as_one_and_resume(name, parents, tmp_path):
    trainer = TRAINERS[name]
    args = [parents.get(arg, arg) for arg in trainer.args]
    one, two = tmp_path / "one", tmp_path / "two"
    result = run_cli(*args, trainer.length, trainer.long, "--out", one)
    assert result.exit_code == 0, result.output

    first = torchrun(*args, trainer.length, trainer.short, "--out", two, "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    json.loads(first.stdout)  # exactly one JSON document: rank 1 printed nothing
    resumed = torchrun(trainer.args[0], "--resume", two, trainer.length, trainer.long, "--quiet", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["out"] == str(two)

    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    options = json.loads((two / "options.json").read_text())
    assert options.pop("world_size") == 2
    assert options == {k: v for k, v in json.loads((one / "options.json").read_text()).items() if k != "world_size"}
    curve_one, curve_two = records(one), records(two)
    assert [r[trainer.key] for r in curve_two] == [r[trainer.key] for r in curve_one]
    for a, b in zip(curve_one, curve_two, strict=True):
        for loss in trainer.losses:
            assert abs(b[loss] - a[loss]) <= trainer.rtol * abs(a[loss]), (name, a[trainer.key], loss, a[loss], b[loss])


@pytest.mark.slow
def test_an_error_on_one_process_ends_the_run_with_one_line(parents, tmp_path):
    """Rank 1 raises instead of joining the all-reduce rank 0 waits in (the VISCOIN_FAIL_RANK test hook): the run
    ends in seconds, not after the process group's 30-minute timeout, and says why once."""
    trainer = TRAINERS["flaem"]
    args = [parents.get(arg, arg) for arg in trainer.args]
    out = tmp_path / "run"
    result = torchrun(*args, trainer.length, trainer.long, "--out", out, timeout=300, VISCOIN_FAIL_RANK="1")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert ours == ["error: rank 1: VISCOIN_FAIL_RANK=1: this process failed on purpose (a test hook)"], result.stderr
    # the one traceback is torchrun's own report of the failed process, not one of ours
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "ChildFailedError" in result.stderr.split("Traceback", 1)[1], result.stderr


@pytest.mark.slow
def test_an_error_every_process_raises_is_printed_once(tmp_path):
    """Both processes refuse a global batch they cannot share: the first to fail reports it, the other is quiet."""
    args = TRAINERS["classifier"].args
    result = torchrun(*args[:5], "--batch-size", "63", "--device", "cpu", "--out", tmp_path / "run", timeout=300)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "--batch-size 63 must be a multiple of the 2 processes" in ours[0], result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr  # torchrun's own report


# --- how a global batch is dealt out (fast) -------------------------------------------------------------


def _dealt(sampler_for, world_size: int) -> list[list[tuple[int, int]]]:
    """The global batches W processes take, step by step: each process's share, put back together."""
    shares = [list(sampler_for(rank, world_size)) for rank in range(world_size)]
    return [sorted(item for share in step for item in share) for step in zip(*shares, strict=True)]


def test_tick_batches_deal_one_process_batch_with_its_seeds():
    def sampler(rank: int, world_size: int) -> TickBatches:
        return TickBatches(100, 8 // world_size, steps=3, seed=5, rank=rank, world_size=world_size)

    assert _dealt(sampler, 2) == _dealt(sampler, 1) == _dealt(sampler, 1)
    assert len({seed for batch in _dealt(sampler, 1) for _, seed in batch}) == 24  # a seed per drawn image


def test_epoch_shards_deal_one_process_batch_with_its_seeds():
    dataset = list(range(50))

    def sampler(rank: int, world_size: int):
        shard = EpochShard(dataset, world_size, rank, shuffle=True, seed=3, drop_last=True)
        shard.set_epoch(1)
        items = list(shard)
        per = 8 // world_size
        return [items[i : i + per] for i in range(0, len(items) - per + 1, per)]

    assert _dealt(sampler, 2) == _dealt(sampler, 1)


def test_seeded_items_augment_by_their_seed_alone():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(2) + index

    items = SeededItems(Noisy())
    torch.manual_seed(0)
    first = items[1, 7]
    state = torch.get_rng_state()
    items[2, 8]  # another image in between changes nothing
    assert torch.equal(items[1, 7], first) and not torch.equal(items[1, 9], first)
    assert torch.equal(torch.get_rng_state(), state)  # the process's own stream is left as it was


def test_shard_randn_deals_one_process_draws():
    one = Runtime(torch.device("cpu"), "fp32", 0)
    ranks = [Runtime(torch.device("cpu"), "fp32", 0, rank=r, world_size=2) for r in (0, 1)]
    for rt in (one, *ranks):
        rt.reseed(4, 2)
    whole = one.shard_randn(6, 3)
    shares = [rt.shard_randn(3, 3) for rt in ranks]
    assert torch.equal(whole[0::2], shares[0]) and torch.equal(whole[1::2], shares[1])
