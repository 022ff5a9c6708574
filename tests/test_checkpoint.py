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


# --- the weight count that guards build_from_config --------------------------------------------------------------


def _tiny_f():
    from viscoin_cli.nets.classifier import Classifier

    return Classifier("resnet18", 10, width=4, stem="small")


def _tiny_g():
    from conftest import TINY_G

    from viscoin_cli.nets.stylegan2 import Generator

    return Generator(**TINY_G)


class _Initialised(torch.nn.Module):
    """Every initialiser and constructor op `_ShapesOnly` shortcuts, in one module."""

    def __init__(self, n: int):
        super().__init__()
        self.a = torch.nn.Parameter(torch.empty(n, 2 * n))
        for init in (torch.nn.init.trunc_normal_, torch.nn.init.orthogonal_, torch.nn.init.xavier_normal_):
            init(self.a)
        self.b = torch.nn.Parameter(torch.randn([n, 3]) / 2 * torch.rand(1, 3))
        self.register_buffer(
            "f", torch.outer(torch.ones(n, dtype=torch.int64) / 3, torch.ones(n)).div(2, rounding_mode="floor")
        )
        self.c = torch.nn.Parameter(torch.empty(n).normal_().uniform_().erfinv_())


def _kinds():
    """(name, build, config) for every network kind that goes through build_from_config."""
    from conftest import TINY_G

    from viscoin_cli.nets.classifier import Classifier
    from viscoin_cli.nets.flaem import FLAEM
    from viscoin_cli.nets.flint import FLINT
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator
    from viscoin_cli.nets.viscoin import VisCoIN
    from viscoin_cli.training.gan import discriminator_kwargs_for

    f, G = _tiny_f(), _tiny_g()
    synthesis = TINY_G["synthesis_kwargs"]
    D = discriminator_kwargs_for(TINY_G)
    return [
        ("resnet18 small", Classifier, {"arch": "resnet18", "num_classes": 10, "width": 4, "stem": "small"}),
        ("resnet34 imagenet", Classifier, {"arch": "resnet34", "num_classes": 3, "width": 8, "stem": "imagenet"}),
        ("resnet50", Classifier, {"arch": "resnet50", "num_classes": 7, "width": 8}),
        ("G skip", Generator, TINY_G),
        ("G resnet, conditional, fp16", Generator, {
            **TINY_G, "c_dim": 4, "img_resolution": 32,
            "synthesis_kwargs": {**synthesis, "architecture": "resnet", "num_fp16_res": 2, "conv_clamp": 256},
        }),
        ("G orig, 1 channel", Generator, {**TINY_G, "img_channels": 1, "synthesis_kwargs": {
            **synthesis, "architecture": "orig"}}),
        ("D resnet", Discriminator, D),
        ("D skip, conditional", Discriminator, {**D, "architecture": "skip", "c_dim": 3,
                                                 "epilogue_kwargs": {"mbstd_num_channels": 2}}),
        ("D orig, 32 px", Discriminator, {**D, "architecture": "orig", "img_resolution": 32, "num_fp16_res": 1}),
        ("VisCoIN", lambda **c: VisCoIN(f, G, c), {"num_concepts": 8, "hidden": 8}),
        ("VisCoIN support_ws", lambda **c: VisCoIN(f, G, c), {"num_concepts": 5, "hidden": 4, "support_ws": [3]}),
        ("FLINT", lambda **c: FLINT(f, c), {"num_concepts": 8, "hidden": 8, "resolution": 16}),
        ("FLAEM", lambda **c: FLAEM(f, c), {"num_concepts": 8, "resolution": 16, "decoder_channels": [8, 4]}),
        ("initialisers", _Initialised, {"n": 6}),
    ]  # fmt: skip


def test_weight_count_matches_a_real_build():
    """The count comes from a build that skips initialisers and shortcuts ops: it must still be exact."""
    from viscoin_cli.io.checkpoint import _count_parameters

    for name, build, config in _kinds():
        real = build(**config)
        expected = sum(p.numel() for p in real.parameters()) + sum(b.numel() for b in real.buffers())
        assert _count_parameters(build, config) == expected, name


def test_weight_count_leaves_the_random_stream_alone():
    from viscoin_cli.io.checkpoint import _count_parameters

    kinds = _kinds()  # builds f and G for real
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    for _, build, config in kinds:
        _count_parameters(build, config)
    assert torch.equal(torch.rand(4), expected)


def test_weight_count_is_cheap():
    """Meta kernels written in Python import sympy and torch._dynamo on first use (2-3 s of CPU, once per
    process); counting any kind must run none of them. A new constructor op that does: shortcut it in
    `_ShapesOnly` (or accept the cost)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, "tests")  # as pytest puts it: the test modules import conftest
        from test_checkpoint import _kinds
        from viscoin_cli.io.checkpoint import _count_parameters
        builds = _kinds()  # the real f and G the concept models take are built before the check
        heavy = [m for m in ("sympy", "torch._dynamo") if m in sys.modules]
        assert not heavy, f"imported before counting: {heavy}"
        for name, build, config in builds:
            assert _count_parameters(build, config), name
            heavy = [m for m in ("sympy", "torch._dynamo") if m in sys.modules]
            assert not heavy, f"counting {name} imported {heavy}"
        """
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "what, config",
    [
        ("classifier", {"arch": "resnet50", "num_classes": 10, "width": 4096}),
        ("generator", {"z_dim": 512, "c_dim": 0, "w_dim": 8192, "img_resolution": 16, "img_channels": 3,
                       "mapping_kwargs": {"num_layers": 40}}),
        ("discriminator", {"c_dim": 0, "img_resolution": 8192, "img_channels": 3,
                           "channel_base": 1 << 22, "channel_max": 1 << 14}),
        ("flint", {"num_concepts": 1 << 14, "hidden": 1 << 14, "resolution": 16}),
    ],
)  # fmt: skip
def test_absurd_weight_counts_are_refused_before_building(what, config):
    """Sizes each within CONFIG_BOUNDS that together ask for billions of weights: one line, nothing allocated."""
    from viscoin_cli.io.checkpoint import build_from_config
    from viscoin_cli.nets.classifier import Classifier
    from viscoin_cli.nets.flint import FLINT
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator

    f = _tiny_f() if what == "flint" else None
    build = {"classifier": Classifier, "generator": Generator, "discriminator": Discriminator}.get(
        what, lambda **c: FLINT(f, c)
    )
    with pytest.raises(UserError, match=rf"^x\.safetensors: {what} config not understood \(ValueError: .* billion"):
        build_from_config(build, config, "x.safetensors", what)
