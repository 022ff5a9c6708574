"""The shipped digits checkpoints: they load, they are what the defaults point at, and the metrics recorded
in checkpoints/digits/metrics.json are what a re-evaluation gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli
from rich.console import Console

from viscoin_cli import pipeline as pl
from viscoin_cli.io.checkpoint import read_meta, sha256_file
from viscoin_cli.metrics.evaluation import portable_path
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.concept_model import load_concept_model
from viscoin_cli.nets.stylegan2 import load_generator
from viscoin_cli.nets.viscoin import load_viscoin
from viscoin_cli.shipped import DEFAULT_CLASSIFIER, DEFAULT_GENERATOR, DEFAULT_MODEL, DIGITS_DIR, SHIPPED_BASELINES

RECORDED = json.loads((DIGITS_DIR / "metrics.json").read_text())


def test_the_three_checkpoints_load_and_belong_together():
    _f, f_meta = load_classifier(DEFAULT_CLASSIFIER)
    G, g_meta = load_generator(DEFAULT_GENERATOR)
    model, meta = load_viscoin(DEFAULT_MODEL)  # verifies the sha256 of f and G
    assert meta.parents["classifier"]["sha256"] == sha256_file(DEFAULT_CLASSIFIER)
    assert meta.parents["generator"]["sha256"] == sha256_file(DEFAULT_GENERATOR)
    assert f_meta.dataset["name"] == g_meta.dataset["name"] == meta.dataset["name"] == "digits"
    assert G.img_resolution == f_meta.dataset["resolution"] == meta.dataset["resolution"]
    assert model.num_concepts == meta.config["num_concepts"]


@pytest.mark.parametrize("baseline", SHIPPED_BASELINES, ids=lambda path: path.stem)
def test_the_shipped_baselines_explain_the_shipped_classifier(baseline):
    model, meta = load_concept_model(baseline)  # verifies f's sha256
    assert meta.kind == baseline.stem and model.method == baseline.stem
    assert meta.parents["classifier"]["sha256"] == sha256_file(DEFAULT_CLASSIFIER)
    assert set(meta.parents) == {"classifier"}  # they render with their own decoders
    assert model.num_concepts == read_meta(DEFAULT_MODEL).config["num_concepts"]  # compared at the same K
    assert meta.dataset == read_meta(DEFAULT_MODEL).dataset


def test_they_are_small():
    total = sum(path.stat().st_size for path in DIGITS_DIR.iterdir() if path.is_file())
    assert total < 20 * 10**6  # every shipped file together, the bar of the repository


def test_recorded_paths_are_relative_to_nothing_but_the_folder():
    # the model records absolute paths of the machine that trained it; loading finds f and G beside it
    meta = read_meta(DEFAULT_MODEL, kind="viscoin")
    for role in ("classifier", "generator"):
        assert (DIGITS_DIR / meta.parents[role]["path"].rsplit("/", 1)[-1]).is_file()


# a path of the machine that wrote it: absolute (POSIX or a drive letter), or a temp/work/home folder
MACHINE_PATH = re.compile(r"^/|^~[^/]|/tmp/|/work/|/home/|/root/|/Users/|(?<![A-Za-z])[A-Za-z]:[\\/]")


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_recorded_metrics_hold_no_path_of_the_machine_that_made_them():
    assert [text for text in _strings(RECORDED) if MACHINE_PATH.search(text)] == []
    assert not Path(RECORDED["model"]["path"]).is_absolute()
    assert RECORDED["model"]["sha256"] == sha256_file(DEFAULT_MODEL)[:16]  # which checkpoint: the shipped one


def test_the_pipeline_writes_metrics_json_without_paths_of_this_machine(tmp_path):
    out = tmp_path / "run"
    printed = {  # what `viscoin evaluate all --json` prints, the paths as given
        "model": {"path": str(out / "viscoin" / "latest.safetensors"), "sha256": "ab12", "concepts": 4},
        "settings": {"lpips_weights": str(tmp_path / "w" / "alex.pth"), "inception_weights": None, "lambda": 2.0},
        "metrics": {"reconstruction": {"mse": 0.25, "lpips_note": f"skipped: not in {Path.home() / '.cache'} (x)"}},
    }
    stage = pl.Stage("evaluate", out / "metrics.json", ["evaluate", "all", "--json"], capture=out / "metrics.json")
    pl.run(out, [stage], [], lambda _args: (0, json.dumps(printed, indent=2) + "\n"), Console(quiet=True))
    written = json.loads((out / "metrics.json").read_text())
    assert written["model"] == {"path": "viscoin/latest.safetensors", "sha256": "ab12", "concepts": 4}
    assert written["settings"] == {"lpips_weights": "alex.pth", "inception_weights": None, "lambda": 2.0}
    assert written["metrics"]["reconstruction"] == {"mse": 0.25, "lpips_note": "skipped: not in ~/.cache (x)"}
    assert [text for text in _strings(written) if MACHINE_PATH.search(text)] == []


def test_portable_paths_are_relative_to_the_metrics_folder_or_a_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path as given, relative to the cwd
    assert portable_path("runs/pipe/viscoin/latest.safetensors", Path("runs/pipe")) == "viscoin/latest.safetensors"
    assert portable_path(tmp_path / "runs/pipe/a.safetensors", tmp_path / "runs/pipe") == "a.safetensors"
    assert portable_path("/elsewhere/models/b.safetensors", Path("runs/pipe")) == "b.safetensors"


def _evaluate(*args: str) -> dict:
    result = run_cli("evaluate", *args, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["metrics"]


@pytest.mark.slow
def test_recorded_accuracy_and_faithfulness_match_a_re_evaluation():
    settings = RECORDED["settings"]
    metrics = _evaluate("accuracy,faithfulness", "--samples", str(settings["samples"]), "--seed", str(settings["seed"]))
    for key in ("g", "f", "agreement"):
        assert metrics["accuracy"][key] == pytest.approx(RECORDED["metrics"]["accuracy"][key], abs=1e-9)
    for tau in map(str, settings["thresholds"]):
        values = RECORDED["metrics"]["faithfulness"][tau]
        assert metrics["faithfulness"][tau]["median"] == pytest.approx(values["median"], abs=1e-4)
        assert metrics["faithfulness"][tau]["random_median"] == pytest.approx(values["random_median"], abs=1e-4)


@pytest.mark.slow
def test_recorded_consistency_matches_a_re_evaluation_of_two_concepts():
    settings = RECORDED["settings"]
    per_concept = _evaluate(
        "consistency", "--concepts", "0,1", "--seed", str(settings["seed"]),
        "--consistency-samples", str(settings["consistency_samples"]),
    )["consistency"]["per_concept"]  # fmt: skip
    recorded = RECORDED["metrics"]["consistency"]["per_concept"]
    for concept in ("0", "1"):
        assert per_concept[concept] == pytest.approx(recorded[concept], abs=0.02)


def test_quality_bars_of_the_shipped_model():
    metrics = RECORDED["metrics"]
    assert metrics["accuracy"]["f"] >= 0.97
    assert metrics["accuracy"]["g"] >= metrics["accuracy"]["f"] - 0.02
    faithfulness = metrics["faithfulness"]["0.2"]
    assert faithfulness["median"] >= 5 * max(faithfulness["random_median"], 1e-3)
    assert metrics["consistency"]["mean"] >= 0.8


def test_generate_defaults_to_the_shipped_generator(tmp_path):
    result = run_cli("generate", "--seeds", "0-3", "--out", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").is_file()


def test_train_on_digits_defaults_to_the_shipped_f_and_g(tmp_path):
    result = run_cli("train", "--iterations", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    meta = read_meta(tmp_path / "run" / "latest.safetensors", kind="viscoin")
    assert meta.parents["classifier"]["sha256"] == sha256_file(DEFAULT_CLASSIFIER)
    assert meta.parents["generator"]["sha256"] == sha256_file(DEFAULT_GENERATOR)


def test_train_on_other_data_needs_f_and_g(tmp_path):
    result = run_cli("train", "--dataset", "cub", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "--classifier and --generator are required" in result.stderr
