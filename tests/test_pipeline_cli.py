"""`viscoin pipeline` end to end on tiny settings: every stage's artefact, skipping, resuming, refusing."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator

from viscoin_cli.io.checkpoint import read_meta

READING = ["--pairs", "2", "--faithfulness-samples", "12", "--consistency-samples", "4", "--device", "cpu"]


def _tiny(tiny_model, out, iterations="2"):
    folder = tiny_model.parent.parent
    return [
        "pipeline", "--dataset", "digits", "--classifier", folder / "f.safetensors", "--generator",
        folder / "G.safetensors", "--iterations", iterations, "--concepts", "4", *READING, "--out", out,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    result = run_cli(*_tiny(tiny_model, out), "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_every_stage_leaves_its_artefact(finished):
    out, summary = finished
    assert list(summary["stages"]) == ["classifier", "gan", "viscoin", "relevance", "visualize", "evaluate", "report"]
    assert summary["stages"]["classifier"]["status"] == "given"
    assert all(summary["stages"][name]["status"] == "done" for name in list(summary["stages"])[2:])
    assert read_meta(out / "viscoin" / "latest.safetensors", kind="viscoin").step == 2
    assert read_meta(out / "viscoin" / "latest.safetensors").config["num_concepts"] == 4
    assert json.loads((out / "relevance.json").read_text())["global"]
    assert (out / "relevance.csv").read_text().startswith("kind,")
    assert len(list((out / "concepts").glob("*.png"))) == 2
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"accuracy", "reconstruction", "faithfulness", "consistency"} <= set(metrics)
    assert summary["metrics"]["metrics"] == metrics
    assert "<html" in (out / "report" / "index.html").read_text().lower()


def test_each_stage_records_the_command_that_made_it(finished):
    out, _ = finished
    record = json.loads((out / "pipeline.json").read_text())
    train = record["stages"]["viscoin"]["command"]
    assert train[:2] == ["viscoin", "train"] and "--iterations" in train
    assert record["stages"]["evaluate"]["command"][1:3] == ["evaluate", "all"]


def test_a_second_run_skips_finished_stages_and_redoes_a_missing_one(finished, tiny_model):
    out, _ = finished
    (out / "report" / "index.html").unlink()
    result = run_cli(*_tiny(tiny_model, out), "--json")
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    assert stages["viscoin"]["status"] == "done (earlier run)"
    assert stages["evaluate"]["status"] == "done (earlier run)"
    assert stages["report"]["status"] == "done"
    assert (out / "report" / "index.html").is_file()


def test_stages_show_their_own_progress_and_the_run_ends_with_the_headline(finished, tiny_model):
    out, _ = finished
    (out / "report" / "index.html").unlink()
    result = run_cli(*_tiny(tiny_model, out))
    assert result.exit_code == 0, result.output
    assert "[3/7] viscoin: done in an earlier run" in result.stderr
    report = next(line for line in result.stderr.splitlines() if line.startswith("[7/7] report: viscoin report"))
    assert "--quiet" not in report  # the stage is not muted: its own progress shows
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    accuracy = metrics["accuracy"]
    assert f"accuracy: f {100 * accuracy['f']:.1f}%, g {100 * accuracy['g']:.1f}%" in result.stdout
    drop = metrics["faithfulness"]["0.2"]
    assert f"median drop {drop['median']:.3f}, random concepts {drop['random_median']:.3f}" in result.stdout
    assert f"consistency (λ = 2.0): {metrics['consistency']['mean']:.3f} ±" in result.stdout


def test_other_settings_into_the_same_folder_are_refused(finished, tiny_model):
    out, _ = finished
    line = assert_one_line_error(run_cli(*_tiny(tiny_model, out, iterations="3")))
    assert "other settings" in line


def test_an_interrupted_training_stage_resumes(tiny_model, tmp_path):
    folder = tiny_model.parent.parent
    out = tmp_path / "run"
    partial = run_cli(
        "train", "--classifier", folder / "f.safetensors", "--generator", folder / "G.safetensors",
        "--dataset", "digits", "--concepts", "4", "--iterations", "1", "--log-every", "1", "--seed", "0",
        "--device", "cpu", "--quiet", "--out", out / "viscoin",
    )  # fmt: skip
    assert partial.exit_code == 0, partial.output
    result = run_cli(*_tiny(tiny_model, out), "--json")
    assert result.exit_code == 0, result.output
    command = json.loads((out / "pipeline.json").read_text())["stages"]["viscoin"]["command"]
    assert "--resume" in command
    assert read_meta(out / "viscoin" / "latest.safetensors").step == 2


def test_a_failing_stage_stops_with_its_own_error(tiny_model, tmp_path):
    folder = tiny_model.parent.parent
    result = run_cli(
        "pipeline", "--classifier", folder / "f.safetensors", "--generator", folder / "missing.safetensors",
        "--device", "cpu", "--out", tmp_path / "run",
    )  # fmt: skip
    line = assert_one_line_error(result)
    assert "missing.safetensors" in line


@pytest.mark.slow
def test_shapes_runs_end_to_end_like_digits(tmp_path):
    """--dataset shapes through every stage (tiny f and G for its 8 classes, 2 iterations)."""
    from viscoin_cli.data.shapes import CLASS_NAMES

    facts = {"name": "shapes", "class_names": list(CLASS_NAMES), "num_classes": len(CLASS_NAMES), "channels": 3}
    f = save_tiny_classifier(tmp_path / "f.safetensors", dataset=facts)
    G = save_tiny_generator(tmp_path / "G.safetensors", dataset=facts)
    out = tmp_path / "run"
    result = run_cli(
        "pipeline", "--dataset", "shapes", "--classifier", f, "--generator", G, "--iterations", "2",
        "--concepts", "4", *READING, "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert all(summary["stages"][name]["status"] == "done" for name in list(summary["stages"])[2:])
    model = read_meta(out / "viscoin" / "latest.safetensors", kind="viscoin")
    assert model.dataset["name"] == "shapes" and model.dataset["class_names"] == list(CLASS_NAMES)
    assert "<html" in (out / "report" / "index.html").read_text().lower()
