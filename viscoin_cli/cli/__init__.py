"""The `viscoin` command-line app.

Each subcommand lives in its own module in this package and registers itself on `app` with
`@app.command(...)`; `main` imports the modules named in `COMMAND_MODULES`, so adding a command is adding
its file and its name there. Helper modules (`options`, `_*.py`) are never imported as commands.
Command modules import torch and the core only inside the command function: `viscoin --help`
must stay instant.
"""

from __future__ import annotations

import importlib

from viscoin_cli import prefer_huge_pages
from viscoin_cli.cli.app import app

COMMAND_MODULES = (
    "compare",
    "directions",
    "evaluate",
    "explain",
    "finetune_gan",
    "generate",
    "import_gan",
    "pipeline",
    "pretrain_classifier",
    "relevance",
    "report",
    "serve",
    "train",
    "visualize",
)

_loaded = False


def load_commands() -> None:
    """Import the command modules so that each registers itself on `app`."""
    global _loaded
    if _loaded:
        return
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True


def main() -> None:
    """Console-script entry point."""
    prefer_huge_pages()  # before torch loads: command modules import it lazily
    load_commands()
    app()


__all__ = ["COMMAND_MODULES", "app", "load_commands", "main"]
