"""Directions beside concept models: the pairing table of `compare --directions` and `report --directions`."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli

from viscoin_cli.interpret.direction_table import (
    columns,
    direction_cells,
    direction_rows,
    direction_summary,
    directions_html,
    truth_cells,
)

FAST = ("--samples", 600, "--test-images", 40, "--top-images", 2, "--device", "cpu", "--batch-size", 128)


def classifier_entry() -> dict:
    pairs = [{"direction": 0, "concept": 3, "correlation": 0.9}, {"direction": 1, "concept": 1, "correlation": -0.2}]
    skipped = {"model": "other.safetensors", "skipped": "another f"}
    found = {"model": "m", "pairs": pairs, "mean_best_correlation": 0.35, "distinct_concepts": 2}
    return {"path": "d.safetensors", "method": "classifier", "pairings": [found, skipped]}


def test_cells_are_the_concept_each_direction_finds_in_each_model():
    assert direction_cells(classifier_entry()) == [[(3, 0.9), None], [(1, -0.2), None]]
    assert direction_rows(classifier_entry()) == [["d0", "3 (+0.90)", ""], ["d1", "1 (-0.20)", ""]]


def test_gan_directions_are_read_by_direction():
    by_direction = [{"direction": 1, "concept": 4, "score": -1.5}, {"direction": 0, "concept": 2, "score": 2.0}]
    entry = {"path": "g", "method": "gan", "pairings": [{"model": "m", "pairs": [], "by_direction": by_direction}]}
    assert direction_cells(entry) == [[(2, 2.0)], [(4, -1.5)]]


def test_the_html_links_concepts_and_escapes_names():
    page = directions_html([classifier_entry()], ["<m>", "other"], link=lambda c: f"<a href='#concept-{c}'>{c}</a>")
    assert "<a href='#concept-3'>3</a> (+0.90)" in page and "&lt;m&gt;" in page and "<m>" not in page
    assert "mean best correlation 0.350" in page and "skipped (another f)" in page


def test_the_ground_truth_is_a_last_column_and_a_summary_line():
    entry = classifier_entry()
    entry["ground_truth"] = {
        "method": "classifier", "mean_auc": 0.75, "captured": 1, "targets": 16, "threshold": 0.9,
        "by_direction": [{"direction": 0, "attribute": "shape", "value": "circle", "auc": 0.98},
                         {"direction": 1, "attribute": None, "value": None, "auc": None}],
    }  # fmt: skip
    assert direction_rows(entry) == [["d0", "3 (+0.90)", "", "shape=circle (AUC 0.98)"], ["d1", "1 (-0.20)", "", ""]]
    assert columns(entry, ["m", "other"]) == ["direction", "m", "other", "ground truth"]
    assert "mean best AUC 0.750; 1 of 16 attribute values captured" in direction_summary(entry)[-1]
    page = directions_html([entry], ["m", "other"])
    assert "<th>ground truth</th>" in page and "<td>shape=circle (AUC 0.98)</td>" in page
    gan = {"path": "g", "method": "gan", "pairings": []}
    gan["ground_truth"] = {
        "method": "gan", "shift": 6.0, "samples": 100, "flip_rate": 0.4, "controlled": 3, "targets": 16,
        "control_threshold": 0.5,
        "by_direction": [{"direction": 0, "sign": -1, "attribute": "colour", "value": "red", "flip_rate": 0.62}],
    }  # fmt: skip
    assert truth_cells(gan) == ["colour=red (-ε, flip 0.62)"]
    assert "3 of 16 attribute values drawn in ≥ 50%" in direction_summary(gan)[-1]
    skipped = {**classifier_entry(), "ground_truth": {"skipped": "no labels"}}
    assert columns(skipped, ["m"]) == ["direction", "m"] and direction_summary(skipped)[-1].endswith("(no labels)")
    assert columns(classifier_entry(), ["m"]) == ["direction", "m"]  # not asked for: no column, no line


@pytest.fixture(scope="module")
def models_and_directions(tiny_model, tmp_path_factory):
    """A second tiny model on tiny_model's f and G, and classifier directions on that f."""
    folder = tmp_path_factory.mktemp("pairing")
    f_path, g_path = tiny_model.parent.parent / "f.safetensors", tiny_model.parent.parent / "G.safetensors"
    result = run_cli(
        "train", "--classifier", f_path, "--generator", g_path, "--dataset", "digits", "--concepts", 4,
        "--hidden", 8, "--real-batch", 4, "--synthetic-batch", 4, "--iterations", 2, "--device", "cpu",
        "--seed", 1, "--quiet", "--out", folder / "second",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run_cli("directions", "classifier", "--classifier", f_path, "--directions", 3, *FAST,
                     "--out", folder / "dirs")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run_cli("directions", "gan", "--generator", g_path, "--directions", 3, "--iterations", 2,
                     "--batch-size", 4, "--eval-samples", 8, "--device", "cpu", "--out", folder / "gan")  # fmt: skip
    assert result.exit_code == 0, result.output
    models = [tiny_model, folder / "second" / "latest.safetensors"]
    return models, folder / "dirs" / "directions.safetensors", folder / "gan" / "latest.safetensors"


def test_compare_pairs_the_directions_with_every_model(models_and_directions):
    models, directions, gan = models_and_directions
    args = ["compare", *models, "--metrics", "accuracy", "--directions", directions, "--directions", gan]
    result = run_cli(*args, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    found, moved = json.loads(result.stdout)["directions"]
    assert found["method"] == "classifier" and len(found["pairings"]) == 2
    for pairing, concepts in zip(found["pairings"], (8, 4), strict=True):
        assert pairing["pairs"] and all(0 <= row["concept"] < concepts for row in pairing["pairs"])
    assert moved["method"] == "gan" and len(moved["pairings"]) == 2
    for pairing, concepts in zip(moved["pairings"], (8, 4), strict=True):  # on the same G: an effect matrix each
        assert len(pairing["effect"]) == 3 and len(pairing["effect"][0]) == concepts
        assert [row["direction"] for row in pairing["by_direction"]] == [0, 1, 2]
    shown = run_cli(*args, "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    assert "classifier direction pairs" in shown.stdout and "mean best correlation" in shown.stdout
    assert "generator W-space directions" in shown.stdout


def test_report_adds_the_table_for_its_model(models_and_directions, tmp_path):
    models, directions, _ = models_and_directions
    out = tmp_path / "report"
    result = run_cli("report", "--model", models[0], "--concepts", "0-1", "--metrics", "none", "--top", 2,
                     "--directions", directions, "--device", "cpu", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["directions_json"] == str(out / "directions.json")
    page = (out / "index.html").read_text()
    assert '<section id="directions">' in page and "classifier direction pairs" in page
    [entry] = json.loads((out / "directions.json").read_text())
    assert len(entry["pairings"]) == 1 and entry["pairings"][0]["pairs"]


def test_a_file_of_another_kind_is_refused_before_any_work(models_and_directions):
    models, _, _ = models_and_directions
    f_path = models[0].parent.parent / "f.safetensors"
    result = run_cli("compare", *models, "--metrics", "accuracy", "--directions", f_path)
    assert "directions" in assert_one_line_error(result)
