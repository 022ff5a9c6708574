"""Option groups: options declared once, listed in --help where the group stands, handed over as one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
from typer.testing import CliRunner

from viscoin_cli.cli._groups import grouped, option_group


@dataclass
class Pair:
    left: int
    right: str


PAIR = option_group(
    Pair,
    left=(Annotated[int, typer.Option("--left", help="Left.")], 1),
    right=(Annotated[str, typer.Option("--right", help="Right.")], "r"),
)


def _app(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @grouped
    def command(first: Annotated[str, typer.Option("--first")] = "a", pair: Pair = PAIR, last: bool = False) -> None:
        """The command's help."""
        seen.append((first, pair, last))

    return app


def test_the_command_gets_the_built_object_and_its_other_options():
    seen: list = []
    result = CliRunner().invoke(_app(seen), ["--right", "x", "--last"])
    assert result.exit_code == 0, result.output
    assert seen == [("a", Pair(1, "x"), True)]


def test_help_lists_the_group_where_its_parameter_stands():
    result = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "The command's help." in text
    assert text.index("--first") < text.index("--left") < text.index("--right") < text.index("--last")
    assert "--pair" not in text
