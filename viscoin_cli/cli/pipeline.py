"""`viscoin pipeline`: every stage from data to HTML report, each one the documented command.

The plan, the record and skip/resume live in `viscoin_cli.pipeline`; this module runs each stage's
`viscoin` command in-process (`_invoke`) and prints the summary.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import SEEDED_RUNTIME, Run, grouped
from viscoin_cli.cli.app import app

STAGES = "Stages"
EVAL = "Evaluation"


def _invoke(args: list[str]) -> tuple[int, str]:
    """Run `viscoin ARGS` in this process; its exit code and what it printed on stdout."""
    from typer.main import get_command

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = get_command(app).main(args=args, prog_name="viscoin", standalone_mode=False)
    return (code if isinstance(code, int) else 0), buffer.getvalue()


@app.command("pipeline", rich_help_panel="Pipeline")
@grouped
def pipeline(
    dataset: o.Dataset = "digits",
    data_root: o.DataRoot = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Pipeline folder [default: checkpoints/runs/pipeline-DATASET]."),
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option(
            "--classifier",
            help="Use this classifier and skip its training [default for digits and shapes: the shipped one].",
            rich_help_panel=STAGES,
        ),
    ] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="Use this generator and skip GAN training [default for digits and shapes: the shipped one].",
            rich_help_panel=STAGES,
        ),
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option(
            help="Train the classifier and the GAN too, instead of using shipped ones.", rich_help_panel=STAGES
        ),
    ] = False,
    classifier_epochs: Annotated[
        int | None, typer.Option(min=1, help="pretrain-classifier --epochs.", rich_help_panel=STAGES)
    ] = None,
    gan_kimg: Annotated[
        float | None, typer.Option(min=0.001, help="finetune-gan --kimg.", rich_help_panel=STAGES)
    ] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="train --iterations.", rich_help_panel=STAGES)] = None,
    concepts: Annotated[int | None, typer.Option(min=2, help="train --concepts (K).", rich_help_panel=STAGES)] = None,
    pairs: Annotated[
        int,
        typer.Option(min=1, help="Class-concept pairs to visualize (highest global relevance).", rich_help_panel=EVAL),
    ] = 5,
    faithfulness_samples: Annotated[
        int, typer.Option(min=1, help="evaluate --samples (faithfulness).", rich_help_panel=EVAL)
    ] = 1000,
    consistency_samples: Annotated[
        int, typer.Option(min=2, help="evaluate --consistency-samples (per concept and split).", rich_help_panel=EVAL)
    ] = 100,
    run: Run = SEEDED_RUNTIME,
) -> None:
    """Run everything: classifier -> GAN -> VisCoIN -> relevance -> visualize -> evaluate -> report.

    On digits and shapes it reuses the shipped classifier and generator and trains only VisCoIN (minutes
    on a CPU); --from-scratch trains every stage, --classifier/--generator bring your own. Each stage is the
    viscoin command recorded in DIR/pipeline.json; stages already done are skipped and an interrupted
    training stage resumes, so re-running the same command finishes an interrupted pipeline. Each stage
    shows its own progress (a bar with ETA on a terminal, a line every 10 s in a log); the run ends with
    a table of the stages and the headline numbers (accuracy of f and g, faithfulness beside random
    concepts, consistency).

    Example: viscoin pipeline --dataset digits --out runs/digits
    """
    from rich.console import Console
    from rich.table import Table

    from viscoin_cli import pipeline as pl
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.io.outputs import check_output_folder

    out = check_output_folder(out or pl.default_out(dataset), "--out")
    console = make_console(quiet=run.quiet or run.json_out)
    plan = pl.Plan(
        dataset=dataset,
        data_root=data_root,
        classifier=classifier,
        generator=generator,
        from_scratch=from_scratch,
        classifier_epochs=classifier_epochs,
        gan_kimg=gan_kimg,
        iterations=iterations,
        concepts=concepts,
        pairs=pairs,
        faithfulness_samples=faithfulness_samples,
        consistency_samples=consistency_samples,
        seed=run.seed,
    )
    # Runtime options may change between attempts; everything else is the pipeline's plan.
    runtime = pl.runtime_args(run.device, run.precision, run.workers, quiet=run.quiet or run.json_out)
    try:
        record = pl.run(out, pl.stages(out, plan), runtime, _invoke, console)
    except pl.StageFailed as failed:
        raise typer.Exit(failed.code) from None
    summary = pl.summary(out, record)
    if run.json_out:
        print_json(summary)
        return
    table = Table(title=f"pipeline {out}")
    for column in ("stage", "status", "seconds", "artefact"):
        table.add_column(column)
    for name, info in record["stages"].items():
        table.add_row(name, info["status"], f"{info.get('seconds', 0):.1f}", info.get("output", ""))
    Console().print(table)
    for line in pl.headline(summary.get("metrics", {})):
        typer.echo(line)
