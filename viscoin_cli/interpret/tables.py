"""The metrics as (key, value, detail) rows: one presentation for `viscoin evaluate`'s table and the report's.

Reads the `metrics` part of an evaluation document (plain dicts), so it needs neither torch nor the metrics.
"""

from __future__ import annotations

from typing import Any


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, value, detail) rows for the table: the keys are the ones --fail-under takes."""
    rows = []
    if "accuracy" in metrics:
        acc = metrics["accuracy"]
        rows += [
            ("accuracy.g", _number(acc["g"]), f"interpretable head g, {acc['samples']} test images"),
            ("accuracy.f", _number(acc["f"]), "classifier f"),
            ("accuracy.agreement", _number(acc["agreement"]), "g and f predict the same class"),
        ]
    if "reconstruction" in metrics:
        rec = metrics["reconstruction"]
        rows.append(("reconstruction.mse", _number(rec["mse"]), "per-image MSE on [-1, 1], mean"))
        lpips_detail = f"LPIPS ({rec['lpips_net']})" if rec["lpips"] is not None else rec["lpips_note"]
        rows.append(("reconstruction.lpips", _number(rec["lpips"]), lpips_detail))
        rows.append(("reconstruction.fid", _number(rec["fid"]), f"FID(x, x̃), features: {rec['fid_features']}"))
    if "faithfulness" in metrics:
        faith = metrics["faithfulness"]
        for key, value in faith.items():
            if isinstance(value, dict):
                rows.append(
                    (
                        f"faithfulness.{key}.median",
                        _number(value["median"]),
                        f"τ={key}: random {_number(value['random_median'])}, "
                        f"{value['mean_concepts_zeroed']:.1f} concepts zeroed, p of {faith['predictor']}, "
                        f"{faith['samples']} samples",
                    )
                )
    if "consistency" in metrics:
        cons = metrics["consistency"]
        rows.append(
            (
                "consistency.mean",
                _number(cons["mean"]),
                f"± {cons['std']:.4f} (std) over {cons['concepts']} concepts, λ={cons['lambda']:g}, "
                f"{cons['samples']} samples per split",
            )
        )
    if "health" in metrics:
        rows += health_rows(metrics["health"])
    return rows


def _listed(items: list[Any], shown: int = 8) -> str:
    return ", ".join(map(str, items[:shown])) + (f", … ({len(items) - shown} more)" if len(items) > shown else "")


def health_rows(health: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The dictionary's health (metrics/health.py): dead and duplicated concepts, concepts per class, activity."""
    dead, duplicates, per_class, active = (
        health[name] for name in ("dead", "duplicates", "per_class", "active_fraction")
    )
    pairs = [f"{k1}~{k2} (r={r:.3f})" for k1, k2, r in duplicates["pairs"]]
    spread = "—" if per_class["min"] is None else f"{per_class['min']:g}–{per_class['max']:g}"
    return [
        (
            "health.dead.count",
            str(dead["count"]),
            f"of {health['concepts']} concepts never active (φ̄ ≤ {health['epsilon']:g}) on {health['samples']} "
            f"test images" + (f": {_listed(dead['indices'])}" if dead["indices"] else ""),
        ),
        (
            "health.duplicates.count",
            str(duplicates["count"]),
            f"concept pairs with φ̄ correlated above {duplicates['threshold']:g}"
            + (f": {_listed(pairs, 4)}" if pairs else ""),
        ),
        (
            "health.per_class.mean",
            _number(per_class["mean"]),
            f"concepts carrying {per_class['share']:.0%} of a class's positive relevance, {spread} over "
            f"{per_class['classes']} classes",
        ),
        (
            "health.active_fraction.mean",
            _number(active["mean"]),
            f"share of test images where a concept is active: min {_number(active['min'])}, median "
            f"{_number(active['median'])}, max {_number(active['max'])}",
        ),
    ]
