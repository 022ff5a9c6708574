"""The `viscoin` command-line app.

Each subcommand lives in its own module in this package and registers itself on `app` with
`@app.command(...)`; `main` imports every module here, so adding a command is adding one file.
Command modules import torch and the core only inside the command function: `viscoin --help`
must stay instant.
"""

from __future__ import annotations

import importlib
import pkgutil

from viscoin_cli.cli.app import app

_loaded = False


def load_commands() -> None:
    """Import every command module of this package so that each registers itself on `app`."""
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in ("app", "options"):
            importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def main() -> None:
    """Console-script entry point."""
    load_commands()
    app()


__all__ = ["app", "load_commands", "main"]
