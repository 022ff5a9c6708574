"""`viscoin evaluate`: the paper's metrics for a trained model, as a table or one JSON document, with CI gates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli import choices
from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._evaluation import MetricOptions, VisMethod, build_settings, open_model
from viscoin_cli.cli._groups import SEEDED_RUNTIME, Run, grouped, option_group
from viscoin_cli.cli.app import app
from viscoin_cli.shipped import DEFAULT_MODEL

if TYPE_CHECKING:
    pass

EXIT_CHECK_FAILED = 1
FAITH = "Faithfulness"
CONSIST = "Consistency"
RECON = "Reconstruction"
VIS = "Visualisation FID"
HEALTH = "Health"
GROUND = "Ground truth"
CHECKS = "Checks (CI)"
METRIC_HELP = (
    "accuracy, reconstruction, faithfulness, consistency, all (those four), health (not in all: a diagnostic), "
    "ground-truth (not in all: needs a dataset with attribute labels: shapes, cub), visualization-fid (never in "
    "all: slow with AM), or a comma list."
)
KEYS_HELP = (
    "KEY is a dotted path into the JSON's metrics, as the table prints it: accuracy.g, accuracy.f, "
    "reconstruction.mse, reconstruction.fid, faithfulness.0.2.median, consistency.mean, "
    "consistency.per_concept.3, health.per_class.mean, ...; shortcuts: accuracy (= accuracy.g), agreement, mse, "
    "lpips, fid, faithfulness (= faithfulness.0.2.median), consistency (= consistency.mean), dead (= "
    "health.dead.count), duplicates (= health.duplicates.count), captured (= ground_truth.captured), ground-truth (= "
    "ground_truth.mean_auc). Repeatable."
)

Samples = Annotated[
    int,
    typer.Option("--samples", help="Random test samples, median over them (all when fewer).", rich_help_panel=FAITH),
]
Thresholds = Annotated[
    str,
    typer.Option("--thresholds", help="Relevance thresholds τ: concepts with r > τ are zeroed.", rich_help_panel=FAITH),
]
Predictor = Annotated[
    choices.Predictor,
    typer.Option(
        "--predictor",
        help="Whose probability must drop: g (the concept head) or f (the classifier).",
        rich_help_panel=FAITH,
    ),
]
Lambda = Annotated[
    float, typer.Option("--lambda", help="Φ_k is set to λ·a_max in the 'high' renders.", rich_help_panel=CONSIST)
]
ConsistencySamples = Annotated[
    int,
    typer.Option(
        "--consistency-samples",
        help="Samples per concept and split (train: SVM fit, test: score).",
        rich_help_panel=CONSIST,
    ),
]
Lpips = Annotated[
    choices.LpipsNet | None,
    typer.Option(
        "--lpips",
        help="LPIPS backbone [default: alex when its weights are in the torch hub cache, else skipped with a note].",
        rich_help_panel=RECON,
    ),
]
LpipsWeights = Annotated[
    Path | None,
    typer.Option(
        "--lpips-weights",
        help="torchvision AlexNet/VGG16 weights file [default: the torch hub cache].",
        rich_help_panel=RECON,
    ),
]
FidFeatures = Annotated[
    choices.FidFeatures,
    typer.Option(
        "--fid-features",
        help="FID features: classifier (f's pooled features, offline; comparable only with the same f) or "
        "inception (the standard FID network; needs --inception-weights or the torch hub cache).",
        rich_help_panel=RECON,
    ),
]
InceptionWeights = Annotated[
    Path | None,
    typer.Option(
        "--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth.", rich_help_panel=RECON
    ),
]


Concepts = Annotated[
    str | None,
    typer.Option("--concepts", help="Concepts to score, e.g. 0,3,5 or 0-15 [default: all K].", rich_help_panel=CONSIST),
]
Standardize = Annotated[
    bool,
    typer.Option(
        "--standardize",
        help="Scale each layer2 feature to zero mean, unit variance (fitted on the train renders) before the "
        "SVM [default: off, the paper's plain linear SVM].",
        rich_help_panel=CONSIST,
    ),
]
VisPairs = Annotated[
    int,
    typer.Option(
        "--vis-pairs",
        help="Random relevant (class, concept) pairs (global relevance > 0.4) to visualise, 3 samples each; all "
        "of them when fewer (the paper: 400).",
        rich_help_panel=VIS,
    ),
]
VisMethodOption = Annotated[
    VisMethod | None,
    typer.Option(
        "--vis-method",
        help="render: the render with the concept's map scaled by λ = 4; am: activation maximisation from the "
        "sample (FLINT's way) [default: render for VisCoIN, am for FLINT and FLAEM, as the paper].",
        rich_help_panel=VIS,
        show_default=False,
    ),
]
AmSteps = Annotated[
    int | None,
    typer.Option(
        "--am-steps",
        help="Activation maximisation steps per image (with --vis-method am) [default: 1000, the paper's].",
        rich_help_panel=VIS,
        show_default=False,
    ),
]
DuplicateThreshold = Annotated[
    float,
    typer.Option(
        "--duplicate-threshold",
        help="Concepts whose pooled activations correlate above it on the test split are duplicates.",
        rich_help_panel=HEALTH,
    ),
]
CaptureThreshold = Annotated[
    float,
    typer.Option(
        "--capture-threshold",
        help="An attribute value is captured when some concept's pooled activation predicts it with this ROC AUC.",
        rich_help_panel=GROUND,
    ),
]
RenderLambda = Annotated[
    float,
    typer.Option(
        "--render-lambda",
        help="The render test scales the value's matched concept map by λ (against λ = 1).",
        rich_help_panel=GROUND,
    ),
]
RenderSamples = Annotated[
    int,
    typer.Option(
        "--render-samples",
        help="Test images without the value rendered per attribute value (0: no probe, no render test).",
        rich_help_panel=GROUND,
    ),
]
METRIC_OPTIONS = option_group(
    MetricOptions,
    lpips=(Lpips, None),
    lpips_weights=(LpipsWeights, None),
    fid_features=(FidFeatures, "classifier"),
    inception_weights=(InceptionWeights, None),
    samples=(Samples, 1000),
    thresholds=(Thresholds, "0.1,0.2,0.4"),
    predictor=(Predictor, "g"),
    lam=(Lambda, 2.0),
    consistency_samples=(ConsistencySamples, 100),
    concepts=(Concepts, None),
    standardize=(Standardize, False),
    vis_pairs=(VisPairs, 400),
    vis_method=(VisMethodOption, None),
    am_steps=(AmSteps, None),
    duplicate_threshold=(DuplicateThreshold, 0.95),
    capture_threshold=(CaptureThreshold, 0.9),
    render_lambda=(RenderLambda, 4.0),
    render_samples=(RenderSamples, 100),
)


@app.command("evaluate", rich_help_panel="Interpret")
@grouped
def evaluate(
    metric: Annotated[str, typer.Argument(help=METRIC_HELP, show_default=False, metavar="METRIC")],
    model_path: o.Model = DEFAULT_MODEL,
    inputs: common.Inputs = common.INPUTS,
    metric_options: MetricOptions = METRIC_OPTIONS,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under",
            metavar="KEY=VALUE",
            help="Exit 1 when the number KEY is below VALUE. " + KEYS_HELP,
            rich_help_panel=CHECKS,
        ),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-over",
            metavar="KEY=VALUE",
            help="Exit 1 when KEY is above VALUE (for lower-is-better numbers: mse, lpips, fid).",
            rich_help_panel=CHECKS,
        ),
    ] = None,
    batch_size: common.BatchSize = 64,
    run: Run = SEEDED_RUNTIME,
) -> None:
    """Evaluate a VisCoIN model on its test split (paper §4.1): accuracy, reconstruction, faithfulness, consistency.

    accuracy: test accuracy of g and of f, and how often g agrees with f.
    reconstruction: MSE on [-1, 1], LPIPS, and FID between test images and their reconstructions (the FID
    feature extractor is named in the output).
    faithfulness: zero the concepts with local relevance above τ and measure the drop of the predicted
    class's probability; median over --samples test samples, beside zeroing as many random concepts.
    consistency: per concept, a linear SVM tells renders with Φ_k = λ·a_max from renders with Φ_k = 0 (f's
    layer2 features); its test accuracy, mean ± std over concepts.
    visualization-fid (paper App. C.2; not in all): FID between visualisations of the 3 most activating test
    images of --vis-pairs random relevant (class, concept) pairs and as many test images, on the FID features
    of reconstruction.
    health (not in all): dead concepts (never active on the test split), duplicated ones (pooled activations
    correlated above --duplicate-threshold), how many concepts carry 80% of each class's positive relevance,
    and the share of test images where each concept is active; read off the encodings, seconds.
    ground-truth (not in all; datasets with attribute labels: shapes, and cub with its attribute files, whose
    attributes are multi-label: a value present or not, several per image): per attribute value, the concept
    whose pooled activation predicts it best (ROC AUC on the test split) and that AUC, how many values some
    concept captures (AUC ≥ --capture-threshold), and the render test: an attribute probe (a tiny CNN trained
    for seconds on the train split; its test accuracy is reported) reads the value off renders of
    --render-samples test images without it, with the matched concept scaled by --render-lambda vs 1: the
    share that flip to the value.

    The same --seed gives the same numbers. --json prints one document with every number, the settings
    and the seconds each metric took. --fail-under / --fail-over turn it into a CI gate: exit 1 when a
    check fails (listed on stderr), 2 on a usage error.

    Example: viscoin evaluate all --model runs/viscoin-cub/latest.safetensors --data-root ~/data/CUB_200_2011
    --json --fail-under accuracy.g=0.75 --fail-under faithfulness.0.2.median=0.1
    """
    from viscoin_cli.cli._evaluation import parse_metric_names
    from viscoin_cli.cli._parse import parse_check

    metrics = parse_metric_names(metric)
    checks = [parse_check(text, "under") for text in fail_under or []]
    checks += [parse_check(text, "over") for text in fail_over or []]
    facts = common.read_model(model_path)
    settings = build_settings(metric_options, facts, batch_size, run)

    from viscoin_cli.console import make_console, print_json

    document = open_model(facts, inputs, run, settings).evaluate(metrics, checks)
    if run.json_out:
        print_json(document)
    else:
        print_table(document)
    report_checks(document, make_console())


def report_checks(document: dict[str, Any], console) -> None:
    """One stderr line per failed check, then exit 1 if any failed."""
    if "non_finite" in document:
        keys = document["non_finite"]["keys"]
        console.print(
            f"warning: {len(keys)} number(s) are not finite (NaN or inf), e.g. {keys[0]}: is the model broken?"
        )
    failed = [result for result in document.get("checks", []) if not result["passed"]]
    for result in failed:
        bound = result.get("fail_under", result.get("fail_over"))
        if result["value"] is None:
            console.print(f"check failed: {result['key']} is not a finite number")
            continue
        relation = "below" if "fail_under" in result else "above"
        console.print(f"check failed: {result['key']} = {result['value']:.4g} is {relation} {bound:g}")
    if failed:
        raise typer.Exit(EXIT_CHECK_FAILED)


def print_table(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from viscoin_cli.interpret.tables import summary_rows

    model, data = document["model"], document["dataset"]
    table = Table(
        title=f"{Path(model['path']).name} (sha256 {model['sha256']}, K={model['concepts']}) on "
        f"{data['name']} {data['resolution']} px"
    )
    for column in ("key", "value", "detail"):
        table.add_column(column, overflow="fold")
    metrics = document["metrics"]
    for row in summary_rows(metrics) + ground_truth_rows(metrics) + visualization_rows(metrics):
        table.add_row(*row)
    seconds = ", ".join(f"{name} {value:.1f}s" for name, value in document["seconds"].items())
    table.caption = f"time: {seconds}"
    console = Console(soft_wrap=False)
    console.print(table)
    if metrics.get("ground_truth") is not None:
        console.print(ground_truth_table(metrics["ground_truth"]))


def _shown(value: float | None, digits: int = 4) -> str:
    """Fixed decimals; a value that rounds to zero is 0, not -0."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def ground_truth_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The ground truth's summary rows (the per-value table follows the main one)."""
    gt = metrics.get("ground_truth")
    if gt is None:
        return []
    rows = [
        (
            "ground_truth.mean_auc",
            _shown(gt["mean_auc"]),
            f"mean over {gt['attributes']} attributes of their values' best concept AUC, {gt['samples']} test images",
        ),
        (
            "ground_truth.captured",
            str(gt["captured"]),
            f"of {gt['targets']} attribute values have a concept with AUC ≥ {gt['threshold']:g}; "
            f"{gt['attributes_captured']} of {gt['attributes']} attributes wholly",
        ),
    ]
    render = gt.get("render")
    if render is not None:
        rows.append(
            (
                "ground_truth.render.flip_rate",
                _shown(render["flip_rate"]),
                f"renders with the matched concept at λ={render['lambda']:g} the probe reads as the value (not at "
                f"λ=1), mean over {render['targets']} values, ≤ {render['samples']} images each; probability "
                f"gain {_shown(render['probability_gain'])}",
            )
        )
    return rows


def ground_truth_table(gt: dict[str, Any]):
    """A row per attribute value: its best concept, that AUC, captured ✓, the render test and the probe."""
    from rich.table import Table

    table = Table(title=f"ground truth: best concept per attribute value (captured: AUC ≥ {gt['threshold']:g})")
    table.caption = "concept: the best one (AUC of its φ̄); flip, Δp: the render test; probe: its test accuracy"
    for column in ("attribute", "value", "concept", "AUC", "✓", "flip", "Δp", "probe"):
        table.add_column(column, justify="left" if column in ("attribute", "value") else "right", no_wrap=True)
    probe = (gt.get("probe") or {}).get("accuracy", {})
    for name, attribute in gt["per_attribute"].items():
        for i, (value, entry) in enumerate(attribute["values"].items()):
            render = entry.get("render") or {}
            table.add_row(
                name if i == 0 else "",
                value,
                "—" if entry["concept"] is None else str(entry["concept"]),
                _shown(entry["auc"]),
                "✓" if entry["captured"] else "",
                _shown(render.get("flip_rate"), 2),
                _shown(render.get("probability_gain"), 2),
                _shown(probe.get(name), 2) if i == 0 else "",
            )
    return table


def visualization_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table's row for visualization_fid (interpret/tables.py knows the metrics of `all`)."""
    vis = metrics.get("visualization_fid")
    if vis is None:
        return []
    how = f"AM, {vis['am_steps']} steps" if vis["method"] == "am" else f"renders at λ={vis['lambda']:g}"
    fid = "—" if vis["fid"] is None else f"{vis['fid']:.4f}"
    detail = (
        f"{vis['visualizations']} visualisations ({how}) of {vis['pairs']} relevant pairs vs {vis['samples']} "
        f"test images, features: {vis['fid_features']}"
    )
    return [("visualization_fid.fid", fid, detail)]
