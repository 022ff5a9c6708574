"""One run per folder: the run folder's lock, what killed runs leave behind, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator
from safetensors.torch import load_file

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import read_meta
from viscoin_cli.runtime import Runtime
from viscoin_cli.training.run import LOCK_NAME, open_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="run folders are locked with flock (not on Windows)")

VISCOIN = Path(sys.executable).parent / "viscoin"
CPU = Runtime(device=torch.device("cpu"), precision="fp32", seed=0)
CLASSIFIER = ["--dataset", "digits", "--width", "4", "--batch-size", "64", "--device", "cpu", "--quiet"]
STRAYS = [
    ".latest.safetensors.12345.tmp",
    ".latest.state.safetensors.12345.tmp",
    ".best.safetensors.7.tmp",
    ".fakes000000.png.99.tmp",
    "metrics.jsonl.tmp",
    "options.json.tmp",
]


def _open(path: Path, **kw):
    """`open_run` as a training command calls it, on `path` as --out (or --resume with resume=True)."""
    resume = kw.pop("resume", False)
    where = {"out": None, "resume": path} if resume else {"out": path, "resume": None}
    return open_run(CPU, **where, force=kw.pop("force", False), default_name="test")


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _finished_run(path: Path) -> Path:
    """A folder that looks like a run that may be resumed (what open_run checks for)."""
    path.mkdir()
    (path / "options.json").write_text("{}")
    (path / "latest.safetensors").write_bytes(b"weights")
    (path / "latest.state.safetensors").write_bytes(b"state")
    return path


def _hold(path: Path) -> subprocess.Popen:
    """Another process that opens `path` as a run folder (its lock) and sleeps; returns once it holds it."""
    code = (
        "import sys, time; from pathlib import Path; import torch;"
        "from viscoin_cli.runtime import Runtime; from viscoin_cli.training.run import open_run;"
        "rt = Runtime(device=torch.device('cpu'), precision='fp32', seed=0);"
        "open_run(rt, out=None, resume=Path(sys.argv[1]), force=False, default_name='x');"
        "print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "locked":
        proc.kill()
        pytest.fail("the process meant to hold the lock did not get it")
    return proc


# --- the lock ------------------------------------------------------------------------------------------


def test_a_held_folder_is_refused_even_with_force_and_left_untouched(tmp_path):
    out = _finished_run(tmp_path / "run")
    with _open(out, resume=True)[0]:
        (out / ".latest.safetensors.12345.tmp").write_bytes(b"half")
        before = _contents(out)
        with pytest.raises(UserError) as refused:
            _open(out, force=True)
        assert _contents(out) == before  # no artefact removed, no stray cleaned, the lock file still ours
    message = str(refused.value)
    assert message == (
        f"--out {out} is in use by another viscoin run (pid {os.getpid()}); wait for it to finish or pick another --out"
    )


def test_resuming_a_run_that_goes_on_is_refused(tmp_path):
    out = _finished_run(tmp_path / "run")
    busy = pytest.raises(UserError, match=re.escape(f"--resume {out} is in use by another viscoin run"))
    with _open(out, resume=True)[0], busy:
        _open(out, resume=True)


def test_the_lock_is_released_and_its_file_removed_when_the_run_ends(tmp_path):
    out = tmp_path / "run"
    with _open(out)[0]:
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert list(out.iterdir()) == []
    _open(out)[0].close()  # free again


def test_the_cli_is_refused_while_another_process_runs_in_the_folder(tmp_path):
    out = _finished_run(tmp_path / "run")
    holder = _hold(out)
    try:
        before = _contents(out)
        cli = [str(VISCOIN), "pretrain-classifier", *CLASSIFIER, "--epochs", "1", "--out", str(out), "--force"]
        result = subprocess.run(cli, capture_output=True, text=True, timeout=300, check=False)
        assert _contents(out) == before  # options.json not rewritten, nothing removed by --force
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: --out {out} is in use by another viscoin run (pid {holder.pid}); "
                     "wait for it to finish or pick another --out"]  # fmt: skip


def test_resume_from_the_cli_is_refused_while_the_run_goes_on(tmp_path):
    out = tmp_path / "run"
    assert run_cli("pretrain-classifier", *CLASSIFIER, "--epochs", "1", "--out", out).exit_code == 0
    with _open(out, resume=True)[0]:
        before = _contents(out)
        line = assert_one_line_error(run_cli("pretrain-classifier", "--resume", out, "--epochs", "2"))
        assert _contents(out) == before
    assert line.startswith(f"error: --resume {out} is in use by another viscoin run (pid {os.getpid()})")


def test_the_lock_of_a_killed_run_is_stale(tmp_path):
    out = _finished_run(tmp_path / "run")
    holder = _hold(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # left behind, but no longer held
    with _open(out, resume=True)[0]:
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_a_lock_file_alone_does_not_make_a_folder_non_empty(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("12345 elsewhere\n")  # a run killed as it started
    (out / "options.json").write_text("{}")
    _open(out)[0].close()  # no --force needed
    assert list(out.iterdir()) == []


# --- leftovers of killed writes --------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["fresh", "force", "resume"])
def test_temporary_files_of_killed_writes_are_removed_on_the_next_start(tmp_path, start):
    out = _finished_run(tmp_path / "run") if start != "fresh" else tmp_path / "run"
    out.mkdir(exist_ok=True)
    for name in STRAYS:
        (out / name).write_bytes(b"half a file")
    if start != "fresh":  # (a file of the user's would make the folder non-empty)
        (out / "notes.1.tmp").write_text("mine")  # not what a run writes: kept
    run, _ = _open(out, resume=start == "resume", force=start == "force")
    with run:
        names = {p.name for p in out.iterdir()}
    assert not names & set(STRAYS)
    assert start == "fresh" or "notes.1.tmp" in names


# --- SIGKILL, then --resume, gives the uninterrupted run bit for bit -------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    return save_tiny_classifier(folder / "f.safetensors"), save_tiny_generator(folder / "G.safetensors")


def _trainers(parts) -> dict[str, tuple[list[object], list[object], str]]:
    """command and options, the run's length, the metrics key of its checkpoints."""
    f_path, g_path = parts
    gan = ["finetune-gan", "--dataset", "digits", "--resolution", "16", "--batch-size", "8", "--tick-kimg", "0.064"]
    gan += ["--snap", "1", "--grid-size", "4", "--cbase", "256", "--cmax", "16", "--map", "1", "--device", "cpu"]
    train = ["train", "--classifier", f_path, "--generator", g_path, "--dataset", "digits", "--concepts", "8"]
    train += ["--hidden", "8", "--real-batch", "4", "--synthetic-batch", "4", "--log-every", "2", "--grid-every", "2"]
    return {
        "pretrain-classifier": (["pretrain-classifier", *CLASSIFIER], ["--epochs", "2"], "epoch"),
        "finetune-gan": ([*gan, "--quiet"], ["--kimg", "0.192"], "tick"),
        "train": ([*train, "--device", "cpu", "--quiet"], ["--iterations", "6"], "step"),
    }


def _kill_after_the_first_state(args: list[object], out: Path) -> None:
    """Run `viscoin ARGS --out OUT` in a process of its own; SIGKILL it once it has written a resume state."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as in here
    proc = subprocess.Popen(
        [str(VISCOIN), *map(str, args), "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not ((out / "latest.state.safetensors").exists() and (out / "metrics.jsonl").exists()):
        assert proc.poll() is None, proc.stderr.read().decode()
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no resume state within 120 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished


@pytest.mark.slow
@pytest.mark.parametrize("command", ["pretrain-classifier", "finetune-gan", "train"])
def test_resume_after_sigkill_is_bit_exact(parts, tmp_path, command):
    args, length, key = _trainers(parts)[command]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_cli(*args, *length, "--out", straight)
    assert result.exit_code == 0, result.output

    _kill_after_the_first_state([*args, *length], killed)
    assert (killed / LOCK_NAME).exists()  # a stale lock: the resume below goes ahead all the same
    assert read_meta(killed / "latest.state.safetensors").step < read_meta(straight / "latest.safetensors").step
    result = run_cli(command, "--resume", killed, *length, "--quiet")
    assert result.exit_code == 0, result.output

    expected, got = load_file(straight / "latest.safetensors"), load_file(killed / "latest.safetensors")
    assert expected.keys() == got.keys()
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    steps = [json.loads(line)[key] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)[key] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(set(steps)) == len(steps)
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME]
