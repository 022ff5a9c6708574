"""The one skeleton of the training commands (`pretrain-classifier`, `finetune-gan`, `train`).

resumed or new config (preset + typed options) -> runtime -> run folder -> options.json -> train ->
shut down -> print the result. A command module declares its options and calls `run_training`; the
trainer behind it takes its typed config and knows nothing of the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from viscoin_cli.choices import Precision
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import TrainingData, TrainingRun
from viscoin_cli.errors import UserError, one_line


def typed_fields(
    ctx: typer.Context, fields: dict[str, Any], parsers: dict[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """The config fields the user typed (the command's own options), as JSON values: paths as strings,
    option texts parsed."""
    typed = o.explicit_options(ctx)
    given = {name: value for name, value in fields.items() if name in typed}
    for name, value in given.items():
        given[name] = parsers[name](value) if name in parsers else str(value) if isinstance(value, Path) else value
    return given


def run_training(
    ctx: typer.Context,
    run: TrainingRun,
    fields: dict[str, Any],
    config_type: type,
    train: Callable[..., dict[str, Any]],
    *,
    name: str,
    describe: Callable[[dict[str, Any]], str],
    parsers: dict[str, Callable[[str], Any]] | None = None,
    prepare: Callable[[Any], Any] | None = None,
) -> None:
    """Run one training command: `run` is its run-folder and runtime options, `fields` its other options
    (the command function's `locals()`), which are the config's fields.

    `train(config, folder, rt, console, resume=...)` does the work and returns a JSON-ready summary;
    `describe(summary)` is what a person reads instead of the JSON; `prepare(config)` completes a new run's
    config from files it names (e.g. a fine-tuned generator's architecture), after the run folder is chosen
    and before options.json is written; `parsers` turn option texts into field values ("30,60" → [30, 60]).
    """
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.runtime import reports_failure, setup_runtime, shutdown_runtime
    from viscoin_cli.training.run import open_run

    values: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, TrainingData):  # an option group of config fields
            values.update(vars(value))
        elif key not in ("ctx", "run"):
            values[key] = value
    rt = folder = None
    try:
        given = typed_fields(ctx, values, parsers or {})
        resume = run.resume
        if resume is None:
            config = config_type.create(given)
        elif not (Path(resume) / "options.json").is_file():
            raise UserError(f"--resume {resume}: no run to resume (options.json missing)")
        else:
            config = config_type.resume(Path(resume) / "options.json", given)
        rt = setup_runtime(device=run.device, precision=run.precision, seed=config.seed)
        console = make_console(quiet=run.quiet, enabled=rt.is_main)
        folder, resuming = open_run(  # locks the folder (one run per folder) until folder.close() below
            rt, out=run.out, resume=resume, force=run.force, default_name=f"{name}-{config.dataset}"
        )
        if prepare is not None and not resuming:
            config = prepare(config)
        config = config.with_runtime(
            workers=o.default_workers(config.dataset, run.workers),
            device=str(rt.device),
            precision=Precision(rt.precision),
            world_size=rt.world_size,
        )
        if rt.is_main:
            config.write(folder.options)
        summary = train(config, folder, rt, console, resume=resuming)
    except (Exception, KeyboardInterrupt) as err:
        # Under torchrun one process's error ends the run: one process reports it (as any command's error is
        # reported), the others leave quietly; torchrun stops whichever still wait in a collective.
        if folder is not None:
            folder.close()
        if not reports_failure(rt):
            raise SystemExit(1) from None
        if rt is not None and rt.distributed and not rt.is_main and isinstance(err, UserError):
            raise UserError(f"rank {rt.rank}: {one_line(err)}") from None
        raise
    folder.close()
    shutdown_runtime(rt)
    if not rt.is_main:
        return
    if run.json_out:
        print_json(summary)
    else:
        typer.echo(describe(summary))
