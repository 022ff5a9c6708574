"""The `viscoin` command-line app.

Each subcommand lives in its own module in this package and registers itself on `app` with
`@app.command(...)`; `main` imports the modules named in `COMMAND_MODULES`, so adding a command is adding
its file and its name there. Helper modules (`options`, `_*.py`) are never imported as commands.
Command modules import torch and the core only inside the command function: `viscoin --help`
must stay instant.
"""

from __future__ import annotations

import importlib
import os

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
    # Before torch is imported (command modules import it lazily): tensors of 2 MB and more go on transparent
    # huge pages, so the large activations a StyleGAN2 step allocates and frees fault in 512x fewer pages. On
    # 2 CPU cores a paper256 G training step at 256 px takes 0.7x the time. A value the user set wins.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    load_commands()
    app()


__all__ = ["COMMAND_MODULES", "app", "load_commands", "main"]
