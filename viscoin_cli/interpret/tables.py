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
    return rows
