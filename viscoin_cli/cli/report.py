"""`viscoin report`: a static HTML page with a model's metrics, its dictionary health, and one card per concept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli import choices
from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._evaluation import MetricOptions, build_settings, open_model
from viscoin_cli.cli._groups import SEEDED_RUNTIME, Run, grouped
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.io.outputs import check_output_folder
from viscoin_cli.shipped import DEFAULT_MODEL

if TYPE_CHECKING:
    from viscoin_cli.interpret.compare import Model
    from viscoin_cli.metrics.evaluation import Evaluation

PAGE = "Page"
METRICS = "Metrics"
DEFAULT_METRICS = "accuracy,reconstruction,faithfulness"
EXPLAIN_TOP_K = 5  # concepts per explain card written by the report (explain's default --top-k)


def read_metrics_json(path: Path, model_sha256: str) -> dict[str, Any]:
    """A `viscoin evaluate --json` document, checked to be about this model."""
    from viscoin_cli.interpret.compare import read_evaluation_json, recorded_sha256

    document = read_evaluation_json(path)
    recorded = recorded_sha256(document)
    if not recorded or not model_sha256.startswith(recorded):
        raise UserError(f"--metrics-json {path}: computed for another model (sha256 {recorded or 'missing'})")
    return document


def plan_comparison(
    facts: common.ModelFacts, others: list[Path], selected: list[str], metrics_json: Path | None
) -> list[Model]:
    """The models of --compare (the report's model first), checked comparable before any work."""
    from viscoin_cli.cli.compare import read_models
    from viscoin_cli.interpret.compare import check_comparable

    if not [name for name in selected if name != "health"] and metrics_json is None:  # health is no row
        raise UserError("--compare needs metrics: pass --metrics (not none) or --metrics-json")
    models = read_models([facts.path, *others])
    check_comparable(models)
    return models


def run_comparison(
    models: list[Model], evaluation: Evaluation, document: dict[str, Any], source: str, inputs: common.Inputs, run: Run
) -> dict[str, Any]:
    """The comparison table of `viscoin compare`, with the report's settings and metrics; the report's model
    is evaluated already (its open evaluation and its numbers are reused)."""
    from viscoin_cli.cli._evaluation import OPTIONAL_METRICS
    from viscoin_cli.cli.compare import opener
    from viscoin_cli.interpret.compare import compare
    from viscoin_cli.metrics.checks import METRICS as METRIC_NAMES

    open_other = opener(inputs, run, evaluation.settings)

    def open_model(model: Model, classifier: Path | None, generator: Path | None) -> Evaluation:
        return evaluation if model.path == models[0].path else open_other(model, classifier, generator)

    return compare(  # health is no row of the comparison table: not computed for the other models
        models,
        metrics=[
            name for name in document["metrics"] if name in (*METRIC_NAMES, *OPTIONAL_METRICS) and name != "health"
        ],
        settings=evaluation.settings,
        open_model=open_model,
        documents=[[(source, document)], *([] for _ in models[1:])],
        classifier=inputs.classifier,
        generator=inputs.generator,
        console=evaluation.console,
    )


def parse_report_metrics(text: str) -> list[str]:
    """--metrics as computed for the page: the named metrics, and health always (last, as `evaluate` orders
    it), since the page's health section and badges read it."""
    from viscoin_cli.cli._evaluation import parse_metric_names

    selected = parse_metric_names(text, "--metrics")
    if "visualization_fid" in selected:
        raise UserError(
            "--metrics visualization-fid: not computed by report; run `viscoin evaluate visualization-fid --json` "
            "and pass its output with --metrics-json"
        )
    return selected if "health" in selected else [*selected, "health"]


def page_health(
    evaluation: Evaluation, document: dict[str, Any] | None, metrics_json: Path | None
) -> tuple[dict[str, Any], str]:
    """The `health` metric for the page and where it came from: the metrics document's (computed with the
    page's metrics, or read with --metrics-json), else computed now, the one way `viscoin evaluate health` does."""
    found = (document or {}).get("metrics", {}).get("health")
    if found is not None:
        return found, f"from --metrics-json {metrics_json}" if metrics_json else "computed with the metrics"
    return evaluation.health(), "computed for this page"


@app.command("report", rich_help_panel="Interpret")
@grouped
def report(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for index.html, images/ and metrics.json (created; earlier report files replaced)."
        ),
    ],
    model_path: o.Model = DEFAULT_MODEL,
    inputs: common.Inputs = common.INPUTS,
    concepts: Annotated[
        str | None,
        typer.Option("--concepts", help="Concepts to show, e.g. 0,3,5 or 0-15 [default: all K].", rich_help_panel=PAGE),
    ] = None,
    lambdas: Annotated[
        str, typer.Option("--lambdas", help="λ values of each card's strip (1 = reconstruction).", rich_help_panel=PAGE)
    ] = "0,1,2,4",
    top: Annotated[int, typer.Option("--top", help="Most activating samples per card.", rich_help_panel=PAGE)] = 8,
    explain: Annotated[
        int,
        typer.Option(
            "--explain",
            help="Write the `viscoin explain` card of each card's N most activating samples (each sample once) "
            "into DIR/explain/ and link the card's sample indices to them; 0: none.",
            rich_help_panel=PAGE,
        ),
    ] = 1,
    top_classes: Annotated[
        int, typer.Option("--top-classes", help="Most relevant classes listed per card.", rich_help_panel=PAGE)
    ] = 3,
    split: Annotated[
        choices.Split,
        typer.Option(
            "--split",
            help="Split for relevance and samples (test: as `viscoin relevance`).",
            rich_help_panel=PAGE,
        ),
    ] = "test",
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Metrics computed for the page: a comma list of accuracy, reconstruction, faithfulness, "
            "consistency (over the shown concepts), or all, or none. health (the dictionary health section and "
            "the cards' badges) is always computed: it reads the test encodings, no rendering.",
            rich_help_panel=METRICS,
        ),
    ] = DEFAULT_METRICS,
    metrics_json: Annotated[
        Path | None,
        typer.Option(
            "--metrics-json",
            help="Show this `viscoin evaluate --json` output instead of computing metrics.",
            rich_help_panel=METRICS,
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Faithfulness: random test samples.", rich_help_panel=METRICS)
    ] = 200,
    consistency_samples: Annotated[
        int,
        typer.Option(
            "--consistency-samples", help="Consistency: samples per concept and split.", rich_help_panel=METRICS
        ),
    ] = 100,
    standardize: Annotated[
        bool,
        typer.Option(
            "--standardize",
            help="Consistency: standardise the SVM's features first [default: off, the paper's plain SVM].",
            rich_help_panel=METRICS,
        ),
    ] = False,
    duplicate_threshold: Annotated[
        float,
        typer.Option(
            "--duplicate-threshold",
            help="Health: concepts whose pooled activations correlate above this are near duplicates.",
            rich_help_panel=METRICS,
        ),
    ] = 0.95,
    compared: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            metavar="MODEL",
            help="Add a comparison table with this model (on the same f and test split), computed as "
            "`viscoin compare` does with the page's metrics and settings, consistency at λ = 2 and 4. Repeatable.",
            rich_help_panel=METRICS,
        ),
    ] = None,
    directions: Annotated[
        list[Path] | None,
        typer.Option(
            "--directions",
            help="A `viscoin directions gan` or `directions classifier` checkpoint: add a table of its directions "
            "and the concept of this model each one finds (as `viscoin compare --directions`; with the ground-truth "
            "metric, also the attribute value each direction finds). Repeatable.",
            rich_help_panel=METRICS,
        ),
    ] = None,
    batch_size: common.BatchSize = 64,
    run: Run = SEEDED_RUNTIME,
) -> None:
    """Write a static HTML report: the model's metrics, its dictionary health, and one card per concept.

    Each card lists the classes the concept is most relevant for (global relevance), shows its most
    activating sample rendered with the concept scaled by each --lambdas value, its --top most activating
    samples with the concept's heatmaps on them, and a badge when the concept is dead or a near duplicate
    of another (the health of `viscoin evaluate health`, on the test split). The page is DIR/index.html
    with its images in DIR/images/: no server and no network needed, open it in any browser, copy the
    folder anywhere. Metrics are computed as `viscoin evaluate` does (lighter: --samples 200, no
    consistency unless asked), or read with --metrics-json from an earlier `viscoin evaluate ... --json`;
    they are also written to DIR/metrics.json. --compare adds the table of `viscoin compare` for this model
    and the given ones (also written to DIR/comparison.json); --directions a table of unsupervised directions
    and the concepts they find (also in DIR/directions.json). Each card's sample indices link to the
    `viscoin explain` cards of its --explain most activating samples, written to DIR/explain/.

    Example: viscoin report --model runs/viscoin-cub/latest.safetensors --data-root ~/data/CUB_200_2011
    --out report-cub --concepts 0-31
    """
    from viscoin_cli.cli._parse import parse_floats, parse_indices

    given = o.explicit_options(ctx)
    if metrics_json is not None and "metrics" in given:
        raise UserError("pass --metrics or --metrics-json, not both")
    selected = [] if metrics_json is not None or metrics.strip() == "none" else parse_report_metrics(metrics)
    for value, option in ((top, "--top"), (top_classes, "--top-classes")):
        common.check_positive(value, option)
    if not 0 <= explain <= top:
        raise UserError(f"--explain {explain}: expected 0..{top} (the card's --top samples)")
    lambda_values = parse_floats(lambdas, "--lambdas")
    facts = common.read_model(model_path)
    shown = parse_indices(concepts, facts.num_concepts) if concepts else list(range(facts.num_concepts))
    options = MetricOptions(
        samples=samples,
        consistency_samples=consistency_samples,
        concepts=concepts,
        standardize=standardize,
        duplicate_threshold=duplicate_threshold,
    )
    settings = build_settings(options, facts, batch_size, run)
    models = plan_comparison(facts, compared, selected, metrics_json) if compared else None
    from viscoin_cli.interpret.direction_table import directions_method

    for path in directions or []:
        directions_method(path)  # a wrong file is refused before any work
    check_output_folder(out, "--out")

    from viscoin_cli.console import Progress, print_json
    from viscoin_cli.interpret.report import build_cards, render_html, write_html
    from viscoin_cli.io.checkpoint import sha256_file

    document = read_metrics_json(metrics_json, sha256_file(facts.path)) if metrics_json else None
    evaluation = open_model(facts, inputs, run, settings)
    evaluation.dataset(str(split))  # a missing --data-root fails before any metric runs
    if selected:
        document = evaluation.evaluate(selected)
    health, health_source = page_health(evaluation, document, metrics_json)
    comparison = None
    if models is not None and document is not None:
        source = f"--metrics-json {metrics_json}" if metrics_json else "computed"
        comparison = run_comparison(models, evaluation, document, source, inputs, run)
    out.mkdir(parents=True, exist_ok=True)
    consistency = (document or {}).get("metrics", {}).get("consistency", {}).get("per_concept")
    encoded = evaluation.encoded(str(split))
    with Progress(evaluation.console, len(shown), "concept cards") as progress:
        cards = build_cards(
            evaluation.model,
            encoded,
            evaluation.dataset(str(split)),
            shown,
            out,
            lambdas=lambda_values,
            top=top,
            top_classes=top_classes,
            batch_size=batch_size,
            autocast=evaluation.rt.autocast,
            consistency=consistency,
            health=health,
            on_concept=lambda _concept: progress.advance(1),
        )
    explained: dict[int, str] = {}
    if explain:
        from viscoin_cli.interpret.report import explain_cards

        wanted = list(dict.fromkeys(i for card in cards for i in card.top_samples[:explain]))
        with Progress(evaluation.console, len(wanted), "explain cards") as progress:
            explained = explain_cards(
                evaluation.model,
                evaluation.dataset(str(split)),
                str(split),
                wanted,
                out,
                evaluation.rt,
                top_k=min(EXPLAIN_TOP_K, facts.num_concepts),
                batch_size=batch_size,
                on_card=lambda _index: progress.advance(1),
            )
    paired = None
    if directions:
        from viscoin_cli.interpret.direction_table import pair_directions

        paired = pair_directions(
            directions,
            [facts.path],
            classifier=inputs.classifier,
            generator=inputs.generator,
            data_root=inputs.data_root,
            device=evaluation.rt.device,
            batch_size=batch_size,
            seed=run.seed,
            ground_truth="ground_truth" in ((document or {}).get("metrics") or {}),  # computed, or read
        )
    summary_doc = evaluation.document({})
    page = render_html(
        model=summary_doc["model"],
        dataset=summary_doc["dataset"],
        split=str(split),
        cards=cards,
        lambdas=lambda_values,
        top=top,
        metrics=document,
        metrics_source=str(metrics_json) if metrics_json else None,
        comparison=comparison,
        method=evaluation.model.method,
        health=health,
        health_source=health_source,
        class_names=evaluation.dataset(str(split)).class_names,
        explained=explained,
        directions=paired,
    )
    metrics_file = None
    if document is not None:
        metrics_file = out / "metrics.json"
        metrics_file.write_text(json.dumps(document, indent=2) + "\n")
    index = write_html(out, page)
    summary = {
        "index": str(index),
        "cards": len(cards),
        "images": 3 * len(cards),
        "explain_cards": len(explained),
        "metrics_json": str(metrics_file) if metrics_file else None,
        "health": {"dead": health["dead"]["count"], "duplicates": health["duplicates"]["count"]},
    }
    if comparison is not None:
        comparison_file = out / "comparison.json"
        comparison_file.write_text(json.dumps(comparison, indent=2) + "\n")
        summary["comparison_json"] = str(comparison_file)
    if paired is not None:
        directions_file = out / "directions.json"
        directions_file.write_text(json.dumps(paired, indent=2) + "\n")
        summary["directions_json"] = str(directions_file)
    if run.json_out:
        print_json(summary)
    else:
        typer.echo(f"report: {index} ({len(cards)} concept cards)")
