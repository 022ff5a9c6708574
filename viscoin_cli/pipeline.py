"""Every stage from data to HTML report, each one the documented `viscoin` command (behind `viscoin pipeline`).

Each stage runs the same `viscoin` command a user would type (recorded in DIR/pipeline.json), so the
pipeline adds no second code path. A stage whose output is recorded as done is skipped; a training stage
that was interrupted continues with its own `--resume`; so running the same command again finishes an
interrupted pipeline. The commands run through an `invoke(args) -> (exit code, stdout)` the caller gives,
so this module does not depend on the CLI that runs it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from viscoin_cli.errors import UserError
from viscoin_cli.shipped import shipped_file

Invoke = Callable[[list[str]], tuple[int, str]]


@dataclass(frozen=True)
class Plan:
    """What the pipeline makes, and how long each training stage runs (None: the command's default)."""

    dataset: str = "digits"
    data_root: Path | None = None
    classifier: Path | None = None  # given: its training is skipped
    generator: Path | None = None
    from_scratch: bool = False
    classifier_epochs: int | None = None
    gan_kimg: float | None = None
    iterations: int | None = None
    concepts: int | None = None
    pairs: int = 5
    faithfulness_samples: int = 1000
    consistency_samples: int = 100
    seed: int = 0


@dataclass
class Stage:
    name: str
    output: Path  # what the stage leaves behind; later stages read it
    args: list[str] = field(default_factory=list)  # the viscoin command; empty when the output is given
    run_folder: Path | None = None  # training stages: resumable with --resume
    capture: Path | None = None  # write the command's --json stdout here
    source: str = "run"  # run | given | shipped
    length: list[str] = field(default_factory=list)  # e.g. ["--iterations", "500"]: also passed on --resume


class StageFailed(Exception):
    """A stage's command exited with `code` (having printed its own one-line error)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def default_out(dataset: str) -> Path:
    return Path("checkpoints") / "runs" / f"pipeline-{dataset}"


def runtime_args(device: str, precision: str, workers: int | None, quiet: bool = False) -> list[str]:
    """The options every stage gets that may change between attempts (not part of the plan). A stage shows
    its own progress (a bar with ETA on a terminal, a plain line every few seconds in a log) unless quiet."""
    return (
        ["--device", device, "--precision", precision]
        + (["--workers", str(workers)] if workers is not None else [])
        + (["--quiet"] if quiet else [])
    )


def _length(option: str, value: float | None) -> list[str]:
    """A training stage's length option, when given (else the command's default)."""
    return [option, str(value)] if value else []


def stages(out: Path, plan: Plan) -> list[Stage]:
    """classifier -> GAN -> VisCoIN -> relevance -> visualize -> evaluate -> report, as viscoin commands."""
    common = ["--seed", str(plan.seed)]
    root = ["--data-root", str(plan.data_root)] if plan.data_root else []
    data = ["--dataset", plan.dataset, *root]
    shipped = not plan.from_scratch

    def trained(name: str, command: str, output: str, extra: list[str], length: list[str]) -> Stage:
        folder = out / name
        args = [command, *extra, *data, "--out", str(folder), *common, "--json", *length]
        return Stage(name, folder / output, args, folder, folder / "summary.json", length=length)

    def parent(name: str, given: Path | None, role: str, command: str, output: str, length: list[str]) -> Stage:
        """f or G: the given file, the shipped one (an embedded dataset's), or trained."""
        default = shipped_file(plan.dataset, role)
        if given is None and shipped and default is not None:
            return Stage(name, default, source="shipped")
        if given is not None:
            return Stage(name, given, source="given")
        return trained(name, command, output, [], length)

    f = parent(
        "classifier",
        plan.classifier,
        "classifier",
        "pretrain-classifier",
        "best.safetensors",
        _length("--epochs", plan.classifier_epochs),
    )
    g = parent(
        "gan", plan.generator, "generator", "finetune-gan", "latest.safetensors", _length("--kimg", plan.gan_kimg)
    )
    parents = ["--classifier", str(f.output), "--generator", str(g.output)]
    viscoin = trained("viscoin", "train", "latest.safetensors", parents, _length("--iterations", plan.iterations))
    viscoin.args += ["--concepts", str(plan.concepts)] if plan.concepts else []
    model = viscoin.output
    reading = ["--model", str(model), *root]
    metrics = out / "metrics.json"
    evaluation = ["--samples", str(plan.faithfulness_samples), "--consistency-samples", str(plan.consistency_samples)]
    concepts = out / "concepts"
    return [
        f,
        g,
        viscoin,
        Stage(
            "relevance",
            out / "relevance.json",
            ["relevance", *reading, "--csv", str(out / "relevance.csv"), "--json"],
            capture=out / "relevance.json",
        ),
        Stage(
            "visualize",
            concepts,
            ["visualize", *reading, "--top-pairs", str(plan.pairs), "--out", str(concepts), "--json"],
            capture=out / "concepts.json",
        ),
        Stage("evaluate", metrics, ["evaluate", "all", *reading, *common, "--json", *evaluation], capture=metrics),
        Stage(
            "report",
            out / "report" / "index.html",
            ["report", *reading, *common, *evaluation, "--metrics-json", str(metrics), "--out", str(out / "report")],
        ),
    ]


def record_path(out: Path) -> Path:
    return out / "pipeline.json"


def load_record(out: Path) -> dict[str, Any]:
    """What earlier runs into `out` did: their plan and each stage's status."""
    path = record_path(out)
    if not path.is_file():
        return {"stages": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable pipeline record ({err}); remove it to start over") from None


def save_record(out: Path, record: dict[str, Any]) -> None:
    """Written atomically after each stage, so an interrupted pipeline knows what it finished."""
    path = record_path(out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def command(stage: Stage, runtime: list[str]) -> list[str]:
    """The stage's command, or `--resume` of its run folder when an earlier attempt left a checkpoint."""
    folder = stage.run_folder
    if folder is None or not folder.exists():
        return [*stage.args, *runtime]
    if (folder / "latest.state.safetensors").is_file():
        return [stage.args[0], "--resume", str(folder), *stage.length, *runtime, "--json"]
    return [*stage.args, *runtime, "--force"]  # a folder with nothing to resume from: start it again


def _check_plan(out: Path, record: dict[str, Any], plan: dict[str, list[str]]) -> None:
    """An earlier run into `out` with other settings is refused rather than mixed with this one."""
    if record.get("plan") and record["plan"] != plan:
        changed = [name for name in plan if record["plan"].get(name) != plan[name]]
        raise UserError(
            f"{out} holds a pipeline run with other settings (stage {changed[0]}); "
            "use the same options, another --out, or remove the folder"
        )


def run(out: Path, stages: list[Stage], runtime: list[str], invoke: Invoke, console: Console) -> dict[str, Any]:
    """Run the stages not done yet, recording each in DIR/pipeline.json; the record. StageFailed if one fails."""
    for stage in stages:
        if stage.source != "run" and not stage.output.is_file():
            raise UserError(f"{stage.output}: no such {stage.name} checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    record = load_record(out)
    plan = {stage.name: stage.args for stage in stages}
    _check_plan(out, record, plan)
    record["plan"] = plan
    save_record(out, record)

    started = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        done = record["stages"].get(stage.name, {})
        position = f"[{number}/{len(stages)}] {stage.name}"
        if stage.source != "run":
            console.print(f"{position}: the {stage.source} {stage.output}")
            record["stages"][stage.name] = {"status": stage.source, "seconds": 0.0, "output": str(stage.output)}
        elif str(done.get("status", "")).startswith("done") and stage.output.exists():  # also "done (earlier run)"
            console.print(f"{position}: done in an earlier run")
            record["stages"][stage.name] = {**done, "status": "done (earlier run)"}
        else:  # the stage's own output (its progress bar) follows its command line
            record["stages"][stage.name] = _run_stage(out, record, stage, runtime, invoke, console, position)
        save_record(out, record)
    record["seconds"] = round(time.perf_counter() - started, 2)
    save_record(out, record)
    return record


def _run_stage(
    out: Path, record: dict[str, Any], stage: Stage, runtime: list[str], invoke: Invoke, console: Console, position: str
) -> dict[str, Any]:
    """Run one stage's command; its entry in the record (a failure is recorded before StageFailed)."""
    args = command(stage, runtime)
    console.print(f"{position}: viscoin {' '.join(args)}", soft_wrap=True)
    t0 = time.perf_counter()
    code, stdout = invoke(args)
    if code != 0:  # the stage printed its own one-line error
        record["stages"][stage.name] = {"status": "failed", "command": args}
        save_record(out, record)
        raise StageFailed(code)
    if stage.capture is not None:
        stage.capture.parent.mkdir(parents=True, exist_ok=True)
        if stage.capture.name == "metrics.json":  # made to be shared: no path of this machine in it
            from viscoin_cli.metrics.evaluation import portable_json

            stdout = portable_json(stdout, stage.capture.parent)
        stage.capture.write_text(stdout)
    return {
        "status": "done",
        "seconds": round(time.perf_counter() - t0, 2),
        "output": str(stage.output),
        "command": ["viscoin", *args],
    }


def headline(metrics: dict[str, Any]) -> list[str]:
    """The numbers a user looks for first, one line each, from an `evaluate all --json` document."""
    found = metrics.get("metrics", {})
    lines = []
    if accuracy := found.get("accuracy"):
        lines.append(
            f"accuracy: f {_percent(accuracy.get('f'))}, g {_percent(accuracy.get('g'))} "
            f"(g agrees with f on {_percent(accuracy.get('agreement'))})"
        )
    faithfulness = found.get("faithfulness", {})
    for tau in (
        ("0.2",) if "0.2" in faithfulness else [k for k in faithfulness if isinstance(faithfulness[k], dict)][:1]
    ):
        drop = faithfulness[tau]
        lines.append(
            f"faithfulness (τ = {tau}): median drop {_number(drop.get('median'))}, "
            f"random concepts {_number(drop.get('random_median'))}"
        )
    if consistency := found.get("consistency"):
        lines.append(
            f"consistency (λ = {consistency.get('lambda')}): {_number(consistency.get('mean'))} ± "
            f"{_number(consistency.get('std'))} over {consistency.get('concepts')} concepts"
        )
    if reconstruction := found.get("reconstruction"):
        lines.append(
            f"reconstruction: MSE {_number(reconstruction.get('mse'), 4)}, FID {_number(reconstruction.get('fid'), 2)}"
        )
    return lines


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "n/a"


def _number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def summary(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The `--json` document: the folder, the time, each stage, and the metrics when they were computed."""
    document = {"out": str(out), "seconds": record["seconds"], "stages": record["stages"]}
    metrics = out / "metrics.json"
    if metrics.is_file():
        document["metrics"] = json.loads(metrics.read_text())
    return document
