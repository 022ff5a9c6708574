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
CHECKS = "Checks (CI)"
METRIC_HELP = (
    "accuracy, reconstruction, faithfulness, consistency, all (those four), health (not in all: a diagnostic), "
    "visualization-fid (never in all: slow with AM), or a comma list."
)
KEYS_HELP = (
    "KEY is a dotted path into the JSON's metrics, as the table prints it: accuracy.g, accuracy.f, "
    "reconstruction.mse, reconstruction.fid, faithfulness.0.2.median, consistency.mean, "
    "consistency.per_concept.3, health.per_class.mean, ...; shortcuts: accuracy (= accuracy.g), agreement, mse, "
    "lpips, fid, faithfulness (= faithfulness.0.2.median), consistency (= consistency.mean), dead (= "
    "health.dead.count), duplicates (= health.duplicates.count). Repeatable."
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
    for row in summary_rows(document["metrics"]) + visualization_rows(document["metrics"]):
        table.add_row(*row)
    seconds = ", ".join(f"{name} {value:.1f}s" for name, value in document["seconds"].items())
    table.caption = f"time: {seconds}"
    Console(soft_wrap=False).print(table)


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
