"""`viscoin compare`: the paper's comparison table for several concept models (VisCoIN, FLINT, FLAEM) on
the same classifier and test split, with paired numbers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli._evaluation import MetricOptions, build_settings, open_model
from viscoin_cli.cli._groups import SEEDED_RUNTIME, OptionGroup, Run, grouped
from viscoin_cli.cli.app import app
from viscoin_cli.cli.evaluate import CONSIST, METRIC_OPTIONS
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_MODEL, SHIPPED_BASELINES

if TYPE_CHECKING:
    from collections.abc import Callable

    from viscoin_cli.interpret.compare import Model
    from viscoin_cli.metrics.evaluation import Evaluation, Settings

TABLE = "Table"
# evaluate's metric options but --lambda: the comparison measures consistency at each --consistency-lambdas
# (and --duplicate-threshold: health is no row of the table)
COMPARE_METRIC_OPTIONS = OptionGroup(
    MetricOptions, tuple(p for p in METRIC_OPTIONS.parameters if p.name not in ("lam", "duplicate_threshold"))
)

ConsistencyLambdas = Annotated[
    str,
    typer.Option(
        "--consistency-lambdas",
        help="λ values at which consistency is measured, a row each (the paper: 2 and 4).",
        rich_help_panel=CONSIST,
    ),
]


def parse_consistency_lambdas(text: str) -> list[float]:
    """Distinct finite λ values, in the given order."""
    from viscoin_cli.cli._parse import parse_floats

    values = parse_floats(text, "--consistency-lambdas")
    if len({f"{v:g}" for v in values}) != len(values):
        raise UserError(f"--consistency-lambdas {text!r}: a λ is repeated")
    return values


def opener(
    inputs: common.Inputs, run: Run, settings: Settings
) -> Callable[[Model, Path | None, Path | None], Evaluation]:
    """How the comparison opens a model for evaluation: as `viscoin evaluate` does (seeded runtime, the
    given data), with the parents the comparison resolved for that model."""

    def open_one(model: Model, classifier: Path | None, generator: Path | None) -> Evaluation:
        facts = common.read_model(model.path)
        return open_model(facts, replace(inputs, classifier=classifier, generator=generator), run, settings)

    return open_one


def read_models(paths: list[Path]) -> list[Model]:
    """The models' headers, checked (a missing file, a wrong kind, a model given twice) before any work."""
    from viscoin_cli.interpret.compare import read_model

    seen: dict[Path, Path] = {}
    for path in paths:
        common.read_model(path)  # its dataset facts and K recorded, with the usual one-line errors
        earlier = seen.get(path.resolve())
        if earlier is not None:
            raise UserError(f"{path}: given twice" + (f" (as {earlier})" if earlier != path else ""))
        seen[path.resolve()] = path
    return [read_model(path) for path in paths]


@app.command("compare", rich_help_panel="Interpret")
@grouped
def compare(
    model_paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Trained concept models (viscoin train --method viscoin, flint or flaem) on the same f "
            "[default: the shipped digits VisCoIN, FLINT and FLAEM].",
            show_default=False,
            metavar="MODEL",
        ),
    ] = None,
    inputs: common.Inputs = common.INPUTS,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="accuracy, reconstruction, faithfulness, consistency, all (those four), ground-truth (not in all: "
            "needs a dataset with attribute labels, e.g. shapes), visualization-fid (never in all: slow with AM), "
            "or a comma list.",
            rich_help_panel=TABLE,
        ),
    ] = "all",
    metrics_json: Annotated[
        list[Path] | None,
        typer.Option(
            "--metrics-json",
            help="A `viscoin evaluate --json` output to read instead of computing (matched to its model by sha256; "
            "computed with the same settings). Repeatable.",
            rich_help_panel=TABLE,
        ),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also write the table as CSV: a row per number, a column per model.", rich_help_panel=TABLE
        ),
    ] = None,
    metric_options: MetricOptions = COMPARE_METRIC_OPTIONS,
    consistency_lambdas: ConsistencyLambdas = "2,4",
    stability: Annotated[
        bool,
        typer.Option(
            "--stability",
            help="Also match each pair of models' concepts one to one (Hungarian, on the correlation of their "
            "pooled test activations) and report the mean matched correlation and the share of matches with "
            "r ≥ 0.5: do two runs (e.g. two seeds) find the same concepts? Opens every model.",
            rich_help_panel=TABLE,
        ),
    ] = False,
    directions: Annotated[
        list[Path] | None,
        typer.Option(
            "--directions",
            help="A `viscoin directions gan` or `directions classifier` checkpoint: pair its directions with "
            "every model's concepts (gan: the concept each direction's shift changes most on G's images; "
            "classifier: the concept whose activation correlates most with the direction's read-out). Repeatable.",
            rich_help_panel=TABLE,
        ),
    ] = None,
    batch_size: common.BatchSize = 64,
    run: Run = SEEDED_RUNTIME,
) -> None:
    """Compare concept models in one table (paper §4.1): a column per model, a row per metric.

    Rows: accuracy of f and of the model, reconstruction MSE, LPIPS and FID, faithfulness at each τ
    beside its random baseline, consistency at each --consistency-lambdas value as mean ± std, and the
    visualisation FID when an evaluation document has it; with ground-truth among --metrics (a dataset with
    attribute labels, e.g. shapes), the mean best concept AUC per attribute value, how many values a concept
    captures and the render flip rate (as `viscoin evaluate ground-truth`); with --stability, a second
    table: per pair of models, how well their concepts match one to one; with --directions, a table per
    directions file: a row per direction, the concept it finds in each model (and, with ground-truth among
    --metrics, the attribute value it finds: AUC for classifier directions, the shift test's flip rate for
    generator directions). Every model is evaluated as
    `viscoin evaluate` does, with the same --seed, --samples and consistency samples, so the numbers are
    paired: each equals what `viscoin evaluate` prints for that model with the same options. --metrics-json
    reads earlier `evaluate --json` outputs instead (only what they lack is computed); they must have been computed with
    the same settings. Models that explain different classifiers f or were trained on different test
    splits are refused.

    Example: viscoin compare runs/viscoin-cub/latest.safetensors runs/flint-cub/latest.safetensors
    runs/flaem-cub/latest.safetensors --data-root ~/data/CUB_200_2011 --csv table.csv
    """
    from viscoin_cli.cli._evaluation import parse_metric_names
    from viscoin_cli.io.outputs import check_output_file

    model_paths = model_paths or [DEFAULT_MODEL, *SHIPPED_BASELINES]
    if len(model_paths) < 2:
        raise UserError("compare needs at least two models")
    selected = parse_metric_names(metrics, "--metrics")
    lambdas = parse_consistency_lambdas(consistency_lambdas)
    models = read_models(model_paths)
    smallest = common.read_model(min(models, key=lambda m: m.num_concepts).path)  # --concepts fits every model
    settings = build_settings(metric_options, smallest, batch_size, run)
    if csv_path is not None:
        check_output_file(csv_path, "--csv", (".csv",))
    from viscoin_cli.interpret.direction_table import directions_method

    for path in directions or []:
        directions_method(path)  # a wrong file is refused before any work

    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.interpret.compare import compare as compare_models
    from viscoin_cli.interpret.compare import match_documents, write_csv

    document = compare_models(
        models,
        metrics=selected,
        settings=settings,
        open_model=opener(inputs, run, settings),
        lambdas=lambdas,
        documents=match_documents(models, metrics_json or []),
        classifier=inputs.classifier,
        generator=inputs.generator,
        console=make_console(quiet=run.quiet or run.json_out),
        stability=stability,
    )
    if directions:
        from viscoin_cli.interpret.direction_table import pair_directions
        from viscoin_cli.runtime import select_device

        document["directions"] = pair_directions(
            directions,
            model_paths,
            classifier=inputs.classifier,
            generator=inputs.generator,
            data_root=inputs.data_root,
            device=select_device(run.device),
            batch_size=batch_size,
            seed=run.seed,
            ground_truth="ground_truth" in selected,
        )
    if csv_path is not None:
        write_csv(document, csv_path)
    if run.json_out:
        print_json(document)
    else:
        print_table(document)


def print_table(document: dict[str, Any]) -> None:
    """The comparison as a rich table on stdout, the best value of each row in bold."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from viscoin_cli.interpret.compare import best, cells, row_label, settings_line

    data, f = document["dataset"], document["classifier"]["sha256"]
    title = f"{data['name']} {data['resolution']} px, classifier f {f[:12]}"
    table = Table(title=Text(title), caption=Text(settings_line(document)))
    table.add_column("metric")
    for model in document["models"]:
        table.add_column(Text(f"{model['method']}\n{model['label']}"), justify="right")
    for row in document["rows"]:
        winners = best(row)
        shown = [Text(text, style="bold" if i in winners else "") for i, text in enumerate(cells(row))]
        table.add_row(Text(row_label(row)), *shown)
    Console(soft_wrap=False).print(table)
    if "stability" in document:
        print_stability(document)
    for entry in document.get("directions", []):
        print_directions(entry, document)


def print_directions(entry: dict[str, Any], document: dict[str, Any]) -> None:
    """A directions file against the models: a row per direction, the concept it finds in each model."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from viscoin_cli.interpret.compare import headings
    from viscoin_cli.interpret.direction_table import columns, direction_rows, direction_summary, title

    table = Table(title=Text(title(entry)), caption=Text("\n".join(direction_summary(entry))))
    for column in columns(entry, headings(document)):
        table.add_column(Text(column), justify="left")
    for row in direction_rows(entry):
        table.add_row(*(Text(cell) for cell in row))
    Console(soft_wrap=False).print(table)


def print_stability(document: dict[str, Any]) -> None:
    """A row per pair of models: their concepts matched one to one, and how well the matches correlate."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from viscoin_cli.interpret.compare import headings

    names, stability = headings(document), document["stability"]
    above = f"matched_above_{stability['threshold']:g}"
    table = Table(title=Text("concept stability: Hungarian matching on the correlation of pooled test activations"))
    for column in ("model a", "model b", "matched", "mean matched r", f"share r ≥ {stability['threshold']:g}"):
        table.add_column(Text(column), justify="left" if column.startswith("model") else "right")
    for pair in stability["pairs"]:
        mean = pair["mean_matched_correlation"]
        shown = "—" if mean is None else f"{mean:.4f}"
        share = "—" if pair[above] is None else f"{pair[above]:.4f}"
        table.add_row(Text(names[pair["a"]]), Text(names[pair["b"]]), str(pair["matched"]), shown, share)
    Console(soft_wrap=False).print(table)
