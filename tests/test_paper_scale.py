"""Paper scale end to end on CPU: 256 px folder data, a ResNet50 f, a StyleGAN2 G at NVIDIA's `paper256`
widths (14 W+ vectors), K = 256 concepts, through `train`, `evaluate`, `visualize`, `explain` and `report`.

The tiny 16 px models of the other tests cannot catch what only shows at the paper's sizes (shapes tied to
14 ws or 256 concepts, a stage's memory or time blowing up at 256 px). All networks are random: the point
is that every stage runs, not what it finds. What makes it fit CI are the settings (one real and one
synthetic image per step, a few samples), never skipped stages: rendering one 256 px image through G and
back costs ~3 s of CPU (about 3/4 of a step; f ~1 s, LPIPS ~0.15 s), so the paper's 8 + 8 images per
step (~70 s per iteration on 2 cores, 8 GB) would not. Each stage runs as its own process so that its wall
time, CPU time and peak RSS are its own; they are printed (`pytest -s`, or `-rA`'s captured output), logged and
recorded as the test's `stages` property (junit XML).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_random_alexnet
from PIL import Image

from viscoin_cli.io.checkpoint import read_meta, save_checkpoint

log = logging.getLogger(__name__)

CLASSES = ("heron", "owl", "wren")
RESOLUTION = 256
# NVIDIA's stylegan2-ada `--cfg paper256`: fmaps 0.5 (channel_base 16384), channel_max 512, 4 fp16 blocks
# (fp32 on CPU) and conv_clamp 256; 2 mapping layers, as the paper fine-tunes.
PAPER256_G = dict(
    z_dim=512,
    c_dim=0,
    w_dim=512,
    img_resolution=RESOLUTION,
    img_channels=3,
    mapping_kwargs={"num_layers": 2},
    synthesis_kwargs={"channel_base": 16384, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
)
CPU = ["--device", "cpu", "--workers", "0"]


def _write_images(root: Path, per_split: dict[str, int]) -> None:
    """root/<split>/<class>/<i>.png|jpg: 256 px noise with a class-coloured square, both formats."""
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
                pixels[64:192, 64:192, label] = 255
                Image.fromarray(pixels).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")


def _save_parts(folder: Path) -> dict[str, Path]:
    """Random-init f (ResNet50), G (paper256) and an AlexNet file for LPIPS (no download offline)."""
    from viscoin_cli.nets.classifier import Classifier
    from viscoin_cli.nets.stylegan2 import Generator

    torch.manual_seed(0)
    facts = {"name": "folder", "class_names": list(CLASSES), "num_classes": len(CLASSES), "channels": 3}
    facts["resolution"] = RESOLUTION
    f = Classifier("resnet50", len(CLASSES))
    G = Generator(**PAPER256_G)
    assert G.num_ws == 14
    parts = {"f": folder / "f.safetensors", "G": folder / "G.safetensors", "alexnet": folder / "alexnet.pth"}
    save_checkpoint(parts["f"], f.state_dict(), kind="classifier", config=f.config, dataset=facts)
    save_checkpoint(parts["G"], G.state_dict(), kind="generator", config=PAPER256_G, dataset=facts)
    save_random_alexnet(parts["alexnet"])
    return parts


class Stages:
    """Runs CLI stages as child processes and keeps each one's wall time, CPU time and peak RSS."""

    def __init__(self, cwd: Path):
        self.cwd, self.rows = cwd, []

    def __call__(self, name: str, *args: object) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "viscoin_cli", *(str(a) for a in args)]
        start = time.perf_counter()
        with open(self.cwd / f"{name}.out", "w+") as out, open(self.cwd / f"{name}.err", "w+") as err:
            process = subprocess.Popen(command, cwd=self.cwd, stdout=out, stderr=err)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not the max over children
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
        peak_gb = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 2**30
        row = {
            "stage": name,
            "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),  # what a busy machine cannot inflate
            "peak_rss_gb": round(peak_gb, 2),
        }
        self.rows.append(row)
        line = f"paper-scale {name}: {row['seconds']} s ({row['cpu_seconds']} s CPU), peak RSS {row['peak_rss_gb']} GB"
        print(line, flush=True)
        log.info(line)
        assert result.returncode == 0, f"{name} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        return result


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="per-stage peak memory needs os.wait4 (POSIX)")
def test_every_stage_runs_at_paper_scale(tmp_path, record_property):
    _write_images(tmp_path / "data", {"train": 2, "test": 2})
    parts = _save_parts(tmp_path)
    stage = Stages(tmp_path)
    data = ["--data-root", tmp_path / "data"]
    try:
        _run_stages(stage, parts, data, tmp_path)
    finally:
        record_property("stages", json.dumps(stage.rows))
        (tmp_path / "stages.json").write_text(json.dumps(stage.rows, indent=1))


def _run_stages(stage: Stages, parts: dict[str, Path], data: list, tmp_path: Path) -> None:
    summary = json.loads(
        stage(
            "train", "train", "--classifier", parts["f"], "--generator", parts["G"], "--dataset", "folder", *data,
            "--lpips-weights", parts["alexnet"], "--iterations", "2", "--real-batch", "1", "--synthetic-batch", "1",
            "--log-every", "2", "--grid-every", "2", *CPU, "--out", "run", "--json",
        ).stdout
    )  # fmt: skip
    model = tmp_path / "run" / "latest.safetensors"
    meta = read_meta(model, kind="viscoin")
    assert summary["iterations"] == 2 and meta.config["num_concepts"] == 256
    assert meta.config["support_ws"] == [0, 1, 2, 12, 13]  # the paper's first 3 and last 2 of 14
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2] and records[0]["rec_lpips"] > 0  # one checkpoint: ~1 GB with Adam
    assert (tmp_path / "run" / "recon0000002.png").is_file()

    common = ["--model", model, *data, *CPU]
    accuracy = json.loads(stage("evaluate-accuracy", "evaluate", "accuracy", *common, "--json").stdout)
    assert 0 <= accuracy["metrics"]["accuracy"]["g"] <= 1
    faithful = stage(
        "evaluate-faithfulness", "evaluate", "faithfulness", *common, "--samples", "2", "--thresholds", "0.2",
        "--json",
    )  # fmt: skip
    assert "0.2" in json.loads(faithful.stdout)["metrics"]["faithfulness"]

    stage("visualize", "visualize", *common, "--concept", "255", "--samples", "1", "--out", "concept.png")
    with Image.open(tmp_path / "concept.png") as grid:
        assert min(grid.size) >= RESOLUTION

    stage("explain", "explain", *common, "--index", "0", "--top-k", "2", "--out", "explain")
    assert (tmp_path / "explain" / "index.html").is_file()
    assert len((tmp_path / "explain" / "explanations.jsonl").read_text().splitlines()) == 1

    stage(
        "report", "report", *common, "--concepts", "0,255", "--top", "1", "--lambdas", "0,1", "--explain", "0",
        "--metrics", "none", "--out", "report",
    )  # fmt: skip
    assert "<html" in (tmp_path / "report" / "index.html").read_text().lower()
