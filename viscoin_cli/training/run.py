"""Run folders (where a training command writes, and how `--resume` finds its way back) and the
samplers the trainers share: resume-exact, and dealing one global batch to the processes of a torchrun.

DIR/options.json               every resolved option of the run
DIR/metrics.jsonl              one JSON object per logging step
DIR/latest.safetensors         the newest weights (a normal checkpoint)
DIR/latest.state.safetensors   everything resume needs (weights, optimizer, counters, ...)
DIR/best.safetensors           a copy of the best weights, where "best" makes sense
DIR/.lock                      while a run goes on: its PID and host, under an exclusive flock (one run per folder)
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from viscoin_cli.errors import UserError
from viscoin_cli.runtime import Runtime, seed_for, seed_worker

try:
    import fcntl
except ImportError:  # Windows: no flock, so no lock (two runs in one folder are not caught there)
    fcntl = None

DEFAULT_RUNS_DIR = Path("checkpoints") / "runs"
# What a run writes; `--force` removes exactly these from a non-empty folder, nothing else.
_ARTEFACT_PATTERNS = ("options.json", "metrics.jsonl", "summary.json", "*.safetensors", "*.png")
LOCK_NAME = ".lock"
# What a killed write leaves: `.NAME.PID.tmp` (checkpoints, grids) and NAME.tmp (options.json, metrics.jsonl).
_STRAY = re.compile(r"\..+\.\d+\.tmp|(options\.json|metrics\.jsonl)\.tmp")


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.options = path / "options.json"
        self.metrics = path / "metrics.jsonl"
        self.latest = path / "latest.safetensors"
        self.state = path / "latest.state.safetensors"
        self.best = path / "best.safetensors"
        self._lock: int | None = None  # the fd holding DIR/.lock (rank 0 of a run that `open_run` opened)

    def __str__(self) -> str:
        return str(self.path)

    def close(self) -> None:
        """Let go of the folder: remove DIR/.lock while still holding it, then unlock (a no-op when not held)."""
        fd, self._lock = self._lock, None
        if fd is None:
            return
        try:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the last fd on the lock's open file releases the flock

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
    (missing weights, a bad dataset, ...) may be started again in the same --out without --force.
    The lock file and what killed writes left behind do not count."""
    return not path.exists() or (
        path.is_dir() and all(p.name in ("options.json", LOCK_NAME) or _STRAY.fullmatch(p.name) for p in path.iterdir())
    )


def _remove_strays(path: Path) -> None:
    """Remove the temporary files of atomic writes a killed run left (safe once we hold the folder's lock:
    no other run writes there)."""
    for file in path.iterdir():
        if _STRAY.fullmatch(file.name) and file.is_file():
            file.unlink(missing_ok=True)


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file: "pid 1234" (or "pid 1234 on HOST")."""
    try:
        pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "pid unknown"
    return f"pid {pid}" if host in ("", socket.gethostname()) else f"pid {pid} on {host}"


def _lock(folder: Path, label: str, advice: str) -> int | None:
    """Take the exclusive lock of a run folder: the fd that holds it, None where locks do not exist.

    flock belongs to the open file, so the kernel releases it when the process dies however it dies: a lock
    file left by a killed run is stale simply by being lockable. The fd is not inherited across exec (PEP 446);
    forked DataLoader workers do share the open file, so a SIGKILLed run's lock lasts until its workers, which
    watch their parent, exit too.
    """
    if fcntl is None:
        return None
    path = folder / LOCK_NAME
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd) if err.errno in (errno.EWOULDBLOCK, errno.EACCES) else None
            os.close(fd)
            if holder is None:  # a file system without flock (ENOLCK, ENOTSUP, ...): run without a lock
                return None
            raise UserError(f"{label} is in use by another viscoin run ({holder}); {advice}") from None
        try:  # the run before us removes the file as it lets go: the lock must be on the file the folder has
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise UserError(f"{label}: could not take the lock {path}; {advice}")


def _remove_artefacts(path: Path) -> None:
    for pattern in _ARTEFACT_PATTERNS:
        for file in path.glob(pattern):
            if file.is_file():
                file.unlink()


def _default_out(name: str) -> Path:
    """checkpoints/runs/NAME, or NAME-2, NAME-3, ... when taken: a default never collides."""
    candidate = DEFAULT_RUNS_DIR / name
    suffix = 2
    while not _is_empty(candidate) or (candidate / LOCK_NAME).exists():
        candidate = DEFAULT_RUNS_DIR / f"{name}-{suffix}"
        suffix += 1
    return candidate


def open_run(
    rt: Runtime, *, out: Path | None, resume: Path | None, force: bool, default_name: str
) -> tuple[RunFolder, bool]:
    """Pick, lock and prepare the run folder; returns it and whether this is a resume.

    A non-empty `--out` is refused unless `--force` (which removes the old run's artefacts only); a folder
    another run holds is refused whatever the options, before anything in it is written or removed. The
    returned folder holds the lock until `close()` (or the process's end). All ranks get the same folder;
    only rank 0 touches the disk (and takes the lock).
    """
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise UserError("--out and --resume name different folders: pass only --resume DIR")
        run = RunFolder(Path(resume))
        if not run.path.is_dir():
            raise UserError(f"--resume {resume}: no such folder")
        if not run.options.is_file() or not run.state.is_file():
            raise UserError(f"--resume {resume}: no run to resume (options.json or latest.state.safetensors missing)")
        _share_outcome(rt, lambda: _take(run, f"--resume {resume}", "wait for it to finish before resuming it"))
        return run, True

    if out is None:
        path = _default_out(default_name) if rt.is_main else Path()
        if rt.distributed:  # every rank must use the folder rank 0 picked
            box = [str(path)]
            dist.broadcast_object_list(box, src=0)
            path = Path(box[0])
        label = str(path)
    else:
        path, label = Path(out), f"--out {out}"
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder")
    run = RunFolder(path)

    def clear() -> None:  # under the lock: no other run can fill the folder between the check and the removal
        if not _is_empty(path) and not force:
            raise UserError(
                f"{label} is not empty: pass --resume {path} to continue that run or --force to overwrite it"
            )
        _remove_artefacts(path)

    def prepare() -> None:
        path.mkdir(parents=True, exist_ok=True)  # a lock file needs its folder
        _take(run, label, "wait for it to finish or pick another --out", clear)

    _share_outcome(rt, prepare)
    return run, False


def _take(run: RunFolder, label: str, advice: str, clear: Callable[[], None] | None = None) -> None:
    """Lock the folder for `run`, run `clear()` (checks and removals that need the lock), then remove what
    killed writes left there; a refusal leaves the folder unlocked and as it was."""
    run._lock = _lock(run.path, label, advice)
    try:
        if clear is not None:
            clear()
        _remove_strays(run.path)
    except BaseException:
        run.close()
        raise


def _share_outcome(rt: Runtime, prepare: Callable[[], None]) -> None:
    """Rank 0 runs `prepare()`; every rank raises the UserError it raised (so none waits for a folder that
    will not come), or goes on once it is done."""
    error = None
    if rt.is_main:
        try:
            prepare()
        except UserError as err:
            if not rt.distributed:
                raise
            error = str(err)
    if rt.distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise UserError(box[0])


def run_ticks(first: int, steps: int, per_tick: int) -> list[tuple[int, int]]:
    """The (tick, steps) of what is left of a run: `steps` steps from tick `first` on, `per_tick` a tick (the
    last tick may be shorter)."""
    return [(first + i, min(per_tick, steps - start)) for i, start in enumerate(range(0, steps, per_tick))]


class RunLoader:
    """This process's real images for the rest of a run, tick after tick: one DataLoader whose workers live as
    long as the run (a loader per tick started its workers again every tick) and prefetch across ticks.

    Each tick draws what `TickBatches` draws from (seed, tick), so batches do not depend on where the run
    started (resume-exact), on the number of workers, or on how many processes share the global batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch: int,
        seed: int,
        schedule: Sequence[tuple[int, int]],
        rt: Runtime,
        workers: int,
        *,
        mirror: bool = False,
    ):
        self.seed, self.rt, self.schedule = seed, rt, list(schedule)
        self._next = 0  # the place in `schedule` of the next tick
        self._batches: Iterator[Any] | None = None
        self._left = 0  # the batches of the current tick not taken yet
        self.loader: DataLoader | None = DataLoader(
            SeededItems(dataset, mirror=mirror),
            batch_sampler=RunBatches(len(dataset), batch, seed, self.schedule, rt.rank, rt.world_size),
            num_workers=workers,
            pin_memory=rt.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=seed_worker,
            # the workers' base seed comes from here, not from the training stream (items are seeded anyway)
            generator=torch.Generator().manual_seed(seed),
        )

    def tick(self, tick: int) -> Iterator[Any]:
        """The batches of `tick`, the next one of the schedule, after re-seeding this process's generators
        from (seed, tick) as every tick does."""
        if self._next >= len(self.schedule) or self.schedule[self._next][0] != tick:
            raise RuntimeError(f"tick {tick} is not the next one of this loader's schedule")
        steps = self.schedule[self._next][1]
        self._next += 1
        self.rt.reseed(self.seed, tick)
        # The one draw from the training stream a loader built per tick made (its workers' base seed): made
        # here too, so every run draws its noise as it did before loaders lived for the run, and a run begun
        # then resumes exactly.
        torch.empty((), dtype=torch.int64).random_()
        if self._batches is None:
            self._batches = iter(self.loader)
        for _ in range(self._left):  # what a tick left untaken (a loop that stopped early) is not the next's
            next(self._batches)
        self._left = steps
        return self._take()

    def _take(self) -> Iterator[Any]:
        while self._left:
            self._left -= 1
            yield next(self._batches)

    def close(self) -> None:
        """Stop the workers now (with the loader and its iterator gone), not whenever they are collected."""
        self._batches = self.loader = None


class SeededItems(Dataset):
    """`dataset` read as `[(index, seed)]`: each item's random augmentation comes from its own seed, not from
    the process that loads it or what it loaded before, so an image is augmented alike whatever the number
    of processes (and of DataLoader workers) that share the batch. `mirror`: x-flip the items `mirrored`
    picks (`finetune-gan --mirror`), a decision of the item's seed too."""

    def __init__(self, dataset: Dataset, *, mirror: bool = False):
        self.dataset, self.mirror = dataset, mirror

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            item = self.dataset[index]
        if self.mirror and mirrored(seed):
            image, *rest = item
            item = (image.flip(-1), *rest)
        return item


def mirrored(seed: int) -> bool:
    """Whether the item drawn with `seed` is x-flipped: a coin of its own (not the item's augmentation
    stream, which stays as it was), so 1 or W processes, any workers and a resume flip the same items."""
    return random.Random(seed_for(seed, 1)).random() < 0.5


class TickBatches(Sampler[list[tuple[int, int]]]):
    """The real images of one tick: uniform draws of `batch * world_size` indices seeded by (seed, tick),
    of which this process takes every `world_size`-th from its rank, each with its seed for `SeededItems`.
    Data order depends only on where training is, not on how it got there (resume-exact) nor on how many
    processes share it."""

    def __init__(self, length: int, batch: int, steps: int, seed: int, rank: int = 0, world_size: int = 1):
        self.length, self.batch, self.steps, self.seed = length, batch, steps, seed
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        size = self.batch * self.world_size
        for step in range(self.steps):
            indices = torch.randint(self.length, (size,), generator=generator).tolist()
            yield [(indices[k], seed_for(self.seed, step, k)) for k in range(self.rank, size, self.world_size)]

    def __len__(self) -> int:
        return self.steps


class RunBatches(Sampler[list[tuple[int, int]]]):
    """The `TickBatches` of each (tick, steps) of `schedule`, one tick after the other: a whole run's (or the
    rest of it) for one DataLoader, each tick's still drawn from (seed, tick) alone."""

    def __init__(
        self,
        length: int,
        batch: int,
        seed: int,
        schedule: Sequence[tuple[int, int]],
        rank: int = 0,
        world_size: int = 1,
    ):
        self.length, self.batch, self.seed, self.schedule = length, batch, seed, list(schedule)
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for tick, steps in self.schedule:
            seed = seed_for(self.seed, tick, 0, 1)
            yield from TickBatches(self.length, self.batch, steps, seed, self.rank, self.world_size)

    def __len__(self) -> int:
        return sum(steps for _, steps in self.schedule)


class EpochShard(DistributedSampler):
    """An epoch's shuffled order (one permutation whatever the number of processes), every `world_size`-th
    item from this rank, each with its seed for `SeededItems` from its place in that order: W processes
    taking B/W items a step take the B items one process takes, augmented alike."""

    def __iter__(self):
        for i, index in enumerate(super().__iter__()):
            yield index, seed_for(self.seed, self.epoch, self.rank + i * self.num_replicas)
