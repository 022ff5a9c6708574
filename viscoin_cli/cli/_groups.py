"""Option groups: options that several commands take, declared once and handed to each command as one object.

A command names a group with one parameter whose default is the group (`run: Run = RUNTIME`). `grouped`
puts the group's options in that parameter's place in the signature typer reads, so --help lists them
where the parameter stands, and calls the command with the object built from their values. Torch-free,
like every option declaration; the underscore keeps `load_commands` from taking this module for a command.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from viscoin_cli.cli import options as o

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class OptionGroup:
    """Options (typer-annotated parameters, in --help order) and what to build from their values."""

    build: Callable[..., Any]
    parameters: tuple[inspect.Parameter, ...]


def option_group(build: Callable[..., Any], **options: tuple[Any, Any]) -> OptionGroup:
    """A group of `name=(annotation, default)` options, built into `build(**values)`."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = (inspect.Parameter(name, kind, default=d, annotation=a) for name, (a, d) in options.items())
    return OptionGroup(build, tuple(parameters))


def grouped(command: F) -> F:
    """`command` with each group parameter replaced by the group's options (see the module's docstring)."""
    signature = inspect.signature(command, eval_str=True)
    groups = {p.name: p.default for p in signature.parameters.values() if isinstance(p.default, OptionGroup)}
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        group = groups.get(parameter.name)
        parameters += [p.replace(kind=parameter.kind) for p in group.parameters] if group else [parameter]

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group.build(**{p.name: values.pop(p.name) for p in group.parameters})
        return command(**values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run  # type: ignore[return-value]


@dataclass(frozen=True)
class Run:
    """Where and how a command runs, and what it prints."""

    device: str = "auto"
    precision: str = "fp32"
    workers: int | None = None
    quiet: bool = False
    json_out: bool = False
    seed: int = 0


# How a command runs and what it prints: shared by the interpretation and the training commands.
_DEVICE = {"device": (o.Device, "auto")}
_OUTPUT = {"precision": (o.Precision, "fp32"), "workers": (o.Workers, None), "quiet": (o.Quiet, False)}
_OUTPUT |= {"json_out": (o.Json, False)}


def _runtime(*, seed: bool) -> OptionGroup:
    seeded = {"seed": (o.Seed, 0)} if seed else {}
    return option_group(Run, **_DEVICE, **seeded, **_OUTPUT)


RUNTIME = _runtime(seed=False)  # commands whose results need no random numbers
SEEDED_RUNTIME = _runtime(seed=True)


@dataclass(frozen=True)
class TrainingRun:
    """The run folder of a training command and how it runs (its config fields are the command's own)."""

    out: Path | None = None
    resume: Path | None = None
    force: bool = False
    device: str = "auto"
    precision: str = "fp32"
    workers: int | None = None
    quiet: bool = False
    json_out: bool = False


_RUN_FOLDER = {"out": (o.Out, None), "resume": (o.Resume, None), "force": (o.Force, False)}
TRAINING_RUN = option_group(TrainingRun, **_RUN_FOLDER, **_DEVICE, **_OUTPUT)
# A trainer whose loop reads no images (directions gan: G draws them) has no --workers to offer.
LATENT_TRAINING_RUN = option_group(
    TrainingRun, **_RUN_FOLDER, **_DEVICE, **{name: option for name, option in _OUTPUT.items() if name != "workers"}
)


@dataclass(frozen=True)
class TrainingData:
    """The dataset a training command reads (config fields, like the command's other options)."""

    dataset: str = "digits"
    data_root: Path | None = None
    resolution: int | None = None
    skip_bad_images: bool = False
    bbox_crop: bool = False


TRAINING_DATA = option_group(
    TrainingData,
    dataset=(o.Dataset, "digits"),
    data_root=(o.DataRoot, None),
    resolution=(o.Resolution, None),
    skip_bad_images=(o.SkipBadImages, False),
    bbox_crop=(o.BboxCrop, False),
)
