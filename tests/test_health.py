"""Dictionary health (`viscoin evaluate health`) on planted activations and relevance tables, and concept
stability (Hungarian matching) on a permuted, rescaled copy of a dictionary; both through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from viscoin_cli.metrics.checks import expected_keys, flatten
from viscoin_cli.metrics.evaluation import Settings
from viscoin_cli.metrics.health import concepts_for_share, correlations, health, match_concepts, stability


def _planted() -> torch.Tensor:
    """φ̄ [200, 6]: 0, 2, 4 independent, 1 dead (always 0), 3 = 2.5·concept 0 + 0.1, 5 constant but active."""
    torch.manual_seed(0)
    pooled = torch.rand(200, 6)
    pooled[:, 1] = 0.0
    pooled[:, 3] = 2.5 * pooled[:, 0] + 0.1
    pooled[:, 5] = 0.7
    return pooled


def test_a_dead_concept_is_dead_and_no_duplicate_and_a_copy_is_a_duplicate():
    result = health(_planted(), torch.zeros(2, 6))
    assert result["dead"] == {"count": 1, "fraction": 1 / 6, "indices": [1]}
    assert result["constant"] == {"count": 2, "indices": [1, 5]}  # zero variance: no correlation, no NaN
    assert result["duplicates"]["count"] == 1
    (k1, k2, r), *_ = result["duplicates"]["pairs"]
    assert (k1, k2) == (0, 3) and r == pytest.approx(1.0, abs=1e-9)
    assert result["active_fraction"]["per_concept"][1] == 0.0 and result["active_fraction"]["per_concept"][5] == 1.0
    assert result["active_fraction"]["min"] == 0.0 and result["active_fraction"]["max"] == 1.0
    assert all(math.isfinite(v) for v in flatten(result).values())
    assert not correlations(_planted(), _planted()).isnan().any()


def test_the_duplicate_threshold_decides():
    pooled = _planted()
    pooled[:, 4] = pooled[:, 2] + 0.3 * torch.rand(200)  # r ≈ 0.96 with concept 2
    r = float(correlations(pooled, pooled)[2, 4])
    assert 0.9 < r < 0.99
    assert [pair[:2] for pair in health(pooled, torch.zeros(1, 6))["duplicates"]["pairs"]] == [[0, 3], [2, 4]]
    assert health(pooled, torch.zeros(1, 6), duplicate_threshold=0.99)["duplicates"]["count"] == 1


def test_concepts_per_class_on_a_hand_worked_table():
    relevance = torch.tensor(
        [
            [0.5, 0.3, 0.1, 0.1, -1.0],  # positive total 1.0: 0.5 + 0.3 = 0.8 reaches 80% with 2 concepts
            [0.1, 0.1, 0.1, 0.1, 0.6],  # 0.6, 0.7, 0.8: 3 concepts
            [0.0, 0.0, 0.0, 0.0, 0.0],  # never predicted: no count
            [0.0, 0.0, 0.9, -0.2, 0.0],  # one concept carries it all
        ]
    )
    assert concepts_for_share(relevance) == [2, 3, None, 1]
    assert concepts_for_share(relevance, share=1.0) == [4, 5, None, 1]
    per_class = health(torch.rand(10, 5), relevance)["per_class"]
    assert per_class["counts"] == [2, 3, None, 1] and per_class["classes"] == 3
    assert per_class["mean"] == pytest.approx(2.0) and per_class["min"] == 1 and per_class["max"] == 3


def test_matching_recovers_a_permutation_with_rescaling():
    torch.manual_seed(1)
    a = torch.rand(300, 7)
    permutation = torch.tensor([3, 0, 6, 1, 5, 2, 4])  # b's concept j is a's concept permutation[j]
    b = a[:, permutation] * torch.tensor([2.0, 0.5, 1.0, 3.0, 0.1, 7.0, 1.5]) + 0.2
    matches = match_concepts(a, b)
    assert [(i, j) for i, j, _ in matches] == [(int(permutation[j]), j) for j in permutation.argsort().tolist()]
    result = stability(a, b)
    assert result["mean_matched_correlation"] == pytest.approx(1.0, abs=1e-9)
    assert result["matched_above_0.5"] == 1.0 and result["matched"] == 7
    # different K: a rectangular assignment matches min(Ka, Kb) concepts
    assert stability(a, b[:, :4])["matched"] == 4
    assert stability(a, b[:, :4])["mean_matched_correlation"] == pytest.approx(1.0, abs=1e-9)
    # a dead concept matches nothing: r = 0, no NaN
    b[:, 0] = 0.0
    assert stability(a, b)["mean_matched_correlation"] == pytest.approx(6 / 7, abs=1e-9)


def test_evaluate_health_through_the_cli(tiny_model):
    result = run_cli("evaluate", "health", "--model", tiny_model, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document["metrics"]) == ["health"]
    found = document["metrics"]["health"]
    assert {"dead", "duplicates", "per_class", "active_fraction"} <= set(found)
    assert found["concepts"] == 8 and len(found["active_fraction"]["per_concept"]) == 8
    assert len(found["per_class"]["counts"]) == 10 and found["duplicates"]["threshold"] == 0.95
    assert document["settings"]["duplicate_threshold"] == 0.95
    flat = set(flatten(document["metrics"]))  # a summary over no class is null, so not a number: <=
    assert {"health.dead.count", "health.duplicates.count", "health.active_fraction.mean"} <= flat
    assert flat <= expected_keys(["health"], Settings(), 8, lpips_on=False)

    gated = run_cli(
        "evaluate", "accuracy,health", "--model", tiny_model, "--device", "cpu", "--json",
        "--fail-over", "dead=8", "--fail-under", "health.active_fraction.mean=1.5", "--duplicate-threshold", "0.9",
    )  # fmt: skip
    assert gated.exit_code == 1, gated.output
    checks = json.loads(gated.stdout)["checks"]
    assert [(c["key"], c["passed"]) for c in checks] == [
        ("health.active_fraction.mean", False),  # --fail-under checks come first
        ("health.dead.count", True),
    ]
    assert json.loads(gated.stdout)["settings"]["duplicate_threshold"] == 0.9


def test_health_usage_errors(tiny_model):
    line = assert_one_line_error(run_cli("evaluate", "accuracy", "--model", tiny_model, "--fail-over", "dead=1"))
    assert "health is not computed (evaluate health)" in line
    line = assert_one_line_error(run_cli("evaluate", "health", "--model", tiny_model, "--fail-over", "health.x=1"))
    assert "unknown key" in line and "health." in line
    line = assert_one_line_error(run_cli("evaluate", "health", "--model", tiny_model, "--duplicate-threshold", "2"))
    assert "--duplicate-threshold 2.0: must be a correlation in [-1, 1]" in line


def test_the_table_has_health_rows(tiny_model):
    from typer.testing import CliRunner

    from viscoin_cli.cli import app

    args = ["evaluate", "health", "--model", str(tiny_model), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for key in ("health.dead.count", "health.duplicates.count", "health.per_class.mean", "health.active_fraction.mean"):
        assert key in result.stdout
