"""The Typer app, and the error handling every command shares."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from viscoin_cli import __version__
from viscoin_cli.errors import UserError

# Exit codes: 1 is a failed check (e.g. `evaluate --fail-under`), 2 a usage or input error.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _one_line(err: BaseException) -> str:
    """The message of `err` on one line.

    An exception raised in a DataLoader worker is re-raised in the main process with the worker's
    traceback glued into its message; the user only needs the last line of it.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        prefix = f"{type(err).__name__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last
    return " ".join(lines)


class _Group(TyperGroup):
    """Runs a subcommand and turns user mistakes into one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Help texts are plain text ("[default: ...]", "E[sign(...)]"): keep rich from reading them as markup.
        from rich.markup import escape

        for command in self.commands.values():
            command.help = escape(command.help) if command.help else command.help
            for param in command.params:
                if getattr(param, "help", None):
                    param.help = escape(param.help)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return sorted(self.commands)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            typer.echo(f"error: {_one_line(err)}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


app = typer.Typer(
    name="viscoin",
    cls=_Group,
    help="Concept-based interpretation of vision classifiers with VisCoIN and StyleGAN2-ADA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"viscoin {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Concept-based interpretation of vision classifiers with VisCoIN and StyleGAN2-ADA.

    Images are [-1, 1] everywhere, checkpoints are self-describing safetensors files, and every
    training command writes a run folder that `--resume` continues. `viscoin COMMAND --help` for details.
    """
