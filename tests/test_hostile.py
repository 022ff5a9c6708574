"""Hostile and careless inputs: each ends in one `error:` line (exit 2) or a bounded, clean result.

To add a case, add a row to CASES: an id, a function `(c: Ctx) -> argv` that builds whatever files the
case needs under `c.tmp`, and a piece of the expected error line. `c` also holds a tiny classifier,
generator and VisCoIN model that every case may use (and must not modify).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import TINY_G, assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator
from PIL import Image

from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class Assets:
    classifier: Path
    generator: Path
    model: Path


@dataclass(frozen=True)
class Ctx(Assets):
    tmp: Path  # the test's own folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_model) -> Assets:
    folder = tmp_path_factory.mktemp("hostile-assets")
    return Assets(
        save_tiny_classifier(folder / "f.safetensors"), save_tiny_generator(folder / "G.safetensors"), tiny_model
    )


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def _resaved(source: Path, dest: Path, kind: str, **config_changes) -> Path:
    """A copy of a checkpoint whose header config has been tampered with (weights unchanged)."""
    tensors, meta = load_checkpoint(source, kind=kind)
    config = {**meta.config, **config_changes}
    return save_checkpoint(
        dest, tensors, kind=kind, config=config, dataset=meta.dataset, parents=meta.parents, extra=meta.extra
    )


def _generator_with(c: Ctx, **changes) -> Path:
    return _resaved(c.generator, c.tmp / "bad-G.safetensors", "generator", **changes)


def _classifier_with(c: Ctx, **changes) -> Path:
    return _resaved(c.classifier, c.tmp / "bad-f.safetensors", "classifier", **changes)


def _model_with(c: Ctx, **changes) -> Path:
    return _resaved(c.model, c.tmp / "bad-model.safetensors", "viscoin", **changes)


def _train_with_classifier(c: Ctx, **changes) -> list:
    f = _classifier_with(c, **changes)
    return ["train", "--classifier", f, "--generator", c.generator, "--iterations", "1", "--out", c.tmp / "r"]


def _generate(generator: Path, *extra) -> list:
    return ["generate", "--generator", generator, "--device", "cpu", *extra]


def _synthesis(**changes) -> dict:
    return {"synthesis_kwargs": {**TINY_G["synthesis_kwargs"], **changes}}


Case = Callable[[Ctx], list]
CASES: list[tuple[str, Case, str]] = [
    # --- where a command writes ----------------------------------------------------------------------------
    (
        "visualize --out under /proc",
        lambda c: ["visualize", "--model", c.model, "--concept", "0", "--out", "/proc/viscoin-x.png"],
        "--out /proc/viscoin-x.png: cannot write in /proc",
    ),
    (
        "visualize --out under a file",
        lambda c: ["visualize", "--model", c.model, "--concept", "0", "--out", _file(c.tmp) / "x.png"],
        "a-file is not a folder",
    ),
    ("generate --out is a folder", lambda c: _generate(c.generator, "--out", c.tmp), "expected a file name ending in"),
    (
        "generate --out is a folder named .png",
        lambda c: _generate(c.generator, "--out", (c.tmp / "grid.png").mkdir() or c.tmp / "grid.png"),
        "is a folder, expected a file name",
    ),
    ("generate --out x.gif", lambda c: _generate(c.generator, "--out", c.tmp / "x.gif"), "ending in .png or .jpg"),
    (
        "generate --out under /proc",
        lambda c: _generate(c.generator, "--out", "/proc/x.png"),
        "cannot write in /proc",
    ),
    (
        "relevance --csv under a file",
        lambda c: ["relevance", "--model", c.model, "--csv", _file(c.tmp) / "r.csv"],
        "a-file",
    ),
    ("report --out is a file", lambda c: ["report", "--model", c.model, "--out", _file(c.tmp)], "is not a folder"),
    ("pipeline --out is a file", lambda c: ["pipeline", "--out", _file(c.tmp)], "exists and is not a folder"),
    ("import-gan DEST under /proc", lambda c: ["import-gan", c.generator, "/proc/G.safetensors"], "cannot write"),
    (
        "import-gan DEST is a folder",
        lambda c: ["import-gan", c.generator, (c.tmp / "G.safetensors").mkdir() or c.tmp / "G.safetensors"],
        "is a folder",
    ),
    (
        "train --out under a file",
        lambda c: ["train", "--classifier", c.classifier, "--generator", c.generator, "--out", _file(c.tmp) / "run"],
        "a-file",
    ),
    # --- absurd configs in checkpoint headers: refused before anything is built ------------------------------
    ("generator z_dim 2^20", lambda c: _generate(_generator_with(c, z_dim=2**20)), "z_dim = 1048576 is outside"),
    ("generator w_dim 2^20", lambda c: _generate(_generator_with(c, w_dim=2**20)), "w_dim = 1048576 is outside"),
    ("generator z_dim 0", lambda c: _generate(_generator_with(c, z_dim=0)), "generator config not understood"),
    (
        "generator channel_max 0",
        lambda c: _generate(_generator_with(c, **_synthesis(channel_max=0))),
        "channel_max = 0 is outside",
    ),
    (
        "generator negative channel_base",
        lambda c: _generate(_generator_with(c, **_synthesis(channel_base=-128))),
        "channel_base = -128 is outside",
    ),
    (
        "generator img_resolution 2^30",
        lambda c: _generate(_generator_with(c, img_resolution=2**30)),
        "img_resolution = 1073741824 is outside",
    ),
    (
        "generator img_resolution a string",
        lambda c: _generate(_generator_with(c, img_resolution="16")),
        "is not a whole number",
    ),
    (
        "generator of 2.6 billion weights from in-range sizes",
        lambda c: _generate(_generator_with(c, w_dim=8192, mapping_kwargs={"num_layers": 40})),
        "billion weights",
    ),
    ("classifier width 2^16", lambda c: _train_with_classifier(c, width=2**16), "width = 65536 is outside"),
    (
        "VisCoIN num_concepts 10^6",
        lambda c: ["relevance", "--model", _model_with(c, num_concepts=10**6)],
        "num_concepts = 1000000 is outside",
    ),
    (
        "VisCoIN num_concepts a string",
        lambda c: ["relevance", "--model", _model_with(c, num_concepts="8")],
        "is not a whole number",
    ),
    # --- options that would ask for unbounded work ---------------------------------------------------------
    ("generate 10^8 seeds", lambda c: _generate(c.generator, "--seeds", "0-99999999"), "more than the 1000000"),
    (
        "generate a grid above 67 Mpx",
        lambda c: _generate(c.generator, "--seeds", "0-299999", "--out", c.tmp / "g.png"),
        "Mpx, above the 67 Mpx",
    ),
    # --- usage mistakes --------------------------------------------------------------------------------------
    ("unknown option", lambda _: ["evaluate", "accuracy", "--fail-undr", "x"], "did you mean --fail-under?"),
    ("unknown command", lambda _: ["visualise"], "did you mean visualize?"),
    ("missing SRC", lambda c: ["import-gan", c.tmp / "nope.pkl", c.tmp / "G.safetensors"], "nope.pkl"),
]


@pytest.mark.parametrize("build, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_input_is_one_line(tmp_path, assets, build, expected):
    line = assert_one_line_error(run_cli(*build(Ctx(**vars(assets), tmp=tmp_path))))
    assert expected in line, line
    assert "Traceback" not in line


def test_failed_checks_create_nothing(tmp_path, assets):
    run_cli("generate", "--generator", assets.generator, "--out", _file(tmp_path) / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no probe file, no folder


# --- the cases whose result is a clean success rather than an error -----------------------------------------


def test_generate_out_jpg_writes_a_jpeg(tmp_path, assets):
    result = run_cli(*_generate(assets.generator, "--seeds", "0-3", "--out", tmp_path / "x.jpg"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's magic, not PNG bytes
    with Image.open(tmp_path / "x.jpg") as picture:
        assert picture.format == "JPEG"


def test_generate_npy_streams_batches_to_disk(tmp_path, assets):
    import numpy as np

    out = tmp_path / "x.npy"
    result = run_cli(
        *_generate(assets.generator, "--seeds", "0-9", "--format", "npy", "--batch-size", "3"), "--out", out
    )
    assert result.exit_code == 0, result.output
    array = np.load(out)
    assert array.shape == (10, 3, 16, 16) and array.dtype == np.float32
    one = tmp_path / "one.npy"  # the same seed alone gives the same image: batches land in order
    assert run_cli(*_generate(assets.generator, "--seeds", "7", "--format", "npy"), "--out", one).exit_code == 0
    np.testing.assert_allclose(np.load(one)[0], array[7], atol=1e-5)


def test_import_gan_leaves_nothing_behind_when_a_write_fails(tmp_path, monkeypatch):
    from test_import_gan_cli import nvidia_pickle

    import viscoin_cli.io.checkpoint as checkpoint

    src, _ = nvidia_pickle(tmp_path / "n.pkl")
    real = checkpoint.save_checkpoint

    def failing(path, *args, **kwargs):
        if str(path).endswith(".D.safetensors"):
            raise OSError(28, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", failing)
    line = assert_one_line_error(run_cli("import-gan", src, tmp_path / "G.safetensors"))
    assert "No space left on device" in line
    assert not (tmp_path / "G.safetensors").exists() and not (tmp_path / "G.D.safetensors").exists()


def test_reconstruction_of_a_model_with_infinite_weights_is_null_not_a_traceback(tmp_path, assets):
    tensors, meta = load_checkpoint(assets.model, kind="viscoin")
    tensors = {name: torch.full_like(t, float("inf")) if t.is_floating_point() else t for name, t in tensors.items()}
    model = save_checkpoint(
        tmp_path / "inf.safetensors", tensors, kind="viscoin", config=meta.config, dataset=meta.dataset,
        parents=meta.parents, extra=meta.extra,
    )  # fmt: skip
    args = ["evaluate", "reconstruction", "--model", model, "--samples", "8", "--lpips", "none", "--json"]
    result = run_cli(*args, "--fail-over", "reconstruction.fid=1e9")
    assert result.exit_code == 1, result.output  # the gate fails, nothing crashes
    document = json.loads(result.stdout)
    assert document["metrics"]["reconstruction"]["fid"] is None
    assert "LinAlgError" not in result.stderr


def test_frechet_distance_of_non_finite_statistics_is_nan():
    import numpy as np

    from viscoin_cli.metrics.fid import frechet_distance

    eye = np.eye(3)
    assert np.isnan(frechet_distance(np.zeros(3), eye * np.inf, np.zeros(3), eye))


def test_huge_image_is_one_warning_line_not_pillows(tmp_path, assets, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 40x40 image stands for a 12000² one
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "big.png")
    result = run_cli("relevance", "--model", assets.model, "--image", tmp_path / "big.png")
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"warning: 1 image is above 0 Mpx (e.g. {tmp_path / 'big.png'}, 40×40): each takes ~0 MB of "
                     "memory to decode"]  # fmt: skip
    too_big = tmp_path / "too-big.png"
    Image.new("RGB", (50, 50)).save(too_big)  # above twice the limit: Pillow refuses it
    line = assert_one_line_error(run_cli("relevance", "--model", assets.model, "--image", too_big))
    assert "above Pillow's limit" in line


def test_truncated_jpeg_in_a_worker_is_the_sentence_only(tmp_path):
    import numpy as np
    from _fake_data import write_image

    root = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("a", "b"):
            for i in range(3):
                write_image(root / split / name / f"{i}.jpg")
    cut = root / "train" / "a" / "0.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:-300])  # the header parses, the end of the pixel data is gone
    args = ["pretrain-classifier", "--dataset", "folder", "--data-root", root, "--resolution", "16", "--epochs", "1"]
    args += ["--weights", "none", "--arch", "resnet18", "--width", "4", "--workers", "1", "--batch-size", "2", "-q"]
    line = assert_one_line_error(run_cli(*args, "--out", tmp_path / "run"))
    assert "0.jpg: cannot decode image" in line and "viscoin_cli.errors" not in line and "Caught" not in line
