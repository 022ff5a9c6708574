"""Typed training configurations: one frozen dataclass per trainer, whose JSON is the run's options.json.

A trainer's config owns its fields, their defaults and its per-dataset presets. It is made once, from the
preset and the options the user typed (`create`), or read back from a run folder (`resume`): the same
type checks apply to both, so an options.json with an unknown field or a value of the wrong type is a
one-line error rather than a run that fails an hour later. Choice fields are `viscoin_cli.choices` enums.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from viscoin_cli.choices import DatasetName, Precision
from viscoin_cli.data import check_bbox_crop
from viscoin_cli.errors import UserError

C = TypeVar("C", bound="TrainConfig")


@dataclass(frozen=True)
class TrainConfig:
    """What every trainer shares: the data, the seed, and the runtime the run used (recorded only)."""

    dataset: DatasetName = DatasetName.digits
    data_root: str | None = None
    resolution: int | None = None
    skip_bad_images: bool = False
    bbox_crop: bool = False
    seed: int = 0
    # Runtime: where the run executes, not what it trains; set by the command, free to change on resume.
    workers: int = 0
    device: str = "cpu"
    precision: Precision = Precision.fp32
    world_size: int = 1

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"workers", "device", "precision", "world_size"})
    RESUMABLE: ClassVar[frozenset[str]] = frozenset()  # fields a `--resume` may change: the length of training
    FLAGS: ClassVar[dict[str, str]] = {}  # field -> command-line flag, where they differ
    LENGTH: ClassVar[str | None] = None  # the field that says how long to train, in the resume state's steps
    LENGTH_PER_STEP: ClassVar[float] = 1.0  # ... times this (the GAN counts images, its length is kimg)

    # --- making one ------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:  # noqa: ARG003 - the base class has no presets
        """The dataset's values for the fields the user did not give."""
        return {}

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG003
        """Fields that follow from other fields (after the preset and the given options are merged)."""
        return values

    def check(self) -> None:
        """Constraints between fields; a violation is a `UserError`. Runs before the run folder is made."""
        check_bbox_crop(str(self.dataset), self.bbox_crop)

    @classmethod
    def create(cls: type[C], given: dict[str, Any]) -> C:
        """A new run's config: defaults, then the dataset's preset, then the options the user typed."""
        dataset = given.get("dataset", cls.__dataclass_fields__["dataset"].default)
        values = {**cls.preset(str(dataset)), **given}
        config = cls.from_json(cls.resolve(values, given), "options")
        config.check()
        return config

    @classmethod
    def resume(cls: type[C], options_file: Path, given: dict[str, Any]) -> C:
        """The config of the run that wrote `options_file`, with the typed options that may change on resume.

        Any other typed option must equal the run's value: a resumed run never silently mixes two settings.
        """
        saved = cls.from_json(read_json(options_file), str(options_file))
        changes = {}
        for name, value in given.items():
            if name in cls.RESUMABLE:
                changes[name] = value
            elif name not in cls.RUNTIME and getattr(saved, name) != value:
                raise UserError(f"{cls.flag(name)} cannot change when resuming (the run used {getattr(saved, name)!r})")
        if not changes:
            return saved
        config = cls.from_json({**saved.to_json(), **changes}, "options")
        config.check()
        config.check_length(Path(options_file).parent / "latest.state.safetensors")
        return config

    def check_length(self, state_file: Path) -> None:
        """A resumed run may be made longer, not shorter than what it has already done: a shorter length
        would end at once and rewrite options.json with a length the weights do not match."""
        if self.LENGTH is None or not state_file.is_file():
            return
        from viscoin_cli.io.checkpoint import read_meta

        done = read_meta(state_file, kind="state").step * self.LENGTH_PER_STEP
        if getattr(self, self.LENGTH) < done:
            raise UserError(
                f"{self.flag(self.LENGTH)} {getattr(self, self.LENGTH):g}: the run in {state_file.parent} has "
                f"already done {done:g}; pass at least that to continue it"
            )

    @classmethod
    def flag(cls, name: str) -> str:
        return cls.FLAGS.get(name, "--" + name.replace("_", "-"))

    # --- JSON ------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls: type[C], data: Any, source: str) -> C:
        """Build the config from JSON values, checking every field's type (enums from their values)."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object of options")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{source}: unknown option {unknown[0]!r} for {cls.__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, spec in known.items():
            if name not in data:
                if spec.default is MISSING and spec.default_factory is MISSING:
                    raise UserError(f"{source}: option {name!r} is missing")
                continue
            values[name] = _convert(data[name], hints[name], f"{source}: {name}")
        return cls(**values)

    def write(self, path: Path) -> None:
        """Write as JSON, atomically (a killed run never leaves half an options.json)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def with_runtime(self: C, **runtime: Any) -> C:
        assert set(runtime) <= self.RUNTIME, runtime
        return replace(self, **runtime)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({type(err).__name__})") from None


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if typing.get_origin(hint) is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))


def _convert(value: Any, hint: Any, where: str) -> Any:  # noqa: C901 - one branch per supported type
    """`value` as the type `hint` says, or a one-line error naming the field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:  # Optional[X]: X's own message says what is wrong inside a list
            return _convert(value, choices[0], where)
        for arg in choices:
            try:
                return _convert(value, arg, where)
            except UserError:
                continue
        raise UserError(f"{where} = {value!r}: expected {' or '.join(_describe(a) for a in args)}")
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise UserError(f"{where} = {value!r}: expected {_describe(hint)}") from None
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif origin is list and isinstance(value, list):
        return [_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    elif origin is dict and isinstance(value, dict):
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    raise UserError(f"{where} = {value!r}: expected {_describe(hint)}")


def with_shipped_parent(values: dict[str, Any], role: str) -> dict[str, Any]:
    """A copy of `values` whose `role` (classifier or generator) defaults to the dataset's shipped checkpoint,
    when the dataset (an embedded one) ships one."""
    from viscoin_cli.shipped import default_parent

    shipped = default_parent(values.get("dataset", "digits"), role)
    return dict(values) if shipped is None else {role: str(shipped), **values}
