"""The CI gates on an evaluation's numbers (`--fail-under` / `--fail-over`): which keys exist, and whether they hold.

A check names a number by its dotted path into the document's `metrics` (`accuracy.g`,
`faithfulness.0.2.median`, `consistency.per_concept.3`), the key the table prints. Torch-free: the CLI
parses checks against these names before it loads anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from viscoin_cli.errors import UserError

if TYPE_CHECKING:
    from viscoin_cli.metrics.evaluation import Settings

METRICS = ("accuracy", "reconstruction", "faithfulness", "consistency")
# Computed only when named (not in `all`, whose numbers the shipped metrics.json pins): health, a diagnostic of
# the dictionary rather than one of the paper's metrics, ground_truth (needs a dataset with attribute labels,
# e.g. shapes: `all` must work on every dataset), and visualization_fid (hours with AM on a big model).
OPTIONAL_METRICS = ("health", "ground_truth", "visualization_fid")
# Short names for the numbers people gate on most; everything else is its full dotted path.
ALIASES = {
    "accuracy": "accuracy.g",
    "agreement": "accuracy.agreement",
    "mse": "reconstruction.mse",
    "lpips": "reconstruction.lpips",
    "fid": "reconstruction.fid",
    "faithfulness": "faithfulness.0.2.median",
    "consistency": "consistency.mean",
    "dead": "health.dead.count",
    "duplicates": "health.duplicates.count",
    "captured": "ground_truth.captured",
    "ground-truth.captured": "ground_truth.captured",
    "ground-truth.mean_auc": "ground_truth.mean_auc",
    "ground-truth": "ground_truth.mean_auc",
}
FAITHFULNESS_FIELDS = ("median", "random_median", "mean", "random_mean", "mean_concepts_zeroed", "samples")
SUMMARY_FIELDS = ("mean", "min", "median", "max")
HEALTH_KEYS = (
    "concepts", "samples", "epsilon", "dead.count", "dead.fraction", "constant.count", "duplicates.count",
    "duplicates.threshold", "per_class.share", "per_class.classes",
    *(f"per_class.{name}" for name in SUMMARY_FIELDS), *(f"active_fraction.{name}" for name in SUMMARY_FIELDS),
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """`--fail-under KEY=VALUE` (fails when the number is below VALUE) or `--fail-over` (above)."""

    key: str  # canonical dotted path into document["metrics"]
    bound: float
    direction: str  # "under" | "over"
    given: str  # as typed, for messages

    def failed(self, value: float | None) -> bool:
        """A value that is not a finite number (NaN, inf, or null in the JSON) fails every gate: with NaN,
        `value < bound` alone would be false and a broken model would pass."""
        if value is None or not math.isfinite(value):
            return True
        return value < self.bound if self.direction == "under" else value > self.bound


def expected_keys(metrics: Sequence[str], settings: Settings, num_concepts: int, lpips_on: bool) -> set[str]:
    """The numeric keys the document's `metrics` will hold: checks are validated against them before any
    computation, so a typo fails in a second, not after an hour of rendering."""
    keys: set[str] = set()
    if "accuracy" in metrics:
        keys |= {"accuracy.g", "accuracy.f", "accuracy.agreement", "accuracy.samples"}
    if "reconstruction" in metrics:
        keys |= {"reconstruction.mse", "reconstruction.fid", "reconstruction.samples"}
        keys |= {"reconstruction.lpips"} if lpips_on else set()
    if "faithfulness" in metrics:
        keys.add("faithfulness.samples")
        keys |= {f"faithfulness.{t:g}.{name}" for t in settings.thresholds for name in FAITHFULNESS_FIELDS}
    if "consistency" in metrics:
        concepts = range(num_concepts) if settings.concepts is None else settings.concepts
        keys |= {f"consistency.{name}" for name in ("mean", "std", "lambda", "samples", "concepts")}
        keys |= {f"consistency.per_concept.{k}" for k in concepts}
    if "health" in metrics:
        keys |= {f"health.{name}" for name in HEALTH_KEYS}
    return keys


def validate_checks(checks: Iterable[Check], keys: set[str], metrics: Sequence[str]) -> None:
    for check in checks:
        if check.key in keys:
            continue
        metric = check.key.split(".", 1)[0]
        if metric in (*METRICS, *OPTIONAL_METRICS) and metric not in metrics:
            command = metric.replace("_", "-")  # as METRIC is typed
            raise UserError(f"--fail-{check.direction} {check.given}: {metric} is not computed (evaluate {command})")
        if check.key == "reconstruction.lpips":
            raise UserError(f"--fail-{check.direction} {check.given}: LPIPS is not computed in this run (see --lpips)")
        same = sorted(k for k in keys if k.startswith(f"{metric}.") and ".per_concept." not in k)
        shown = ", ".join((same or sorted(ALIASES))[:6])
        raise UserError(f"--fail-{check.direction} {check.given}: unknown key (try {shown}, ...; see --help)")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a.b.c": value} (strings, lists and nulls left out)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[path] = value
    return flat


def run_checks(document: dict[str, Any], checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Each check with the value it saw and whether it passed (the document's `checks`)."""
    flat = flatten(document["metrics"])
    results = []
    for check in checks:
        value = flat.get(check.key)  # absent: a null in the document, i.e. not a finite number
        result = {"key": check.key, "fail_" + check.direction: check.bound, "value": value}
        if value is None or not math.isfinite(value):
            result.update(value=None, reason="not a finite number")
        results.append({**result, "passed": not check.failed(value)})
    return results


def null_non_finite(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Replace every NaN/inf number in nested dicts by None (JSON null) in place; the dotted keys replaced."""
    replaced = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            replaced += null_non_finite(value, path + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            tree[key] = None
            replaced.append(path)
    return replaced
