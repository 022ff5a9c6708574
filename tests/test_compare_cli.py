"""`viscoin compare` on the tiny VisCoIN and a tiny FLINT and FLAEM trained against the same tiny f: one table
with every row and a value per model, numbers paired with `viscoin evaluate`'s, refusals of models that are
not comparable, and the comparison section `viscoin report --compare` adds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, save_tiny_classifier
from typer.testing import CliRunner

from viscoin_cli.cli import app
from viscoin_cli.io.checkpoint import load_checkpoint, parent_record, read_meta, save_checkpoint

SMALL = ["--samples", "8", "--consistency-samples", "3", "--concepts", "0-1", "--seed", "3", "--device", "cpu"]
KEYS = [
    "accuracy.f", "accuracy.g", "reconstruction.mse", "reconstruction.lpips", "reconstruction.fid",
    "faithfulness.0.1.median", "faithfulness.0.2.median", "faithfulness.0.4.median",
    "consistency.2.mean", "consistency.4.mean", "visualization_fid",
]  # fmt: skip


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory) -> list[Path]:
    """The tiny VisCoIN, then a FLINT and a FLAEM trained for 4 iterations against its f."""
    f = tiny_model.parent.parent / "f.safetensors"
    folder = tmp_path_factory.mktemp("compare")
    paths = [tiny_model]
    for method in ("flint", "flaem"):
        result = run_cli(
            "train", "--method", method, "--classifier", f, "--dataset", "digits", "--resolution", "16",
            "--concepts", "4", "--iterations", "4", "--real-batch", "4", "--out", folder / method,
            "--device", "cpu", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        paths.append(Path(json.loads(result.stdout)["model"]))
    return paths


@pytest.fixture(scope="module")
def compared(models, tmp_path_factory) -> tuple[dict, Path]:
    """`compare --json --csv` of the three models, once."""
    table = tmp_path_factory.mktemp("table") / "table.csv"
    result = run_cli("compare", *models, *SMALL, "--lpips", "none", "--json", "--csv", table)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), table


def _values(document: dict, column: int) -> dict[str, float | None]:
    values = {row["key"]: row["values"][column] for row in document["rows"]}
    for row in document["rows"]:
        for name in ("random", "std"):
            if name in row:
                values[f"{row['key']}.{name}"] = row[name][column]
    return values


def test_json_has_every_row_and_a_value_per_model(compared, models):
    document, _ = compared
    assert [(m["path"], m["method"]) for m in document["models"]] == [
        (str(models[0]), "viscoin"),
        (str(models[1]), "flint"),
        (str(models[2]), "flaem"),
    ]
    assert [m["num_concepts"] for m in document["models"]] == [8, 4, 4]
    assert all(m["sources"] == ["computed"] and len(m["sha256"]) == 16 for m in document["models"])
    assert [row["key"] for row in document["rows"]] == KEYS
    for row in document["rows"]:
        assert len(row["values"]) == 3
        absent = row["key"] in ("reconstruction.lpips", "visualization_fid")  # --lpips none; not asked for
        assert all((value is None) == absent for value in row["values"]), row
    rows = {row["key"]: row for row in document["rows"]}
    assert len(set(rows["accuracy.f"]["values"])) == 1  # one f, one test split
    assert len(rows["faithfulness.0.2.median"]["random"]) == 3 and len(rows["consistency.4.mean"]["std"]) == 3
    settings = document["settings"]
    assert settings["seed"] == 3 and settings["samples"] == 8 and settings["consistency_samples"] == 3
    assert settings["concepts"] == [0, 1] and settings["consistency_lambdas"] == [2.0, 4.0]


def test_numbers_are_those_of_evaluate_with_the_same_seed(compared, models, tmp_path):
    document, _ = compared
    result = run_cli("evaluate", "all", "--model", models[0], *SMALL, "--lpips", "none", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    values = _values(document, 0)
    assert values["accuracy.g"] == metrics["accuracy"]["g"] and values["accuracy.f"] == metrics["accuracy"]["f"]
    assert values["reconstruction.mse"] == metrics["reconstruction"]["mse"]
    assert values["reconstruction.fid"] == metrics["reconstruction"]["fid"]
    for tau in ("0.1", "0.2", "0.4"):
        assert values[f"faithfulness.{tau}.median"] == metrics["faithfulness"][tau]["median"]
        assert values[f"faithfulness.{tau}.median.random"] == metrics["faithfulness"][tau]["random_median"]
    assert metrics["consistency"]["lambda"] == 2.0
    assert values["consistency.2.mean"] == metrics["consistency"]["mean"]
    assert values["consistency.2.mean.std"] == metrics["consistency"]["std"]

    # that document stands in for the model's computation: read, matched by sha256, not recomputed; a
    # visualisation FID it holds fills its row (the other models' cells stay empty)
    evaluated = json.loads(result.stdout)
    evaluated["metrics"]["visualization_fid"] = {"fid": 12.5, "method": "render"}
    (tmp_path / "viscoin.json").write_text(json.dumps(evaluated))
    given = ["--metrics-json", tmp_path / "viscoin.json"]
    read = run_cli("compare", *models[:2], *SMALL, "--metrics", "accuracy", *given, "--json")
    assert read.exit_code == 0, read.output
    read = json.loads(read.stdout)
    assert read["models"][0]["sources"] == [f"--metrics-json {tmp_path / 'viscoin.json'}"]
    assert _values(read, 0) == {
        **values,
        "consistency.4.mean": None,
        "consistency.4.mean.std": None,
        "visualization_fid": 12.5,
    }
    assert read["models"][1]["sources"] == ["computed"] and _values(read, 1)["accuracy.g"] is not None
    assert _values(read, 1)["visualization_fid"] is None

    line = assert_one_line_error(run_cli("compare", *models[:2], *given, "--seed", "4"))
    assert "viscoin.json: computed with --seed 3, this comparison with 4: the numbers would not be paired" in line
    line = assert_one_line_error(run_cli("compare", *models[1:], *given))
    assert "viscoin.json: computed for none of the models" in line


def test_csv_has_a_column_per_model(compared):
    document, table = compared
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["key", "label", "viscoin run/latest.safetensors", "flint flint/latest.safetensors",
                       "flaem flaem/latest.safetensors"]  # fmt: skip
    by_key = {row[0]: row[2:] for row in rows[1:]}
    assert set(KEYS) <= set(by_key) and "faithfulness.0.2.random_median" in by_key and "consistency.4.std" in by_key
    assert len(rows) == 1 + len(KEYS) + 3 + 2  # + the random baselines and the stds
    assert all(len(row) == 5 for row in rows)
    assert [float(v) for v in by_key["accuracy.g"]] == document["rows"][1]["values"]
    assert by_key["visualization_fid"] == ["", "", ""]


def test_the_table_prints(models):
    args = ["compare", *map(str, models), "--metrics", "accuracy", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    for label in ("accuracy of f", "accuracy of the model ↑", "FID ↓", "faithfulness τ=0.2 ↑", "consistency λ=4 ↑"):
        assert label in text
    assert "visualisation FID ↓" in text and "—" in text
    assert all(method in text for method in ("viscoin", "flint", "flaem")) and "digits 16 px" in text


def _resaved(model: Path, out: Path, **changes) -> Path:
    """A copy of `model` whose header records another parent or other dataset facts."""
    tensors, meta = load_checkpoint(model)
    fields = {"config": meta.config, "dataset": meta.dataset, "parents": meta.parents, **changes}
    return save_checkpoint(out, tensors, kind=meta.kind, step=meta.step, **fields)


def test_models_on_another_f_or_split_are_refused(models, tmp_path):
    other_f = save_tiny_classifier(tmp_path / "f.safetensors", seed=1)
    moved = _resaved(models[1], tmp_path / "a" / "flint.safetensors", parents={"classifier": parent_record(other_f)})
    line = assert_one_line_error(run_cli("compare", models[0], moved))
    assert line.startswith(f"error: {models[0]} and {moved} explain different classifiers f (sha256 ")
    facts = {**read_meta(models[2]).dataset, "resolution": 32}
    bigger = _resaved(models[2], tmp_path / "b" / "flaem.safetensors", dataset=facts)
    line = assert_one_line_error(run_cli("compare", models[0], models[1], bigger))
    assert (
        line == f"error: {models[0]} and {bigger} were trained on different test splits (resolution differs: 16 vs 32)"
    )
    assert "at least two models" in assert_one_line_error(run_cli("compare", models[0]))
    assert "given twice" in assert_one_line_error(run_cli("compare", models[0], models[0]))


def test_report_adds_the_comparison_table(compared, models, tmp_path):
    out = tmp_path / "site"
    result = run_cli(
        "report", "--model", models[0], "--out", out, "--compare", models[1], "--compare", models[2],
        "--metrics", "accuracy,faithfulness", *SMALL, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["comparison_json"] == str(out / "comparison.json") and summary["cards"] == 2
    page = (out / "index.html").read_text()
    assert "<h2>Comparison</h2>" in page and "<table id='comparison'>" in page
    for key in KEYS:
        assert f"data-key='{key}'" in page
    assert "(this report)" in page and "flint/latest.safetensors" in page and "flaem/latest.safetensors" in page
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["settings"]["metrics"] == ["accuracy", "faithfulness"]
    expected, _ = compared  # the same seed and samples: the numbers of `viscoin compare`
    for column in range(3):
        got, want = _values(comparison, column), _values(expected, column)
        for key in ("accuracy.g", "faithfulness.0.2.median", "faithfulness.0.4.median.random"):
            assert got[key] == want[key]
        assert got["reconstruction.mse"] is None and got["consistency.2.mean"] is None
    assert f"{expected['rows'][1]['values'][1]:.4f}" in page

    line = assert_one_line_error(run_cli("report", "--model", models[0], "--out", out, "--compare", models[1],
                                         "--metrics", "none"))  # fmt: skip
    assert "--compare needs metrics" in line


def test_without_models_it_compares_the_shipped_digits_models():
    result = run_cli("compare", "--metrics", "accuracy", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [model["method"] for model in document["models"]] == ["viscoin", "flint", "flaem"]
    accuracy = next(row for row in document["rows"] if row["key"] == "accuracy.g")["values"]
    assert all(value > 0.99 for value in accuracy)  # the shipped models: 99.7%, 100%, 99.7% on the test split


def test_stability_matches_the_concepts_of_each_pair(models, tmp_path):
    result = run_cli("compare", *models, "--metrics", "accuracy", "--stability", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    stability = json.loads(result.stdout)["stability"]
    assert stability["threshold"] == 0.5
    assert [(p["a"], p["b"], p["matched"]) for p in stability["pairs"]] == [(0, 1, 4), (0, 2, 4), (1, 2, 4)]
    for pair in stability["pairs"]:  # K = 8 vs 4 vs 4: min(K) matches, each concept at most once
        assert -1 <= pair["mean_matched_correlation"] <= 1 and 0 <= pair["matched_above_0.5"] <= 1
        assert len({i for i, _, _ in pair["matches"]}) == len({j for _, j, _ in pair["matches"]}) == 4
    # a model beside a copy of itself (another file, the same weights): every concept matched to itself
    copy = _resaved(models[1], tmp_path / "copy" / "flint.safetensors")
    same = run_cli("compare", models[1], copy, "--metrics", "accuracy", "--stability", "--device", "cpu", "--json")
    assert same.exit_code == 0, same.output
    (pair,) = json.loads(same.stdout)["stability"]["pairs"]
    live = [(i, j) for i, j, r in pair["matches"] if r != 0]  # a dead concept correlates with nothing
    assert all(i == j for i, j in live) and live
    assert all(r == pytest.approx(1.0, abs=1e-6) for _, _, r in pair["matches"] if r != 0)

    args = ["compare", *map(str, models[:2]), "--metrics", "accuracy", "--stability", "--device", "cpu", "--quiet"]
    printed = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert printed.exit_code == 0, printed.output
    assert "concept stability" in printed.stdout and "mean matched r" in printed.stdout
    without = run_cli("compare", *models[:2], "--metrics", "accuracy", "--device", "cpu", "--json")
    assert "stability" not in json.loads(without.stdout)
