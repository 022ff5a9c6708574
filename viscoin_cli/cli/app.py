"""The Typer app, and the error handling every command shares."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from viscoin_cli import __version__
from viscoin_cli.errors import UserError, one_line

# Exit codes: 1 is a failed check (e.g. `evaluate --fail-under`), 2 a usage or input error.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# click's base of every argument-parsing error; typer exports only the BadParameter subclass, and newer typer
# vendors click (typer._click), so the base is found from there rather than imported from either package.
_UsageError = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")

PANELS = ("Train", "Generator", "Interpret", "Pipeline")  # the order of the sections of `viscoin --help`


class _Group(TyperGroup):
    """Runs a subcommand and turns user mistakes into one line on stderr and exit code 2.

    User mistakes are `UserError`s and click's own errors about a subcommand's arguments (a bad value,
    an out-of-range number, an unknown option): one line like any other, not click's usage box.

    `viscoin --help` is plain text (click's formatter, one section per panel): typer's rich help renderer
    costs ~0.1 s of imports, and the top-level help must stay instant. Subcommands keep rich help.
    """

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return sorted(super().list_commands(ctx))

    def format_help(self, ctx: typer.Context, formatter) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        self.format_options(ctx, formatter)  # also writes the commands (format_commands)
        self.format_epilog(ctx, formatter)

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        commands = [(name, self.commands[name]) for name in self.list_commands(ctx) if not self.commands[name].hidden]
        pad = max(len(name) for name, _ in commands)  # one column for every section
        for panel in sorted({c.rich_help_panel or "Commands" for _, c in commands}, key=_panel_order):
            rows = [
                (name.ljust(pad), command.get_short_help_str(limit=200))
                for name, command in commands
                if (command.rich_help_panel or "Commands") == panel
            ]
            with formatter.section(panel):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not getattr(command, "_escaped", False):
            _escape_help(command)
        return name, command, rest

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except _UsageError as err:
            if err.ctx is ctx:  # the group's own errors (no such command) keep click's usage box
                raise
            typer.echo(f"error: {one_line(err.format_message())}", err=True)  # a subcommand's bad argument
            ctx.exit(EXIT_USER_ERROR)
        except UserError as err:
            typer.echo(f"error: {one_line(err)}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _panel_order(panel: str) -> int:
    return PANELS.index(panel) if panel in PANELS else len(PANELS)


def _escape_help(command) -> None:
    """Help texts are plain text ("[default: ...]", "E[sign(...)]"): keep rich from reading them as markup."""
    from rich.markup import escape

    command.help = escape(command.help) if command.help else command.help
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
    command._escaped = True


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
