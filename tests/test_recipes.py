"""docs/recipes.md: every `viscoin` command in its bash blocks runs, on tiny fake data in the real layouts.

Each `## ` section with commands is one recipe, run as written in its own working folder (so `runs/...`
stays relative) with the real console script. The doc's placeholders are mapped: `~/data/<folder>` to a
tiny dataset written in that dataset's official layout, the NVIDIA pickle names to tiny pickles in NVIDIA's
formats written under those names. Tiny sizes are appended to each command (click keeps the last value of a
repeated option, which the test checks in the run folders' options.json). A command whose name, dataset
folder or pickle is not known here fails the test: add the mapping when the doc grows.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from _fake_data import write_cars, write_celebahq, write_cub
from _fake_nvidia import as_persistent, augment_pipe, dump, tf_discriminator, tf_generator

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "recipes.md"
RESOLUTION = 16  # of the fake generators, hence of f, the GAN fine-tuning and VisCoIN too
VISCOIN = Path(sys.executable).with_name("viscoin")  # the console script installed beside this Python

# --- the doc ---------------------------------------------------------------------------------------------


def doc_recipes(text: str) -> dict[str, list[list[str]]]:
    """`## Title` -> the argv (after `viscoin`) of each command in that section's ```bash blocks, in order."""
    recipes: dict[str, list[list[str]]] = {}
    title, fence, pending = None, None, ""  # fence: the open code block's language
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None and line.startswith("## "):
            title = line[3:].strip()
        elif stripped.startswith("```"):
            fence = stripped[3:] if fence is None else None
            pending = ""
        elif fence == "bash":
            pending += stripped
            if pending.endswith("\\"):  # a continuation line
                pending = pending[:-1] + " "
                continue
            if pending.startswith("viscoin "):
                assert title is not None, f"docs/recipes.md: {pending!r} is not under a ## heading"
                recipes.setdefault(title, []).append(shlex.split(pending)[1:])
            pending = ""
    return recipes


RECIPES = doc_recipes(DOC.read_text())
# The recipe whose `train` is also run without --lpips none, to see the error without LPIPS weights.
LPIPS_CHECKED_IN = next((t for t, commands in RECIPES.items() if any(c[0] == "train" for c in commands)), None)


def test_the_doc_parser():
    text = "## A\n```bash\nviscoin x --a 1 \\\n  --b ~/p\n# viscoin no\n```\nviscoin outside\n"
    text += "## B\n```text\n## not a title\nviscoin no\n```\n## C\n```bash\nviscoin y 'a b'\n```\n"
    assert doc_recipes(text) == {"A": [["x", "--a", "1", "--b", "~/p"]], "C": [["y", "a b"]]}


# --- fake data and pickles in the doc's names ------------------------------------------------------------


MAPPING_LAYERS = 8  # of the fake NVIDIA generators, as in NVIDIA's: a recipe's --map 2 drops the deeper six


def _ada_pickle(path: Path) -> None:
    """A stylegan2-ada-pytorch network pickle (persistence format), like NVIDIA's released ones."""
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator

    synthesis = {"channel_base": 128, "channel_max": 16, "num_fp16_res": 4, "conv_clamp": 256}
    g_kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=RESOLUTION, img_channels=3,
                    mapping_kwargs={"num_layers": MAPPING_LAYERS}, synthesis_kwargs=synthesis)  # fmt: skip
    d_kwargs = dict(c_dim=0, img_resolution=RESOLUTION, img_channels=3, channel_base=128, channel_max=16,
                    num_fp16_res=4, conv_clamp=256, block_kwargs={}, mapping_kwargs={},
                    epilogue_kwargs={"mbstd_group_size": 4})  # fmt: skip
    torch.manual_seed(0)
    G, D = Generator(**g_kwargs), Discriminator(**d_kwargs)
    data = {"G": as_persistent(G, "Generator", g_kwargs), "G_ema": as_persistent(G, "Generator", g_kwargs),
            "D": as_persistent(D, "Discriminator", d_kwargs), "augment_pipe": augment_pipe(0.2)}  # fmt: skip
    dump(data, path)


def _tf_pickle(path: Path) -> None:
    """A TensorFlow StyleGAN2 pickle (G, D, Gs), like NVIDIA's stylegan2-*-config-f.pkl."""
    rng = np.random.default_rng(0)
    g_kwargs = {"resolution": RESOLUTION, "num_channels": 3, "label_size": 0, "fmap_base": 64, "fmap_max": 8,
                "latent_size": 16, "dlatent_size": 16, "mapping_layers": MAPPING_LAYERS}  # fmt: skip
    d_kwargs = {"resolution": RESOLUTION, "num_channels": 3, "label_size": 0, "fmap_base": 64, "fmap_max": 8,
                "mbstd_group_size": 4}  # fmt: skip
    dump((tf_generator(g_kwargs, rng), tf_discriminator(d_kwargs, rng), tf_generator(g_kwargs, rng)), path, 3)


# ~/data/<folder> in the doc -> a writer of that dataset in its official layout, with enough images per class
# for every step (both splits, all classes in each).
DATASETS: dict[str, Callable[[Path], Path]] = {
    "CelebAMask-HQ": lambda root: write_celebahq(root, images=16),
    "CUB_200_2011": lambda root: write_cub(root, classes=3, train=12, test=6),
    "stanford_cars": lambda root: write_cars(root, classes=3, train=12, test=6),
}
# The NVIDIA pickles the doc names -> a writer of a tiny one in the same format.
PICKLES: dict[str, Callable[[Path], None]] = {
    "celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl": _ada_pickle,
    "imagenet-stylegan2-256.pkl": _ada_pickle,
    "stylegan2-car-config-f.pkl": _tf_pickle,
}

# --- tiny sizes appended to each command -----------------------------------------------------------------

CPU = ["--device", "cpu", "--workers", "0"]
OVERRIDES: dict[str, list[str]] = {
    "pretrain-classifier": ["--arch", "resnet18", "--width", "4", "--stem", "small", "--weights", "none",
                            "--epochs", "1", "--batch-size", "4", "--resolution", str(RESOLUTION), "--quiet", *CPU],
    "import-gan": [],
    "finetune-gan": ["--kimg", "0.008", "--batch-size", "4", "--tick-kimg", "0.004", "--grid-size", "4",
                     "--resolution", str(RESOLUTION), "--quiet", *CPU],
    "train": ["--iterations", "2", "--concepts", "4", "--hidden", "4", "--real-batch", "2", "--synthetic-batch", "2",
              "--lpips", "none", "--quiet", *CPU],
    "evaluate": ["--samples", "8", "--consistency-samples", "4", "--concepts", "0,1", "--lpips", "none",
                 "--batch-size", "8", *CPU],
    "visualize": ["--samples", "2", "--batch-size", "8", *CPU],
    "report": ["--samples", "8", "--consistency-samples", "4", "--concepts", "0,1", "--top", "2",
               "--batch-size", "8", *CPU],
}  # fmt: skip
# finetune-gan from scratch: a tiny network (with --resume-from: the checkpoint's, with the doc's --map).
FRESH_GAN = ["--cbase", "128", "--cmax", "16", "--map", "1"]


def with_overrides(argv: list[str]) -> list[str]:
    command = argv[0]
    assert command in OVERRIDES, f"docs/recipes.md: `viscoin {command}` has no tiny-size overrides in {__file__}"
    extra = OVERRIDES[command]
    if command == "finetune-gan" and "--resume-from" not in argv:
        extra = extra + FRESH_GAN
    return argv + extra


def map_paths(argv: list[str], folder: Path) -> list[str]:
    """The doc's placeholders -> this test's files (written on first use); `runs/...` stays relative."""
    out = []
    for arg in argv:
        if arg.startswith("~/data/"):
            name = arg.removeprefix("~/data/").rstrip("/")
            assert name in DATASETS, f"docs/recipes.md: no fake dataset for {arg} in {__file__}"
            root = folder.parent / "data" / name
            if not root.exists():
                DATASETS[name](root)
            arg = str(root)
        elif arg.endswith(".pkl"):
            assert arg in PICKLES, f"docs/recipes.md: no fake NVIDIA pickle for {arg} in {__file__}"
            if not (folder / arg).exists():
                PICKLES[arg](folder / arg)
        else:
            assert not arg.startswith(("~", "/", "$")), f"docs/recipes.md: cannot map the path {arg}"
        out.append(arg)
    return out


def test_every_doc_command_maps(tmp_path):
    """The fast part: the doc has the three recipes, each command is known and each placeholder maps."""
    assert {"CelebA-HQ (young / old)", "CUB-200-2011", "Stanford Cars"} <= set(RECIPES)
    assert LPIPS_CHECKED_IN is not None
    for title, commands in RECIPES.items():
        folder = tmp_path / re.sub(r"\W+", "-", title)
        folder.mkdir()
        for argv in commands:
            with_overrides(map_paths(argv, folder))


def command_options(argv: list[str]) -> set[str]:
    """The option names `viscoin ARGV[0]` accepts, from the app itself (what its --help lists)."""
    from typer.main import get_command

    from viscoin_cli.cli import app, load_commands

    load_commands()
    command = get_command(app).commands[argv[0]]  # type: ignore[attr-defined]
    options = [param for param in command.params if param.param_type_name == "option"]
    return {name for param in options for name in (*param.opts, *param.secondary_opts)}


def test_every_doc_option_exists():
    """The fast check that the doc claims no option a command lacks (the slow test runs every command)."""
    for title, commands in RECIPES.items():
        for argv in commands:
            unknown = [arg for arg in argv if arg.startswith("-") and arg not in command_options(argv)]
            assert not unknown, f"docs/recipes.md, {title}: `viscoin {argv[0]}` has no option {unknown[0]}"


# --- running them ----------------------------------------------------------------------------------------


def viscoin(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(VISCOIN), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def option(argv: list[str], name: str) -> str | None:
    """The value of `name` as click reads it: the last one given."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]
    return values[-1] if values else None


def check_artefacts(argv: list[str], result: subprocess.CompletedProcess, cwd: Path) -> None:
    """The main files each command writes exist; options given twice took the last (appended) value."""
    command, out = argv[0], option(argv, "--out")
    if "--json" in argv:
        document = json.loads(result.stdout)
    if command in ("pretrain-classifier", "finetune-gan", "train", "report"):
        assert out is not None, f"docs/recipes.md: `viscoin {command}` should name its --out folder"
        out = cwd / out
    if command == "pretrain-classifier":
        assert (out / "best.safetensors").is_file() and (out / "latest.safetensors").is_file()
        recorded = json.loads((out / "options.json").read_text())
        assert recorded["epochs"] == 1 and recorded["resolution"] == RESOLUTION
    elif command == "import-gan":
        dest = cwd / argv[2]
        assert dest.is_file() and dest.with_suffix(".D.safetensors").is_file()
    elif command == "finetune-gan":
        assert (out / "latest.safetensors").is_file() and (out / "latest.D.safetensors").is_file()
        assert list(out.glob("fakes*.png"))
        recorded = json.loads((out / "options.json").read_text())
        assert recorded["kimg"] == 0.008 and recorded["resolution"] == RESOLUTION
        if option(argv, "--map") is not None:  # the fine-tuned G has the mapping asked for
            assert recorded["map"] == recorded["G_kwargs"]["mapping_kwargs"]["num_layers"] == int(option(argv, "--map"))
            assert result.stderr == ""  # --quiet: the copy report is a log line
        assert recorded["xflip_strength"] == float(option(argv, "--xflip-strength") or 1.0)
    elif command == "train":
        assert (out / "latest.safetensors").is_file()
        assert json.loads((out / "options.json").read_text())["num_concepts"] == 4
    elif command == "evaluate" and "--json" in argv:
        assert {"accuracy", "reconstruction", "faithfulness", "consistency"} <= set(document["metrics"])
    elif command == "visualize":
        target = cwd / (out or ("concept-pairs" if "--top-pairs" in argv else "."))
        pictures = sorted(target.glob("*.png")) if target.is_dir() else [target]
        assert pictures and all(p.stat().st_size > 0 for p in pictures)
    elif command == "report":
        assert (out / "index.html").is_file() and (out / "metrics.json").is_file()
        assert list((out / "images").glob("*.png"))


def check_lpips_needs_weights(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """`viscoin train` on real data defaults to LPIPS (AlexNet): without its weights, a one-line error.

    The doc's command then runs in the same --out: a run stopped at its start needs no --force.
    """
    without = list(argv)
    while "--lpips" in without:
        i = without.index("--lpips")
        del without[i : i + 2]
    result = viscoin(without, cwd, env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: LPIPS"), result.stderr
    assert "alexnet-owt-7be5be79.pth" in lines[0] and "--lpips none" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("title", list(RECIPES), ids=[re.sub(r"\W+", "-", t).strip("-") for t in RECIPES])
def test_recipe_runs(title, tmp_path):
    assert VISCOIN.is_file(), f"{VISCOIN}: the viscoin console script is not installed beside {sys.executable}"
    cwd = tmp_path / "recipe"
    cwd.mkdir()
    # An empty torch hub cache: nothing (ImageNet ResNet, AlexNet for LPIPS) comes from this machine's.
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home"), "OMP_NUM_THREADS": "1"}
    timings = []
    for doc_argv in RECIPES[title]:
        argv = with_overrides(map_paths(doc_argv, cwd))
        if argv[0] == "train" and title == LPIPS_CHECKED_IN:
            check_lpips_needs_weights(argv, cwd, env)
        start = time.perf_counter()
        result = viscoin(argv, cwd, env)
        timings.append(f"{argv[0]} {time.perf_counter() - start:.1f}s")
        assert result.returncode == 0, f"viscoin {shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
        check_artefacts(argv, result, cwd)
    print(f"{title}: " + ", ".join(timings))
