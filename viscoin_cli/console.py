"""Terminal output: logs and progress on stderr, results on stdout.

On a terminal, progress is a rich bar with ETA and live metrics; elsewhere (CI logs, pipes) it is a
plain line every few seconds, so logs stay readable. `--quiet` and non-main ranks print nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


def make_console(quiet: bool = False, enabled: bool = True) -> Console:
    """The stderr console every command logs to."""
    return Console(stderr=True, quiet=quiet or not enabled, highlight=False, soft_wrap=True)


def format_metrics(metrics: dict[str, Any]) -> str:
    """`{"loss": 0.1234, "acc": 0.97}` -> `loss 0.1234  acc 0.9700`."""
    parts = []
    for name, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.4f}"
        parts.append(f"{name} {value}")
    return "  ".join(parts)


def print_json(document: Any) -> None:
    """The one JSON document a `--json` command prints on stdout. Always valid JSON: a number that is not
    finite (a broken model's NaN) is written as null, never as the bare `NaN` that JSON parsers refuse."""
    sys.stdout.write(json.dumps(_finite_or_null(document), indent=2, sort_keys=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def json_line(document: Any) -> str:
    """One document as a single JSON line (JSONL output), non-finite numbers as null as in print_json."""
    return json.dumps(_finite_or_null(document), allow_nan=False)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def warn_non_finite(names: list[str], what: str) -> None:
    """One stderr line when a network's weights hold NaN or inf: every number computed from it will too."""
    if names:
        sys.stderr.write(
            f"warning: {what} has {len(names)} weight tensor(s) with NaN or inf values (e.g. {names[0]}); "
            "its outputs will not be finite numbers\n"
        )


class Progress:
    """A progress display for one loop: `with Progress(console, total, "epoch 1/10") as p: p.advance(1, loss=..)`."""

    def __init__(self, console: Console, total: int, description: str, *, every_seconds: float = 10.0):
        self.console, self.total, self.description = console, total, description
        self.every_seconds = every_seconds
        self.done = 0
        self.metrics: dict[str, Any] = {}
        self._bar: RichProgress | None = None
        self._task = None
        self._start = self._last_line = time.monotonic()

    def __enter__(self) -> Progress:
        if not self.console.quiet and self.console.is_terminal:
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, metrics="")
        return self

    def advance(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        if metrics:
            self.metrics.update(metrics)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, metrics=format_metrics(self.metrics))
        elif not self.console.quiet:
            now = time.monotonic()
            if now - self._last_line >= self.every_seconds:
                self._last_line = now
                self._plain_line()

    def _plain_line(self) -> None:
        elapsed = time.monotonic() - self._start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        self.console.print(
            f"{self.description} {self.done}/{self.total} [{elapsed:.0f}s, eta {eta:.0f}s] "
            f"{format_metrics(self.metrics)}"
        )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
