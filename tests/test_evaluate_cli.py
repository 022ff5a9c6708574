"""`viscoin evaluate` end to end on the tiny digits model: the JSON document, its agreement with the metric
functions, determinism, and the CI gates (--fail-under / --fail-over) with their exit codes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_random_alexnet

from viscoin_cli.cli._parse import canonical_key
from viscoin_cli.metrics.checks import expected_keys, flatten
from viscoin_cli.metrics.evaluation import Settings

SMALL = ["--device", "cpu", "--samples", "20", "--consistency-samples", "10", "--concepts", "0,1", "--seed", "3"]


@pytest.fixture(scope="module", autouse=True)
def no_hub_cache(tmp_path_factory):
    """An empty torch hub cache for every test here, so LPIPS's default (skip when AlexNet's weights are
    absent) is the same on every machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        yield


@pytest.fixture(scope="module")
def evaluated(tiny_model):
    """`evaluate all --json` once; most tests only read its document."""
    result = run_cli("evaluate", "all", "--model", tiny_model, *SMALL, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model_and_data(tiny_model):
    from viscoin_cli.data import load_dataset
    from viscoin_cli.nets.viscoin import load_viscoin

    model, _ = load_viscoin(tiny_model)
    return model, load_dataset("digits", "test", resolution=16)


def test_document_holds_every_metric_and_its_context(evaluated, tiny_model):
    from viscoin_cli.io.checkpoint import sha256_file

    assert list(evaluated["metrics"]) == ["accuracy", "reconstruction", "faithfulness", "consistency"]
    assert evaluated["model"]["path"] == str(tiny_model)
    assert sha256_file(tiny_model).startswith(evaluated["model"]["sha256"])
    assert evaluated["dataset"] == {"name": "digits", "resolution": 16, "num_classes": 10, "test_images": 360}
    settings = evaluated["settings"]
    assert settings["samples"] == 20 and settings["thresholds"] == [0.1, 0.2, 0.4] and settings["predictor"] == "g"
    assert settings["concepts"] == [0, 1] and settings["lambda"] == 2.0 and settings["seed"] == 3
    assert settings["standardize"] is False  # the paper's plain linear SVM
    assert {"load", "encode_test", "encode_train", *evaluated["metrics"]} <= set(evaluated["seconds"])
    assert "checks" not in evaluated


def test_keys_are_the_documented_ones(evaluated):
    """--fail-under keys are validated against `expected_keys` before the run: it must match the output."""
    settings = Settings(samples=20, concepts=[0, 1])
    metrics = list(evaluated["metrics"])
    assert set(flatten(evaluated["metrics"])) == expected_keys(metrics, settings, 8, lpips_on=False)


def test_values_are_in_range(evaluated):
    metrics = evaluated["metrics"]
    assert all(0 <= metrics["accuracy"][key] <= 1 for key in ("g", "f", "agreement"))
    rec = metrics["reconstruction"]
    assert rec["mse"] > 0 and rec["fid"] >= 0 and rec["samples"] == 360
    assert rec["lpips"] is None and rec["lpips_note"].startswith("skipped") and "alexnet" in rec["lpips_note"]
    assert rec["fid_features"].startswith("classifier f ")
    faith = metrics["faithfulness"]
    assert faith["samples"] == 20 and faith["predictor"] == "g"
    for tau in ("0.1", "0.2", "0.4"):
        assert -1 <= faith[tau]["median"] <= 1 and -1 <= faith[tau]["random_median"] <= 1
    zeroed = [faith[tau]["mean_concepts_zeroed"] for tau in ("0.1", "0.2", "0.4")]
    assert zeroed == sorted(zeroed, reverse=True)  # a higher threshold zeroes fewer concepts
    cons = metrics["consistency"]
    assert set(cons["per_concept"]) == {"0", "1"} and cons["samples"] == 10 and cons["concepts"] == 2
    values = list(cons["per_concept"].values())
    assert cons["mean"] == pytest.approx(sum(values) / 2) and 0 <= cons["std"] <= 0.5


def test_accuracy_and_mse_match_the_model(evaluated, model_and_data):
    model, test_set = model_and_data
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor(test_set.labels)
    with torch.no_grad():
        out = model(images)
    acc = evaluated["metrics"]["accuracy"]
    assert acc["g"] == pytest.approx((out.logits.argmax(1) == labels).float().mean().item())
    assert acc["f"] == pytest.approx((out.f_logits.argmax(1) == labels).float().mean().item())
    assert acc["agreement"] == pytest.approx((out.logits.argmax(1) == out.f_logits.argmax(1)).float().mean().item())
    mse = (out.recon.clamp(-1, 1) - images).square().mean().item()
    assert evaluated["metrics"]["reconstruction"]["mse"] == pytest.approx(mse, rel=1e-4)


def test_faithfulness_and_consistency_match_the_metric_functions(evaluated, model_and_data):
    from viscoin_cli.data import load_dataset
    from viscoin_cli.interpret.encode import encode_dataset
    from viscoin_cli.interpret.relevance import global_relevance, local_relevance
    from viscoin_cli.metrics.consistency import consistency
    from viscoin_cli.metrics.faithfulness import faithfulness
    from viscoin_cli.runtime import setup_runtime

    model, test_set = model_and_data
    rt = setup_runtime("cpu")
    test = encode_dataset(model, test_set, rt)
    indices = torch.randperm(len(test), generator=torch.Generator().manual_seed(3))[:20].sort().values
    expected = faithfulness(model, test.subset(indices), seed=3, batch_size=64)
    for tau, values in expected.items():
        assert evaluated["metrics"]["faithfulness"][tau]["median"] == pytest.approx(values["median"], abs=1e-6)
        assert evaluated["metrics"]["faithfulness"][tau]["random_median"] == pytest.approx(
            values["random_median"], abs=1e-6
        )
    train = encode_dataset(model, load_dataset("digits", "train", resolution=16), rt)
    weight = model.theta.linear.weight.detach()
    relevance = global_relevance(local_relevance(train.pooled, weight, train.predicted), train.predicted, 10)
    result = consistency(model, train, test, relevance, concepts=[0, 1], samples=10, seed=3)
    assert evaluated["metrics"]["consistency"]["per_concept"] == result["per_concept"]


def test_same_seed_same_numbers(evaluated, tiny_model):
    """The random parts (faithfulness' samples and baseline, consistency's SVM folds) repeat exactly."""
    result = run_cli("evaluate", "faithfulness,consistency", "--model", tiny_model, *SMALL, "--json")
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    for metric in ("faithfulness", "consistency"):
        assert again["metrics"][metric] == evaluated["metrics"][metric]


def test_standardize_is_recorded_and_puts_a_scaler_before_the_svm(evaluated, tiny_model, monkeypatch):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from viscoin_cli.metrics import consistency as module

    searches = []

    def spy(*args, **kwargs):
        searches.append(search_of(*args, **kwargs))
        return searches[-1]

    search_of = module.svm_search
    monkeypatch.setattr(module, "svm_search", spy)
    result = run_cli("evaluate", "consistency", "--model", tiny_model, *SMALL, "--standardize", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["settings"]["standardize"] is True
    assert len(searches) == 2  # one per concept
    for search in searches:
        assert isinstance(search.estimator, Pipeline) and isinstance(search.estimator.steps[0][1], StandardScaler)
        assert isinstance(search.best_estimator_.steps[-1][1], LinearSVC)
    default = evaluated["metrics"]["consistency"]
    assert document["metrics"]["consistency"].keys() == default.keys()
    searches.clear()
    result = run_cli("evaluate", "consistency", "--model", tiny_model, *SMALL, "--json")
    assert result.exit_code == 0, result.output
    assert [type(search.best_estimator_) for search in searches] == [LinearSVC, LinearSVC]


def test_table_output_names_the_keys(tiny_model):
    result = run_cli("evaluate", "accuracy", "--model", tiny_model, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    for key in ("accuracy.g", "accuracy.f", "accuracy.agreement", "time:"):
        assert key in result.stdout
    assert result.stderr == ""


# --- CI gates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("accuracy", "accuracy.g"),
        ("mse", "reconstruction.mse"),
        ("faithfulness", "faithfulness.0.2.median"),
        ("faithfulness.0.20.median", "faithfulness.0.2.median"),
        ("faithfulness.0.4", "faithfulness.0.4.median"),
        ("faithfulness.0.1.random_median", "faithfulness.0.1.random_median"),
        ("faithfulness.samples", "faithfulness.samples"),
        ("consistency.per_concept.3", "consistency.per_concept.3"),
    ],
)
def test_check_keys_have_one_spelling(given, key):
    assert canonical_key(given) == key


def test_fail_under_met_exits_0(tiny_model):
    result = run_cli(
        "evaluate", "accuracy", "--model", tiny_model, "--device", "cpu", "--json",
        "--fail-under", "accuracy=0", "--fail-under", "accuracy.f=0", "--fail-over", "agreement=1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["checks"]
    assert [c["key"] for c in checks] == ["accuracy.g", "accuracy.f", "accuracy.agreement"]
    assert all(c["passed"] for c in checks)


def test_fail_under_missed_exits_1_and_says_which(tiny_model):
    result = run_cli(
        "evaluate", "accuracy", "--model", tiny_model, "--device", "cpu", "--json",
        "--fail-under", "accuracy.g=1.01", "--fail-under", "accuracy.f=0",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)  # the document is still printed in full
    assert [c["passed"] for c in document["checks"]] == [False, True]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check failed: accuracy.g = ") and "below 1.01" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["accuracy", "--fail-under", "accuracy.h=0.5"], "unknown key"),
        (["accuracy", "--fail-under", "consistency.mean=0.5"], "consistency is not computed"),
        (["faithfulness", "--samples", "4", "--thresholds", "0.1", "--fail-under", "faithfulness=0"], "unknown key"),
        (["accuracy", "--fail-under", "accuracy.g"], "expected KEY=VALUE"),
        (["accuracy", "--fail-under", "accuracy.g=high"], "not a number"),
        (["reconstruction", "--lpips", "none", "--fail-over", "lpips=0.5"], "LPIPS is not computed"),
    ],
)
def test_bad_checks_are_one_line_errors(tiny_model, args, message):
    result = run_cli("evaluate", *args, "--model", tiny_model, "--device", "cpu")
    assert message in assert_one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["accurracy"], "unknown metric"),
        (["accuracy,"], None),  # a trailing comma is fine
        (["faithfulness", "--thresholds", "0.1,abc"], "'abc' is not a number"),
        (["faithfulness", "--thresholds", "1.5"], "outside [0, 1)"),
        (["faithfulness", "--thresholds", "0.2,0.20"], "repeated"),
        (["faithfulness", "--predictor", "h"], "'h' is not one of 'g', 'f'"),
        (["consistency", "--concepts", "0,99"], "concept index out of range"),
        (["consistency", "--concepts", "3-1"], "runs backwards"),
        (["consistency", "--consistency-samples", "1"], "at least 2"),
        (["reconstruction", "--lpips", "squeeze"], "'squeeze' is not one of 'alex', 'vgg', 'none'"),
        (["reconstruction", "--fid-features", "clip"], "'clip' is not one of 'classifier', 'inception'"),
        (["reconstruction", "--inception-weights", "x.pth"], "applies to --fid-features inception"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_model, args, message):
    result = run_cli("evaluate", *args, "--model", tiny_model, "--device", "cpu", "--quiet")
    if message is None:
        assert result.exit_code == 0, result.output
    else:
        assert message in assert_one_line_error(result)


def test_missing_weights_are_one_line_errors(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = run_cli("evaluate", "reconstruction", "--model", tiny_model, "--device", "cpu", "--lpips", "alex")
    assert "alexnet-owt-7be5be79.pth" in assert_one_line_error(result)
    result = run_cli(
        "evaluate", "reconstruction", "--model", tiny_model, "--device", "cpu", "--fid-features", "inception"
    )
    assert "pt_inception-2015-12-05-6726825d.pth" in assert_one_line_error(result)


def test_missing_model_is_a_one_line_error(tmp_path):
    result = run_cli("evaluate", "accuracy", "--model", tmp_path / "nope.safetensors", "--device", "cpu")
    assert "no such file" in assert_one_line_error(result)


def test_lpips_with_a_weights_file_and_a_ceiling(tiny_model, tmp_path):
    """--lpips-weights: LPIPS is computed (a random AlexNet here; 16 px images are upsampled for it), and
    --fail-over gates lower-is-better numbers."""
    save_random_alexnet(tmp_path / "alexnet.pth")
    result = run_cli(
        "evaluate", "reconstruction", "--model", tiny_model, "--device", "cpu", "--json",
        "--lpips-weights", tmp_path / "alexnet.pth", "--fail-over", "lpips=100", "--fail-over", "mse=0",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    rec = document["metrics"]["reconstruction"]
    assert rec["lpips_net"] == "alex" and rec["lpips_note"] is None
    assert math.isfinite(rec["lpips"]) and rec["lpips"] > 0
    assert [c["passed"] for c in document["checks"]] == [True, False]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check failed: reconstruction.mse = ") and "above 0" in lines[0]


@pytest.fixture(scope="module")
def nan_model(tiny_model):
    """The tiny model with a NaN in its head: every probability it gives is NaN."""
    from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(tiny_model, kind="viscoin")
    tensors = dict(tensors)
    tensors["theta.linear.weight"] = torch.full_like(tensors["theta.linear.weight"], float("nan"))
    return save_checkpoint(
        tiny_model.parent / "nan.safetensors",
        tensors,
        kind="viscoin",
        config=meta.config,
        dataset=meta.dataset,
        step=meta.step,
        parents=meta.parents,
        extra=meta.extra,
    )


def test_a_nan_metric_fails_every_gate_and_stays_valid_json(nan_model):
    args = ["evaluate", "faithfulness", "--model", nan_model, *SMALL, "--json"]
    result = run_cli(*args, "--fail-under", "faithfulness=-1", "--fail-over", "faithfulness.0.2.mean=1e9")
    assert result.exit_code == 1, result.output  # before: NaN < -1 is false, so the gate passed
    document = json.loads(result.stdout)  # before: bare NaN, which is not JSON
    assert document["metrics"]["faithfulness"]["0.2"]["median"] is None
    assert "faithfulness.0.2.median" in document["non_finite"]["keys"]
    assert [c["passed"] for c in document["checks"]] == [False, False]
    assert all(c["value"] is None and c["reason"] == "not a finite number" for c in document["checks"])
    assert "faithfulness.0.2.median is not a finite number" in result.stderr
    assert "1 weight tensor(s) with NaN or inf values (e.g. theta.linear.weight)" in result.stderr  # said at load


def test_check_fails_on_non_finite_values():
    from viscoin_cli.metrics.checks import Check

    for direction in ("under", "over"):
        check = Check("accuracy.g", 0.5, direction, "accuracy")
        assert check.failed(float("nan")) and check.failed(None)
    assert Check("fid", 10.0, "over", "fid").failed(float("inf"))
    assert not Check("accuracy.g", 0.5, "under", "accuracy").failed(0.9)


def test_json_output_never_holds_nan(capsys):
    from viscoin_cli.console import print_json

    print_json({"a": float("nan"), "b": [1.5, float("-inf")], "c": {"d": float("inf"), "e": "NaN"}})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(capsys.readouterr().out, parse_constant=refuse) == {
        "a": None,
        "b": [1.5, None],
        "c": {"d": None, "e": "NaN"},
    }
