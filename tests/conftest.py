"""Fixtures shared by the command tests: a tiny trained digits VisCoIN model (16 px, K = 8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from viscoin_cli.cli import app, load_commands
from viscoin_cli.io.checkpoint import save_checkpoint

load_commands()

# pyproject's addopts run the suite in pytest-xdist workers: they share the cores, here and in the CLI
# processes the tests start, instead of each taking all of them (oversubscribed torch threads spin).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    torch.set_num_threads(THREADS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)

DIGITS_FACTS = {"name": "digits", "class_names": [str(i) for i in range(10)], "num_classes": 10, "channels": 3}
TINY_G = dict(
    z_dim=16,
    c_dim=0,
    w_dim=16,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs={"num_layers": 1},
    synthesis_kwargs={"channel_base": 128, "channel_max": 16},
)


def save_tiny_classifier(path: Path, resolution: int = 16, seed: int = 0, dataset: dict | None = None) -> Path:
    """A random-init narrow ResNet18 for the classes of `dataset` (facts; default digits' 10), saved as a
    classifier checkpoint."""
    from viscoin_cli.nets.classifier import Classifier

    torch.manual_seed(seed)
    facts = {**(dataset or DIGITS_FACTS), "resolution": resolution}
    f = Classifier("resnet18", facts["num_classes"], width=4, stem="small")
    return save_checkpoint(path, f.state_dict(), kind="classifier", config=f.config, dataset=facts)


def save_tiny_generator(path: Path, resolution: int = 16, seed: int = 0, dataset: dict | None = None) -> Path:
    """A random-init `TINY_G` at `resolution`, saved as a generator checkpoint (of `dataset`'s facts)."""
    from viscoin_cli.nets.stylegan2 import Generator

    torch.manual_seed(seed)
    config = {**TINY_G, "img_resolution": resolution}
    G = Generator(**config)
    facts = {**(dataset or DIGITS_FACTS), "resolution": resolution}
    return save_checkpoint(path, G.state_dict(), kind="generator", config=config, dataset=facts)


def save_random_alexnet(path: Path, seed: int = 0) -> Path:
    """A random-init AlexNet's `features.*` weights where `--lpips-weights` reads them (nothing to download)."""
    import torchvision

    torch.manual_seed(seed)
    features = torchvision.models.alexnet().features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


def run_cli(*args: object):
    """Invoke the real Typer app in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result) -> str:
    """A user mistake: exit 2 and exactly one `error: ...` line on stderr. Returns that line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """`viscoin train` for a few steps on 16 px digits with a random tiny f and G: the model's path.

    f.safetensors and G.safetensors sit next to it (and are the paths it records).
    """
    folder = tmp_path_factory.mktemp("tiny-model")
    f_path = save_tiny_classifier(folder / "f.safetensors")
    g_path = save_tiny_generator(folder / "G.safetensors")
    run = folder / "run"
    result = run_cli(
        "train",
        "--classifier",
        f_path,
        "--generator",
        g_path,
        "--dataset",
        "digits",
        "--concepts",
        "8",
        "--hidden",
        "8",
        "--real-batch",
        "4",
        "--synthetic-batch",
        "4",
        "--iterations",
        "4",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    return run / "latest.safetensors"
