"""Options shared by several commands, declared once so names, defaults and help stay consistent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli import choices
from viscoin_cli.data import EMBEDDED

RUNTIME = "Runtime"
DATA = "Data"
RUN = "Run folder"

Device = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto (cuda when available, else cpu), cpu, cuda or cuda:N.",
        rich_help_panel=RUNTIME,
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random generator.", rich_help_panel=RUNTIME)]
Precision = Annotated[
    choices.Precision,
    typer.Option(
        "--precision",
        help="fp32, or bf16 / fp16 mixed precision (autocast) on GPU.",
        rich_help_panel=RUNTIME,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Data-loading processes [default: 0 for digits and shapes, else up to 8].",
        rich_help_panel=RUNTIME,
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="Opt-in torch.compile of the networks that train (finetune-gan: G's synthesis network and D for "
        "the main phases, R1 and path length stay eager; train: the concept model's forward and f on the "
        "reconstructions). Same numbers as without it; faster steps on a GPU after a compile of a minute or "
        "more at the first iterations (CPU: needs a C++ compiler). A resumed run keeps it unless --no-compile.",
        rich_help_panel=RUNTIME,
    ),
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only errors and the final result.", rich_help_panel=RUNTIME)
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout (logs go to stderr).", rich_help_panel=RUNTIME),
]

Dataset = Annotated[
    choices.DatasetName,
    typer.Option(
        "--dataset",
        help="digits and shapes are built in and need no download; the others read --data-root.",
        rich_help_panel=DATA,
    ),
]
DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Dataset folder (all datasets but digits and shapes), in the dataset's official layout.",
        rich_help_panel=DATA,
    ),
]
Resolution = Annotated[
    int | None,
    typer.Option(
        "--resolution",
        help="Image size in pixels [default: 32 for digits and shapes, else 256].",
        rich_help_panel=DATA,
    ),
]
SkipBadImages = Annotated[
    bool,
    typer.Option(
        "--skip-bad-images",
        help="Skip unreadable images (counted) instead of stopping.",
        rich_help_panel=DATA,
    ),
]
BboxCrop = Annotated[
    bool,
    typer.Option("--bbox-crop", help="Crop to the annotated bounding boxes (cub, cars).", rich_help_panel=DATA),
]

Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Run folder to create [default: a new folder under checkpoints/runs/].",
        rich_help_panel=RUN,
    ),
]
Resume = Annotated[
    Path | None,
    typer.Option("--resume", help="Continue the run in this folder from its last checkpoint.", rich_help_panel=RUN),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Overwrite the run artefacts in a non-empty --out.", rich_help_panel=RUN),
]


def explicit_options(ctx: typer.Context) -> dict[str, Any]:
    """The options the user typed, with their values (defaults left out)."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return {
        name: ctx.params[name] for name, source in sources.items() if source is not None and source.name != "DEFAULT"
    }


def default_workers(dataset: str, workers: int | None) -> int:
    """Data-loading processes: none for the in-memory datasets (digits, shapes), else up to 8."""
    if workers is not None:
        return workers
    return 0 if dataset in EMBEDDED else min(8, os.cpu_count() or 1)


MODEL_HELP = "Trained concept model (from viscoin train: VisCoIN, FLINT or FLAEM) [default: the shipped digits model]."
Model = Annotated[Path, typer.Option("--model", help=MODEL_HELP, show_default=False)]
ClassifierPath = Annotated[
    Path,
    typer.Option("--classifier", help="Classifier f [default: the shipped digits classifier].", show_default=False),
]
GeneratorPath = Annotated[
    Path,
    typer.Option("--generator", help="Generator G [default: the shipped digits generator].", show_default=False),
]
