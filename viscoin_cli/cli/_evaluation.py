"""What `viscoin evaluate` and `viscoin report` share: the metric options, validated into the evaluation's
Settings, and the model opened for evaluation.

Torch-free at import time; the underscore keeps `load_commands` from taking this module for a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from viscoin_cli.choices import Choice
from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import Run
from viscoin_cli.cli._parse import MAX_LAMBDA, parse_indices, parse_metrics, parse_thresholds
from viscoin_cli.errors import UserError
from viscoin_cli.metrics.checks import METRICS, OPTIONAL_METRICS

if TYPE_CHECKING:
    from viscoin_cli.metrics.evaluation import Evaluation, Settings


class VisMethod(Choice):
    """How a concept is shown: λ-edits rendered by the model's decoder, or activation maximisation."""

    render = "render"
    am = "am"


def parse_metric_names(text: str, option: str = "METRIC") -> list[str]:
    """`parse_metrics`, plus the optional metrics (health, ground-truth, visualization-fid; or with `_`), last."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    optional = [name.replace("-", "_") for name in names if name.replace("-", "_") in OPTIONAL_METRICS]
    rest = [name for name in names if name.replace("-", "_") not in OPTIONAL_METRICS]
    for name in rest:
        if name != "all" and name not in METRICS:
            known = ", ".join((*METRICS, *(name.replace("_", "-") for name in OPTIONAL_METRICS)))
            raise UserError(f"{option} {name!r}: unknown metric, expected one of {known} or all (a comma list)")
    selected = parse_metrics(",".join(rest), option) if rest or not optional else []
    return selected + [name for name in OPTIONAL_METRICS if name in optional]


@dataclass(frozen=True)
class MetricOptions:
    """The metric options as typed; `report` sets only samples, consistency_samples, concepts and
    standardize."""

    lpips: str | None = None
    lpips_weights: Path | None = None
    fid_features: str = "classifier"
    inception_weights: Path | None = None
    samples: int = 1000
    thresholds: str = "0.1,0.2,0.4"
    predictor: str = "g"
    lam: float = 2.0
    consistency_samples: int = 100
    concepts: str | None = None
    standardize: bool = False
    vis_pairs: int = 400
    vis_method: str | None = None
    am_steps: int | None = None
    duplicate_threshold: float = 0.95
    capture_threshold: float = 0.9
    render_lambda: float = 4.0
    render_samples: int = 100


def build_settings(options: MetricOptions, facts: common.ModelFacts, batch_size: int, run: Run) -> Settings:
    """Validated settings (one-line errors, before anything loads)."""
    import math

    from viscoin_cli.metrics.evaluation import Settings

    common.check_positive(batch_size, "--batch-size")
    common.check_positive(options.samples, "--samples")
    if options.consistency_samples < 2:
        raise UserError(
            f"--consistency-samples {options.consistency_samples}: must be at least 2 (the SVM needs folds)"
        )
    if not math.isfinite(options.lam):
        raise UserError(f"--lambda {options.lam}: must be a finite number")
    if options.inception_weights is not None and options.fid_features != "inception":
        raise UserError("--inception-weights applies to --fid-features inception")
    common.check_positive(options.vis_pairs, "--vis-pairs")
    if not -1 <= options.duplicate_threshold <= 1:
        raise UserError(f"--duplicate-threshold {options.duplicate_threshold}: must be a correlation in [-1, 1]")
    check_capture_threshold(options.capture_threshold)
    if not math.isfinite(options.render_lambda) or abs(options.render_lambda) > MAX_LAMBDA:
        raise UserError(f"--render-lambda {options.render_lambda}: must be a number within ±{MAX_LAMBDA:g}")
    if options.render_samples < 0:
        raise UserError(f"--render-samples {options.render_samples}: must be 0 (no render test) or more")
    if options.am_steps is not None:
        from viscoin_cli.interpret.am import check_steps

        check_steps(options.am_steps)
    concepts = options.concepts
    return Settings(
        seed=run.seed,
        batch_size=batch_size,
        workers=o.default_workers(facts.dataset["name"], run.workers),
        samples=options.samples,
        thresholds=parse_thresholds(options.thresholds),
        predictor=str(options.predictor),
        lam=options.lam,
        consistency_samples=options.consistency_samples,
        concepts=parse_indices(concepts, facts.num_concepts) if concepts is not None else None,
        standardize=options.standardize,
        lpips=str(options.lpips) if options.lpips is not None else None,
        lpips_weights=str(options.lpips_weights) if options.lpips_weights else None,
        fid_features=str(options.fid_features),
        inception_weights=str(options.inception_weights) if options.inception_weights else None,
        vis_pairs=options.vis_pairs,
        vis_method=str(options.vis_method) if options.vis_method is not None else None,
        am_steps=options.am_steps,
        duplicate_threshold=options.duplicate_threshold,
        capture_threshold=options.capture_threshold,
        render_lambda=options.render_lambda,
        render_samples=options.render_samples,
    )


def open_model(facts: common.ModelFacts, inputs: common.Inputs, run: Run, settings: Settings) -> Evaluation:
    """The runtime (seeded), then the model with its parents, ready to evaluate on its data."""
    from viscoin_cli.console import make_console, warn_non_finite
    from viscoin_cli.io.checkpoint import non_finite_tensors
    from viscoin_cli.metrics.evaluation import open_evaluation
    from viscoin_cli.runtime import setup_runtime

    console = make_console(quiet=run.quiet or run.json_out)
    rt = setup_runtime(device=run.device, precision=run.precision, seed=run.seed)
    evaluation = open_evaluation(
        facts.path,
        rt,
        settings,
        data_root=inputs.data_root,
        data_options=inputs.data_options,
        classifier=inputs.classifier,
        generator=inputs.generator,
        console=console,
    )
    warn_non_finite(non_finite_tensors(evaluation.model.state_dict()), f"{facts.path} (with its f and G)")
    return evaluation


def check_capture_threshold(value: float) -> None:
    """--capture-threshold is an AUC a concept (or direction) must reach to capture an attribute value."""
    if not 0 < value <= 1:
        raise UserError(f"--capture-threshold {value}: must be an AUC in (0, 1]")
