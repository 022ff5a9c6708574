"""`viscoin pipeline`: every stage from data to HTML report, each one the documented command.

Each stage runs the same `viscoin` command a user would type (recorded in DIR/pipeline.json), so the
pipeline adds no second code path. A stage whose output is recorded as done is skipped; a training stage
that was interrupted continues with its own `--resume`; so running the same command again finishes an
interrupted pipeline.
"""

from __future__ import annotations

import io
import json
import os
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_CLASSIFIER, DEFAULT_GENERATOR

STAGES = "Stages"
EVAL = "Evaluation"


@dataclass
class Stage:
    name: str
    output: Path  # what the stage leaves behind; later stages read it
    args: list[str] = field(default_factory=list)  # the viscoin command; empty when the output is given
    run_folder: Path | None = None  # training stages: resumable with --resume
    capture: Path | None = None  # write the command's --json stdout here
    source: str = "run"  # run | given | shipped
    length: list[str] = field(default_factory=list)  # e.g. ["--iterations", "500"]: also passed on --resume


def _record_path(out: Path) -> Path:
    return out / "pipeline.json"


def _load_record(out: Path) -> dict[str, Any]:
    path = _record_path(out)
    if not path.is_file():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable pipeline record ({err}); remove it to start over") from None


def _save_record(out: Path, record: dict[str, Any]) -> None:
    path = _record_path(out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _invoke(args: list[str]) -> tuple[int, str]:
    """Run `viscoin ARGS` in this process; its exit code and what it printed on stdout."""
    from typer.main import get_command

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = get_command(app).main(args=args, prog_name="viscoin", standalone_mode=False)
    return (code if isinstance(code, int) else 0), buffer.getvalue()


def _command(stage: Stage, runtime: list[str]) -> list[str]:
    """The stage's command, or `--resume` of its run folder when an earlier attempt left a checkpoint."""
    folder = stage.run_folder
    if folder is None or not folder.exists():
        return [*stage.args, *runtime]
    if (folder / "latest.state.safetensors").is_file():
        return [stage.args[0], "--resume", str(folder), *stage.length, *runtime, "--json"]
    return [*stage.args, *runtime, "--force"]  # a folder with nothing to resume from: start it again


@app.command("pipeline", rich_help_panel="Pipeline")
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
            help="Use this classifier and skip its training [default for digits: the shipped one].",
            rich_help_panel=STAGES,
        ),
    ] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="Use this generator and skip GAN training [default for digits: the shipped one].",
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
    device: o.Device = "auto",
    seed: o.Seed = 0,
    precision: o.Precision = "fp32",
    workers: o.Workers = None,
    quiet: o.Quiet = False,
    json_out: o.Json = False,
) -> None:
    """Run everything: classifier -> GAN -> VisCoIN -> relevance -> visualize -> evaluate -> report.

    On digits it reuses the shipped classifier and generator and trains only VisCoIN (minutes on a
    CPU); --from-scratch trains every stage, --classifier/--generator bring your own. Each stage is the
    viscoin command recorded in DIR/pipeline.json; stages already done are skipped and an interrupted
    training stage resumes, so re-running the same command finishes an interrupted pipeline.

    Example: viscoin pipeline --dataset digits --out runs/digits
    """
    from rich.table import Table

    from viscoin_cli.console import Progress, make_console, print_json

    out = out or Path("checkpoints") / "runs" / f"pipeline-{dataset}"
    console = make_console(quiet=quiet or json_out)
    # Runtime options may change between attempts; everything else is the pipeline's plan.
    runtime = ["--device", device, "--precision", precision, "--quiet"]
    runtime += ["--workers", str(workers)] if workers is not None else []
    common = ["--seed", str(seed)]
    data = ["--dataset", dataset] + (["--data-root", str(data_root)] if data_root else [])

    stages: list[Stage] = []
    if classifier is None and dataset == "digits" and not from_scratch and DEFAULT_CLASSIFIER.is_file():
        stages.append(Stage("classifier", DEFAULT_CLASSIFIER, source="shipped"))
    elif classifier is not None:
        stages.append(Stage("classifier", classifier, source="given"))
    else:
        folder = out / "classifier"
        length = ["--epochs", str(classifier_epochs)] if classifier_epochs else []
        args = ["pretrain-classifier", *data, "--out", str(folder), *common, "--json", *length]
        stages.append(
            Stage("classifier", folder / "best.safetensors", args, folder, folder / "summary.json", length=length)
        )
    if generator is None and dataset == "digits" and not from_scratch and DEFAULT_GENERATOR.is_file():
        stages.append(Stage("gan", DEFAULT_GENERATOR, source="shipped"))
    elif generator is not None:
        stages.append(Stage("gan", generator, source="given"))
    else:
        folder = out / "gan"
        length = ["--kimg", str(gan_kimg)] if gan_kimg else []
        args = ["finetune-gan", *data, "--out", str(folder), *common, "--json", *length]
        stages.append(Stage("gan", folder / "latest.safetensors", args, folder, folder / "summary.json", length=length))
    f_path, g_path = stages[0].output, stages[1].output
    folder = out / "viscoin"
    model = folder / "latest.safetensors"
    args = ["train", "--classifier", str(f_path), "--generator", str(g_path), *data, "--out", str(folder)]
    length = ["--iterations", str(iterations)] if iterations else []
    args += [*common, "--json", *length]
    args += ["--concepts", str(concepts)] if concepts else []
    stages.append(Stage("viscoin", model, args, folder, folder / "summary.json", length=length))
    reading = ["--model", str(model), *(["--data-root", str(data_root)] if data_root else [])]
    metrics = out / "metrics.json"
    evaluation = ["--samples", str(faithfulness_samples), "--consistency-samples", str(consistency_samples)]
    stages += [
        Stage(
            "relevance",
            out / "relevance.json",
            ["relevance", *reading, "--csv", str(out / "relevance.csv"), "--json"],
            capture=out / "relevance.json",
        ),
        Stage(
            "visualize",
            out / "concepts",
            ["visualize", *reading, "--top-pairs", str(pairs), "--out", str(out / "concepts"), "--json"],
            capture=out / "concepts.json",
        ),
        Stage(
            "evaluate",
            metrics,
            ["evaluate", "all", *reading, *common, "--json", *evaluation],
            capture=metrics,
        ),
        Stage(
            "report",
            out / "report" / "index.html",
            ["report", *reading, *common, *evaluation, "--metrics-json", str(metrics), "--out", str(out / "report")],
        ),
    ]

    for stage in stages:
        if stage.source != "run" and not stage.output.is_file():
            raise UserError(f"{stage.output}: no such {stage.name} checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    record = _load_record(out)
    plan = {stage.name: stage.args for stage in stages}
    if record.get("plan") and record["plan"] != plan:
        changed = [name for name in plan if record["plan"].get(name) != plan[name]]
        raise UserError(
            f"{out} holds a pipeline run with other settings (stage {changed[0]}); "
            "use the same options, another --out, or remove the folder"
        )
    record["plan"] = plan
    _save_record(out, record)

    started = time.perf_counter()
    with Progress(console, len(stages), f"pipeline {out}") as progress:
        for stage in stages:
            done = record["stages"].get(stage.name, {})
            if stage.source != "run":
                record["stages"][stage.name] = {"status": stage.source, "seconds": 0.0, "output": str(stage.output)}
            elif done.get("status") == "done" and stage.output.exists():
                record["stages"][stage.name] = {**done, "status": "done (earlier run)"}
            else:
                args = _command(stage, runtime)
                progress.advance(0, stage=stage.name)
                console.print(f"{stage.name}: viscoin {' '.join(args)}")
                t0 = time.perf_counter()
                code, stdout = _invoke(args)
                if code != 0:  # the stage printed its own one-line error
                    record["stages"][stage.name] = {"status": "failed", "command": args}
                    _save_record(out, record)
                    raise typer.Exit(code)
                if stage.capture is not None:
                    stage.capture.parent.mkdir(parents=True, exist_ok=True)
                    stage.capture.write_text(stdout)
                record["stages"][stage.name] = {
                    "status": "done",
                    "seconds": round(time.perf_counter() - t0, 2),
                    "output": str(stage.output),
                    "command": ["viscoin", *args],
                }
            _save_record(out, record)
            progress.advance(1, stage=stage.name)
    record["seconds"] = round(time.perf_counter() - started, 2)
    _save_record(out, record)

    summary = {"out": str(out), "seconds": record["seconds"], "stages": record["stages"]}
    if metrics.is_file():
        summary["metrics"] = json.loads(metrics.read_text())
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"pipeline {out}")
    for column in ("stage", "status", "seconds", "artefact"):
        table.add_column(column)
    for name, info in record["stages"].items():
        table.add_row(name, info["status"], f"{info.get('seconds', 0):.1f}", info.get("output", ""))
    from rich.console import Console

    Console().print(table)
