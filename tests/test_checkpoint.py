"""The checkpoint format: round trips, provenance, and a one-line error for every broken file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    load_into,
    load_state,
    parent_record,
    read_meta,
    save_checkpoint,
    save_state,
    sha256_file,
)


@pytest.fixture
def tensors():
    return {"weight": torch.arange(6.0).view(2, 3), "bias": torch.tensor([1.0, -1.0])}


@pytest.fixture
def ckpt(tmp_path, tensors):
    return save_checkpoint(
        tmp_path / "model.safetensors",
        tensors,
        kind="classifier",
        config={"arch": "resnet18", "num_classes": 2},
        dataset={"name": "digits", "class_names": ["a", "b"], "resolution": 32, "channels": 3},
        step=7,
        parents={"classifier": {"sha256": "ab" * 32, "path": "/x/f.safetensors"}},
        extra={"test_accuracy": 0.5},
    )


def test_round_trip_keeps_tensors_and_metadata(ckpt, tensors):
    loaded, meta = load_checkpoint(ckpt, kind="classifier")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
    assert meta.kind == "classifier"
    assert meta.config == {"arch": "resnet18", "num_classes": 2}
    assert meta.dataset["class_names"] == ["a", "b"]
    assert meta.step == 7
    assert meta.version
    assert meta.parents["classifier"]["sha256"] == "ab" * 32
    assert meta.extra == {"test_accuracy": 0.5}
    assert meta.created


def test_write_leaves_no_temporary_files(ckpt):
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["model.safetensors"]


def test_written_files_follow_the_umask(tmp_path, tensors):
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", tensors, kind="classifier", config={}, dataset={})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the group, as every other file we write


def test_failed_write_keeps_the_previous_file(ckpt):
    before = ckpt.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any failure inside the writer
        save_checkpoint(ckpt, {"bad": "not a tensor"}, kind="classifier", config={})
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["model.safetensors"]


def test_wrong_kind_is_one_line(ckpt):
    with pytest.raises(UserError, match="is a classifier checkpoint, expected a generator checkpoint"):
        read_meta(ckpt, kind="generator")


def test_truncated_file(ckpt, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        load_checkpoint(cut)


def test_header_cut_short(ckpt, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt.read_bytes()[:40])
    with pytest.raises(UserError, match="truncated"):
        read_meta(cut)


def test_not_a_safetensors_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_text("this is not a checkpoint at all, just some text")
    with pytest.raises(UserError, match="not a safetensors file"):
        read_meta(junk)


def test_safetensors_without_our_metadata(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(UserError, match="without viscoin metadata"):
        read_meta(plain)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_meta(tmp_path / "nope.safetensors")


def test_shared_tensors_are_saved(tmp_path):
    base = torch.ones(4)
    path = save_checkpoint(tmp_path / "s.safetensors", {"a": base, "b": base}, kind="generator", config={})
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded["a"], loaded["b"])


def test_load_into_reports_mismatch(ckpt):
    tensors, meta = load_checkpoint(ckpt)
    module = torch.nn.Linear(3, 3)  # weight 3x3 != 2x3
    with pytest.raises(UserError, match="do not match"):
        load_into(module, tensors, meta.path)


def test_state_round_trip_with_nested_values(tmp_path):
    state = {
        "epoch": 3,
        "best": 0.5,
        "name": None,
        "pair": (1, 2),
        "nested": {0: torch.ones(2), "k": [torch.zeros(1), 2.5]},
    }
    save_state(tmp_path / "s.state.safetensors", state, step=3)
    back = load_state(tmp_path / "s.state.safetensors")
    assert back["epoch"] == 3 and back["best"] == 0.5 and back["name"] is None and back["pair"] == (1, 2)
    assert torch.equal(back["nested"][0], torch.ones(2))
    assert back["nested"]["k"][1] == 2.5


def test_optimizer_state_resumes_identically(tmp_path):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        return model, torch.optim.Adam(model.parameters(), lr=0.1)

    x = torch.randn(8, 4)
    model, opt = make()
    for _ in range(2):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    save_state(tmp_path / "o.state.safetensors", {"model": model.state_dict(), "opt": opt.state_dict()}, step=2)
    state = load_state(tmp_path / "o.state.safetensors")
    model2, opt2 = make()
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).square().sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight)


def test_state_file_is_not_a_model(tmp_path):
    save_state(tmp_path / "s.state.safetensors", {"a": 1}, step=0)
    with pytest.raises(UserError, match="is a state checkpoint, expected a classifier"):
        load_checkpoint(tmp_path / "s.state.safetensors", kind="classifier")


def test_copy_and_provenance(ckpt, tmp_path):
    copy = copy_checkpoint(ckpt, tmp_path / "copy.safetensors")
    assert copy.read_bytes() == ckpt.read_bytes()
    record = parent_record(ckpt)
    assert record["sha256"] == sha256_file(copy)
    assert record["path"] == str(ckpt.resolve())
