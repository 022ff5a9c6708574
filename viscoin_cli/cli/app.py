"""The Typer app, and the error handling every command shares."""

from __future__ import annotations

import difflib
import inspect
import os
import re
import time
from typing import NoReturn

import typer
from typer.core import TyperGroup

from viscoin_cli import __version__
from viscoin_cli.errors import QUIET_EXIT_WAIT_S, UserError, one_line

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
        pad = max((len(name) for name, _ in commands), default=0)  # one column for every section
        for panel in sorted({c.rich_help_panel or "Commands" for _, c in commands}, key=_panel_order):
            rows = [
                (name.ljust(pad), command.get_short_help_str(limit=200))
                for name, command in commands
                if (command.rich_help_panel or "Commands") == panel
            ]
            with formatter.section(panel):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
            hint = f"did you mean {close[0]}?" if close else f"see {ctx.command_path} --help"
            raise _UsageError(f"no such command {args[0]!r} ({hint})", ctx=ctx)
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not getattr(command, "_tidied", False):
            _tidy_help(command, ctx)
        return name, command, rest

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # plain `viscoin`: the help, as asked
                raise
            _fail(ctx, _usage_line(err), usage=True)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except _UsageError as err:  # a bad argument, an unknown option or command
            _fail(ctx, _usage_line(err), usage=True)
        except UserError as err:
            _fail(ctx, one_line(err))
        except OSError as err:
            if err.filename is None:  # not about a file the user named: a bug, keep the traceback
                raise
            # a file the user named cannot be read or written (permissions, a full disk, a file where a
            # folder goes...): their environment, not a bug
            _fail(ctx, f"{err.filename}: {err.strerror or one_line(err)}")
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _fail(ctx: typer.Context, message: str, *, usage: bool = False) -> NoReturn:
    """One `error: ...` line and exit code 2. A `usage` error (click's: the command line itself) is the same in
    every process of a torchrun, so a process other than rank 0 exits without it; under torchrun it waits a
    little first, so that its exit does not make torchrun stop rank 0 before rank 0 has said it."""
    if usage and os.environ.get("RANK", "0") != "0":
        if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun's worker: rank 0's exit ends this wait
            time.sleep(QUIET_EXIT_WAIT_S)
        ctx.exit(EXIT_USER_ERROR)
    typer.echo(f"error: {message}", err=True)
    ctx.exit(EXIT_USER_ERROR)
    raise AssertionError("unreachable")  # ctx.exit raises


def _usage_line(err) -> str:
    """click's usage error as one line; an unknown option names its closest match."""
    if type(err).__name__ == "NoSuchOption":
        close = list(getattr(err, "possibilities", None) or [])  # click's, closest first
        command = err.ctx.command_path if err.ctx is not None else "viscoin"
        hint = f"did you mean {close[0]}?" if close else f"see {command} --help"
        return f"no such option {err.option_name} ({hint})"
    return one_line(err.format_message())


def _panel_order(panel: str) -> int:
    return PANELS.index(panel) if panel in PANELS else len(PANELS)


def _tidy_help(command, ctx: typer.Context) -> None:
    """Help as a reader expects it, set up once per command when it is resolved.

    Help texts are plain text ("[default: ...]", "E[sign(...)]"): rich must not read them as markup. A
    docstring's paragraphs are reflowed (rich keeps every source line break); flags show no value type.
    """
    from rich.markup import escape

    command.help = escape(_reflow(command.help)) if command.help else command.help
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is None:
            continue
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # `--force`, not `--force <bool>`
    command._tidied = True


_LINE_START = re.compile(r"^(?:[-*] |[\w./-]+: )")  # a list item or "key: ..." keeps its own line


def _reflow(text: str) -> str:
    """Join a docstring's wrapped lines into paragraphs. Indented blocks (examples) stay as written; a line
    that starts a list item or a "name: ..." entry, or follows a shell continuation (\\), starts a new line."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith(" ") for line in lines):
            paragraphs.append(paragraph)
            continue
        joined: list[str] = []
        for line in lines:
            if joined and not _LINE_START.match(line) and not joined[-1].endswith("\\"):
                joined[-1] += " " + line.strip()
            else:
                joined.append(line.strip())
        paragraphs.append("\n".join(joined))
    return "\n\n".join(paragraphs)


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
