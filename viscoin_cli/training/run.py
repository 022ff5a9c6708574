"""Run folders (where a training command writes, and how `--resume` finds its way back) and the
resume-exact batch sampler the step-based trainers share.

DIR/options.json               every resolved option of the run
DIR/metrics.jsonl              one JSON object per logging step
DIR/latest.safetensors         the newest weights (a normal checkpoint)
DIR/latest.state.safetensors   everything resume needs (weights, optimizer, counters, ...)
DIR/best.safetensors           a copy of the best weights, where "best" makes sense
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from viscoin_cli.errors import UserError
from viscoin_cli.runtime import Runtime

DEFAULT_RUNS_DIR = Path("checkpoints") / "runs"
# What a run writes; `--force` removes exactly these from a non-empty folder, nothing else.
_ARTEFACT_PATTERNS = ("options.json", "metrics.jsonl", "summary.json", "*.safetensors", "*.png")


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.options = path / "options.json"
        self.metrics = path / "metrics.jsonl"
        self.latest = path / "latest.safetensors"
        self.state = path / "latest.state.safetensors"
        self.best = path / "best.safetensors"

    def __str__(self) -> str:
        return str(self.path)

    # -- metrics --------------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (flushed at once, so a killed run keeps what it logged)."""
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, key: str, last: int) -> None:
        """Drop records logged after the checkpoint a resume starts from (that work is redone)."""
        kept = [r for r in self.read_metrics() if r.get(key, 0) <= last]
        tmp = self.metrics.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics)


def _is_empty(path: Path) -> bool:
    """No folder, an empty one, or one with nothing but options.json: a run stopped by an error at its start
    (missing weights, a bad dataset, ...) may be started again in the same --out without --force."""
    return not path.exists() or (path.is_dir() and all(p.name == "options.json" for p in path.iterdir()))


def _remove_artefacts(path: Path) -> None:
    for pattern in _ARTEFACT_PATTERNS:
        for file in path.glob(pattern):
            if file.is_file():
                file.unlink()


def _default_out(name: str) -> Path:
    """checkpoints/runs/NAME, or NAME-2, NAME-3, ... when taken: a default never collides."""
    candidate = DEFAULT_RUNS_DIR / name
    suffix = 2
    while not _is_empty(candidate):
        candidate = DEFAULT_RUNS_DIR / f"{name}-{suffix}"
        suffix += 1
    return candidate


def open_run(
    rt: Runtime, *, out: Path | None, resume: Path | None, force: bool, default_name: str
) -> tuple[RunFolder, bool]:
    """Pick and prepare the run folder; returns it and whether this is a resume.

    A non-empty `--out` is refused unless `--force` (which removes the old run's artefacts only).
    All ranks get the same folder; only rank 0 touches the disk.
    """
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise UserError("--out and --resume name different folders: pass only --resume DIR")
        run = RunFolder(Path(resume))
        if not run.path.is_dir():
            raise UserError(f"--resume {resume}: no such folder")
        if not run.options.is_file() or not run.state.is_file():
            raise UserError(f"--resume {resume}: no run to resume (options.json or latest.state.safetensors missing)")
        return run, True

    if out is None:
        path = _default_out(default_name) if rt.is_main else Path()
        if rt.distributed:  # every rank must use the folder rank 0 picked
            box = [str(path)]
            dist.broadcast_object_list(box, src=0)
            path = Path(box[0])
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder")
        if not _is_empty(path) and not force:
            raise UserError(
                f"--out {out} is not empty: pass --resume {out} to continue that run or --force to overwrite it"
            )
    if rt.is_main:
        path.mkdir(parents=True, exist_ok=True)
        _remove_artefacts(path)
    if rt.distributed:
        dist.barrier()
    return RunFolder(path), False


class TickBatches(Sampler[list[int]]):
    """The real-image indices of one tick: uniform draws seeded by (seed, tick, rank), so data order
    depends only on where training is, not on how it got there (resume-exact)."""

    def __init__(self, length: int, batch: int, steps: int, seed: int):
        self.length, self.batch, self.steps, self.seed = length, batch, steps, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            yield torch.randint(self.length, (self.batch,), generator=generator).tolist()

    def __len__(self) -> int:
        return self.steps
