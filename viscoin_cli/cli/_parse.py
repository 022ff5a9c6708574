"""Option text to values: numbers, index lists, metric names, CI checks, λ sweeps and concept edits, each bad
value a one-line error.

Pure Python (no torch): a command validates what was typed before it loads anything. The underscore keeps
`load_commands` from taking this module for a command.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from viscoin_cli.errors import UserError
from viscoin_cli.metrics.checks import ALIASES, METRICS, Check


def parse_metrics(text: str, option: str = "METRIC") -> list[str]:
    """`all`, one metric or a comma list -> metric names in canonical order."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"{option} {text!r}: expected one of {', '.join(METRICS)} or all")
    if "all" in names:
        return list(METRICS)
    for name in names:
        if name not in METRICS:
            raise UserError(f"{option} {name!r}: unknown metric, expected one of {', '.join(METRICS)} or all")
    return [name for name in METRICS if name in names]


def _float(text: str) -> float | None:
    """`text` as a number (nan and inf included: the callers say why they refuse them), or None."""
    try:
        return float(text)
    except ValueError:
        return None


def parse_floats(text: str, option: str) -> list[float]:
    """`0.1,0.2,0.4` -> [0.1, 0.2, 0.4]; anything that is not a finite number is a one-line error."""
    values = []
    for part in text.split(","):
        value = _float(part)
        if value is None:
            raise UserError(f"{option} {text!r}: {part.strip()!r} is not a number")
        if not math.isfinite(value):
            raise UserError(f"{option} {text!r}: {part.strip()} is not a finite number")
        values.append(value)
    return values


def parse_thresholds(text: str) -> tuple[float, ...]:
    """Relevance thresholds τ: distinct numbers in [0, 1) (relevance is at most 1)."""
    values = parse_floats(text, "--thresholds")
    for value in values:
        if not 0 <= value < 1:
            raise UserError(f"--thresholds {text!r}: {value:g} is outside [0, 1) (local relevance is at most 1)")
    if len({f"{v:g}" for v in values}) != len(values):
        raise UserError(f"--thresholds {text!r}: a threshold is repeated")
    return tuple(values)


def parse_indices(text: str, count: int, option: str = "--concepts") -> list[int]:
    """`0,3,5`, `0-7` or a mix -> distinct indices below `count`, in the order given."""
    indices: list[int] = []
    for part in text.split(","):
        bounds = part.strip().split("-")
        if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise UserError(f"{option} {text!r}: expected indices like 0,3,5 or 0-7")
        first, last = int(bounds[0]), int(bounds[-1])
        if last < first:
            raise UserError(f"{option} {text!r}: range {part.strip()} runs backwards")
        indices.extend(i for i in range(first, last + 1) if i not in indices)
    out_of_range = [i for i in indices if i >= count]
    if out_of_range:
        raise UserError(f"{option} {out_of_range[0]}: concept index out of range (the model has 0..{count - 1})")
    return indices


def parse_check(text: str, direction: str) -> Check:
    key, sep, value = text.partition("=")
    option = f"--fail-{direction}"
    if not sep or not key.strip():
        raise UserError(f"{option} {text!r}: expected KEY=VALUE, e.g. accuracy.g=0.95")
    (bound,) = parse_floats(value, f"{option} {key.strip()}=")
    key = key.strip()
    return Check(canonical_key(key), bound, direction, key)


def canonical_key(key: str) -> str:
    """Shortcuts resolved, and a threshold written any way (0.20, .2) spelled as the document spells it
    (0.2); `faithfulness.0.2` alone means its median."""
    key = ALIASES.get(key, key)
    head, _, rest = key.partition(".")
    if head != "faithfulness" or not rest:
        return key
    threshold, _, field_name = rest.rpartition(".")
    for value, name in ((rest, "median"), (threshold, field_name)):
        try:
            return f"faithfulness.{float(value):g}.{name}"
        except ValueError:
            continue
    return key


MAX_LAMBDA = 10.0  # |λ| beyond this is a typo, not an edit: the paper sweeps up to 4, renders stay reliable to 3-4


def parse_lambda(text: str, option: str, shown: str | None = None) -> float:
    """One finite number within ±MAX_LAMBDA (not via click's float: 'abc', nan and inf must each be a one-line
    error); `shown` is what the message quotes, when more than `text` was typed (`--set 12=x`)."""
    shown = text if shown is None else shown
    value = _float(text)
    if value is None:
        raise UserError(f"{option} {shown!r}: not a number")
    if not math.isfinite(value):
        raise UserError(f"{option} {shown!r}: λ must be a finite number")
    if abs(value) > MAX_LAMBDA:
        raise UserError(f"{option} {shown!r}: λ must be within ±{MAX_LAMBDA:g} (renders stay reliable up to 3-4)")
    return value


def resolve_lambdas(single: str | None, sweep: str | None) -> list[float]:
    """The λ columns: the given value(s) and 1 (the plain reconstruction), ascending, without repeats."""
    if single is not None and sweep is not None:
        raise UserError("pass --lambda or --lambdas, not both")
    if sweep is not None:
        parts = [part.strip() for part in sweep.split(",")]
        if not parts or any(not part for part in parts):
            raise UserError(f"--lambdas {sweep!r}: expected comma-separated numbers, e.g. 0,1,2,4")
        given = [parse_lambda(part, "--lambdas") for part in parts]
    else:
        given = [parse_lambda(single if single is not None else "3", "--lambda")]
    return sorted({*given, 1.0})


def parse_edit(texts: Sequence[str], num_concepts: int, option: str = "--set") -> dict[int, float]:
    """`--set 12=3 --set 40=0` -> {12: 3.0, 40: 0.0}, in the order given: one edit of several concepts, each
    λ checked as --lambda checks it; a concept set twice is an error (which λ was meant?)."""
    edit: dict[int, float] = {}
    for text in texts:
        key, sep, value = (part.strip() for part in text.partition("="))
        if not sep or not key or not value:
            raise UserError(f"{option} {text!r}: expected CONCEPT=λ, e.g. {option} 12=3")
        if not key.isdigit():
            raise UserError(f"{option} {text!r}: {key!r} is not a concept index (0..{num_concepts - 1})")
        concept = int(key)
        if concept >= num_concepts:
            raise UserError(
                f"{option} {text!r}: concept {concept} out of range (the model has concepts 0..{num_concepts - 1})"
            )
        if concept in edit:
            raise UserError(f"{option} {text!r}: concept {concept} is set twice")
        edit[concept] = parse_lambda(value, option, shown=text)
    return edit
