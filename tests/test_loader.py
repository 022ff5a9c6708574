"""The trainers' real images: one loader per run whose workers last the run, drawing exactly what a loader
built tick by tick drew (resume-exact, the same for 1 or W processes and any number of workers); `--mirror`'s
x-flips decided per item; and click's usage errors said once under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli, save_tiny_classifier, save_tiny_generator
from torch.utils.data import DataLoader, Dataset

from viscoin_cli.runtime import Runtime, seed_for
from viscoin_cli.training.run import RunLoader, SeededItems, TickBatches, mirrored, run_ticks


class Noisy(Dataset):
    """Images that say which item they are (a left-to-right ramp, so an x-flip shows) and carry noise drawn
    from the loading process's generator (what `SeededItems` must seed per item)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ramp = torch.arange(4.0).expand(1, 2, 4)
        return index + ramp / 10 + torch.rand(1, 2, 4) / 100, index


def _runtime(rank: int = 0, world_size: int = 1) -> Runtime:
    return Runtime(torch.device("cpu"), "fp32", 0, rank=rank, world_size=world_size)


def _batches(schedule, *, workers: int = 0, rank: int = 0, world_size: int = 1, mirror: bool = False, batch=4):
    """{tick: that tick's batches} of a `RunLoader` over `Noisy`."""
    data = RunLoader(Noisy(), batch, 3, schedule, _runtime(rank, world_size), workers, mirror=mirror)
    try:
        return {tick: [images for images, _ in data.tick(tick)] for tick, _ in schedule}
    finally:
        data.close()


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        len(a[t]) == len(b[t]) and all(torch.equal(x, y) for x, y in zip(a[t], b[t], strict=True)) for t in a
    )


def test_run_ticks_cover_what_is_left():
    assert run_ticks(0, 6, 2) == [(0, 2), (1, 2), (2, 2)]
    assert run_ticks(2, 5, 2) == [(2, 2), (3, 2), (4, 1)]  # the last tick may be shorter
    assert run_ticks(7, 0, 2) == []


def test_batches_are_those_of_a_loader_per_tick():
    """What a DataLoader built for each tick drew (before loaders lived for the run), and the same process RNG
    state after each tick's re-seed: runs draw their noise as before."""
    schedule = run_ticks(0, 6, 2)
    rt = _runtime()
    data = RunLoader(Noisy(), 4, 3, schedule, rt, 0)
    for tick, steps in schedule:
        ours = [images for images, _ in data.tick(tick)]
        state = torch.get_rng_state()
        rt.reseed(3, tick)
        sampler = TickBatches(len(Noisy()), 4, steps, seed_for(3, tick, 0, 1))
        before = [images for images, _ in DataLoader(SeededItems(Noisy()), batch_sampler=sampler)]
        assert torch.equal(torch.get_rng_state(), state)
        assert len(ours) == steps and all(torch.equal(a, b) for a, b in zip(ours, before, strict=True))


def test_batches_with_workers_equal_batches_without():
    schedule = run_ticks(0, 6, 2)
    assert _equal(_batches(schedule, workers=2, mirror=True), _batches(schedule, workers=0, mirror=True))


def test_a_resumed_run_and_two_processes_draw_what_one_uninterrupted_process_draws():
    whole = _batches(run_ticks(0, 7, 2), batch=4, mirror=True)
    resumed = _batches(run_ticks(2, 3, 2), batch=4, mirror=True)
    assert _equal(resumed, {t: whole[t] for t in (2, 3)})
    shares = [_batches(run_ticks(0, 7, 2), batch=2, rank=r, world_size=2, mirror=True) for r in (0, 1)]
    for tick, batches in whole.items():
        for step, images in enumerate(batches):  # rank r takes every other image of the global batch from r
            assert torch.equal(images[0::2], shares[0][tick][step]) and torch.equal(images[1::2], shares[1][tick][step])


def test_workers_last_the_run():
    """One worker serves every tick (a loader per tick started a new one each tick), and close() stops it."""
    schedule = run_ticks(0, 6, 2)
    data = RunLoader(Pids(), 2, 0, schedule, _runtime(), 1)
    pids = {tick: {int(pid) for _, pids in data.tick(tick) for pid in pids} for tick, _ in schedule}
    worker = pids[0].pop()
    assert pids == {0: set(), 1: {worker}, 2: {worker}} and worker != os.getpid()
    data.close()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_a_tick_left_half_taken_does_not_shift_the_next():
    schedule = run_ticks(0, 4, 2)
    whole = _batches(schedule)
    data = RunLoader(Noisy(), 4, 3, schedule, _runtime(), 0)
    next(data.tick(0))  # a loop that stopped after one batch
    assert all(torch.equal(a, b) for (a, _), b in zip(data.tick(1), whole[1], strict=True))
    with pytest.raises(RuntimeError, match="tick 5 is not the next one"):
        data.tick(5)


class Pids(Noisy):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1), os.getpid()


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("parts")
    return save_tiny_classifier(folder / "f.safetensors"), save_tiny_generator(folder / "G.safetensors")


@pytest.mark.parametrize("command", ["train", "finetune-gan"])
def test_a_training_run_keeps_its_workers(command, parts, tmp_path, monkeypatch):
    """`--workers 1` over three ticks: every training image is loaded by the same worker process."""
    log = tmp_path / "pids"
    load = SeededItems.__getitem__

    def logged(self, key):
        with open(log, "a") as fh:  # the forked worker inherits this patch and appends its pid
            fh.write(f"{os.getpid()} {self.mirror}\n")
        return load(self, key)

    monkeypatch.setattr(SeededItems, "__getitem__", logged)
    common = ["--dataset", "digits", "--device", "cpu", "--workers", "1", "--quiet", "--out", tmp_path / "run"]
    if command == "train":
        f_path, g_path = parts
        args = ["--classifier", f_path, "--generator", g_path, "--concepts", "8", "--hidden", "8", "--real-batch", "4"]
        args += ["--synthetic-batch", "4", "--log-every", "2", "--grid-every", "2", "--iterations", "6"]
    else:
        args = ["--resolution", "16", "--batch-size", "8", "--tick-kimg", "0.016", "--kimg", "0.048", "--snap", "3"]
        args += ["--grid-size", "4", "--cbase", "256", "--cmax", "16", "--map", "1", "--mirror"]
    result = run_cli(command, *args, *common)
    assert result.exit_code == 0, result.output
    lines = log.read_text().splitlines()
    assert len(lines) == (48 if command == "finetune-gan" else 24)  # three ticks of two batches of 8 (4)
    pids, mirror = zip(*(line.split() for line in lines), strict=True)
    assert len(set(pids)) == 1 and int(pids[0]) != os.getpid()
    assert set(mirror) == {str(command == "finetune-gan")}  # --mirror: the loader flips items by their seeds


def test_mirror_flips_are_a_function_of_the_item_seed():
    """Which drawn items flip depends on (seed, tick, place in the global draw) alone, through the item's seed:
    not on the process, the worker, what was drawn before or where the run resumed; about half do."""
    seeds = [seed_for(seed_for(3, tick, 0, 1), step, k) for tick in range(4) for step in range(5) for k in range(8)]
    flips = [mirrored(seed) for seed in seeds]
    torch.manual_seed(123)  # the process's own generator plays no part
    assert [mirrored(seed) for seed in seeds] == flips
    assert 0.35 < sum(flips) / len(flips) < 0.65
    items = SeededItems(Noisy(), mirror=True)
    plain = SeededItems(Noisy())
    for seed in seeds[:16]:
        image, flipped = plain[5, seed][0], items[5, seed][0]
        assert torch.equal(flipped, image.flip(-1) if mirrored(seed) else image)


# --- click's usage errors under torchrun ------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "printed"), [("1", False), ("0", True)])
def test_a_usage_error_is_printed_by_rank_0_alone(rank, printed):
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_RUN_ID"}
    result = subprocess.run(
        [sys.executable, "-m", "viscoin_cli", "train", "--no-such-option"],
        capture_output=True,
        text=True,
        env={**env, "RANK": rank},
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    if printed:
        assert result.stderr.startswith("error: no such option --no-such-option"), result.stderr
        assert len(result.stderr.splitlines()) == 1
    else:
        assert result.stderr == ""


def test_classifier_training_keeps_its_workers_and_reshuffles(tmp_path, monkeypatch):
    """`pretrain-classifier --workers 1` for two epochs: every training image is loaded by one worker process
    that lasts the run (persistent), yet each epoch reads its own order (the sampler runs in the main
    process), the very (index, seed) items `--workers 0` reads."""
    log = tmp_path / "items"
    load = SeededItems.__getitem__

    def logged(self, key):
        with open(log, "a") as fh:  # the forked worker inherits this patch and appends its pid
            fh.write(f"{os.getpid()} {key[0]} {key[1]}\n")
        return load(self, key)

    monkeypatch.setattr(SeededItems, "__getitem__", logged)
    common = ["--dataset", "digits", "--resolution", "16", "--width", "4", "--batch-size", "64", "--epochs", "2"]
    read = {}
    for workers in ("0", "1"):
        result = run_cli("pretrain-classifier", *common, "--device", "cpu", "--quiet", "--workers", workers,
                         "--out", tmp_path / f"run{workers}")  # fmt: skip
        assert result.exit_code == 0, result.output
        read[workers] = [line.split() for line in log.read_text().splitlines()]
        log.unlink()
    pids = {pid for pid, *_ in read["1"]}
    assert len(pids) == 1 and int(pids.pop()) != os.getpid()
    items = [tuple(item) for _, *item in read["1"]]
    assert items == [tuple(item) for _, *item in read["0"]]
    half = len(items) // 2
    first, second = items[:half], items[half:]
    assert len(set(first)) == half and [i for i, _ in first] != [i for i, _ in second]  # epochs differ
    assert {seed for _, seed in first}.isdisjoint(seed for _, seed in second)  # each epoch its own seeds
