"""The paper's baselines through the real CLI: `train --method flint|flaem` on tiny settings, then every
interpretation command on the trained model (each renders through the model's own decoder)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, save_tiny_classifier

from viscoin_cli.io.checkpoint import read_meta
from viscoin_cli.nets.concept_model import load_concept_model

METHODS = ("flint", "flaem")
SMALL = ["--samples", "8", "--consistency-samples", "3", "--concepts", "0-1", "--lpips", "none", "--device", "cpu"]


def _train(method: str, f: Path, out: Path, *extra: str):
    return run_cli(
        "train", "--method", method, "--classifier", f, "--dataset", "digits", "--resolution", "16",
        "--concepts", "4", "--iterations", "4", "--real-batch", "4", "--log-every", "2", "--out", out,
        "--device", "cpu", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny FLINT and FLAEM trained for 4 iterations against the same random tiny f."""
    folder = tmp_path_factory.mktemp("baselines")
    f = save_tiny_classifier(folder / "f.safetensors")
    models = {}
    for method in METHODS:
        result = _train(method, f, folder / method, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["method"] == method and summary["iterations"] == 4
        models[method] = Path(summary["model"])
    return models


@pytest.mark.parametrize("method", METHODS)
def test_the_checkpoint_and_options_record_the_method(trained, method):
    meta = read_meta(trained[method])
    assert meta.kind == method and meta.config["num_concepts"] == 4 and meta.step == 4
    assert set(meta.parents) == {"classifier"}  # no generator: the baselines render with their own decoder
    options = json.loads((trained[method].parent / "options.json").read_text())
    assert options["method"] == method
    model, _ = load_concept_model(trained[method])
    assert model.method == method and model.num_concepts == 4


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_all_gives_every_metric(trained, method):
    result = run_cli("evaluate", "all", "--model", trained[method], *SMALL, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert 0.0 <= metrics["accuracy"]["g"] <= 1.0
    assert math.isfinite(metrics["reconstruction"]["mse"]) and math.isfinite(metrics["reconstruction"]["fid"])
    for tau in ("0.1", "0.2", "0.4"):
        assert {"median", "random_median"} <= set(metrics["faithfulness"][tau])
    assert 0.0 <= metrics["consistency"]["mean"] <= 1.0 and metrics["consistency"]["concepts"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_relevance_visualize_and_report_accept_the_baseline(trained, method, tmp_path):
    model = trained[method]
    relevance = run_cli("relevance", "--model", model, "--index", "0", "--json", "--device", "cpu")
    assert relevance.exit_code == 0, relevance.output
    assert len(json.loads(relevance.stdout)["local"][0]["concepts"]) == 4
    picture = tmp_path / "c1.png"
    shown = run_cli("visualize", "--model", model, "--concept", "1", "--lambdas", "0,2", "--out", picture)
    assert shown.exit_code == 0, shown.output
    assert picture.stat().st_size > 0
    report = run_cli("report", "--model", model, *SMALL[:4], "--out", tmp_path / "report", "--device", "cpu")
    assert report.exit_code == 0, report.output
    assert f"<h1>{method.upper()} report: " in (tmp_path / "report" / "index.html").read_text()


def test_a_baseline_resumes(trained):
    run = trained["flint"].parent
    result = run_cli("train", "--resume", run, "--iterations", "6", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert read_meta(trained["flint"]).step == 6 and read_meta(trained["flint"]).kind == "flint"


def test_options_of_another_method_are_refused(tmp_path):
    f = save_tiny_classifier(tmp_path / "f.safetensors")
    line = assert_one_line_error(_train("flaem", f, tmp_path / "a", "--generator", str(f)))
    assert line == "error: --generator does not apply to --method flaem"
    line = assert_one_line_error(_train("flint", f, tmp_path / "b", "--support-ws", "0,-1"))
    assert "--support-ws does not apply to --method flint" in line


def test_resume_keeps_the_method_of_the_run(trained):
    line = assert_one_line_error(run_cli("train", "--resume", trained["flaem"].parent, "--method", "flint"))
    assert "--method cannot change when resuming (the run used flaem)" in line


def test_a_baseline_refuses_a_generator_at_load(trained):
    line = assert_one_line_error(run_cli("evaluate", "accuracy", "--model", trained["flaem"], "--generator", "G"))
    assert "renders with its own decoder: --generator does not apply" in line
