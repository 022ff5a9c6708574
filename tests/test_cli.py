"""The `viscoin` entry point: help, errors, and `pretrain-classifier` end to end on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from typer.testing import CliRunner

from viscoin_cli.cli import app, load_commands
from viscoin_cli.io.checkpoint import load_checkpoint, read_meta, save_state

load_commands()
COMMANDS = sorted(c.name for c in app.registered_commands)
VISCOIN = Path(sys.executable).parent / "viscoin"
TINY = ["--dataset", "digits", "--width", "4", "--batch-size", "64", "--device", "cpu", "--quiet"]


# --- help ----------------------------------------------------------------------------------------------


def test_console_script_help():
    result = subprocess.run([str(VISCOIN), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "pretrain-classifier" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_through_console_script(command):
    result = subprocess.run([str(VISCOIN), command, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "--help" in result.stdout


def test_root_help_groups_commands_in_plain_text():
    # plain click formatting: rendering rich help would import ~0.1 s of modules for `viscoin --help`
    code = (
        "import sys; from viscoin_cli.cli import main; sys.argv = ['viscoin', '--help']\n"
        "try: main()\nexcept SystemExit: pass\nprint('rich imported:', any(m.startswith('rich') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[-1] == "rich imported: False"
    sections = [line[:-1] for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["Options", "Train", "Generator", "Interpret", "Pipeline"]
    assert lines.index("Train:") < next(i for i, line in enumerate(lines) if line.lstrip().startswith("train "))
    assert "\\[" not in result.stdout


def test_help_keeps_bracketed_text():
    # "[default: ...]" in a help text must not be eaten as rich markup.
    result = CliRunner().invoke(app, ["pretrain-classifier", "--help"], env={"COLUMNS": "200"})
    assert "[default: 32 for digits, else 256]" in result.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from viscoin_cli.cli import app, load_commands; "
        "load_commands(); runner = CliRunner(); "
        "codes = [runner.invoke(app, [*c, '--help']).exit_code for c in ([],) + tuple([n] for n in sys.argv[1:])]; "
        "print(codes, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"{[0] * (len(COMMANDS) + 1)} False"


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("viscoin ")


# --- pretrain-classifier end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch run of the tiny digits classifier (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("runs") / "f"
    result = run_cli("pretrain-classifier", *TINY, "--epochs", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_run_folder_is_complete(trained):
    out, summary = trained
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best.safetensors",
        "latest.safetensors",
        "latest.state.safetensors",
        "metrics.jsonl",
        "options.json",
    ]
    options = json.loads((out / "options.json").read_text())
    assert options["dataset"] == "digits" and options["epochs"] == 2 and options["width"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "epoch_seconds"} <= set(records[0])
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in records)


def test_checkpoint_metadata_is_complete(trained):
    out, summary = trained
    meta = read_meta(out / "latest.safetensors", kind="classifier")
    assert meta.config == {"arch": "resnet18", "num_classes": 10, "width": 4, "stem": "small"}
    assert meta.dataset["name"] == "digits" and meta.dataset["class_names"] == [str(i) for i in range(10)]
    assert meta.dataset["resolution"] == 32 and meta.dataset["channels"] == 3
    assert meta.step == 2 and meta.version and meta.created
    assert meta.extra["test_accuracy"] == pytest.approx(summary["final_test_accuracy"])


def test_best_is_a_copy_of_the_best_epoch(trained):
    out, _ = trained
    best = read_meta(out / "best.safetensors")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best_epoch = max(records, key=lambda r: r["test_accuracy"])["epoch"]
    assert best.step == best_epoch
    assert not (out / "best.safetensors").is_symlink()


def test_trained_classifier_learns_something(trained):
    _, summary = trained
    assert summary["best_test_accuracy"] > 0.3  # 10 classes: chance is 0.1


def test_second_run_into_same_out_is_refused(trained):
    out, _ = trained
    line = assert_one_line_error(run_cli("pretrain-classifier", *TINY, "--epochs", "1", "--out", out))
    assert "not empty" in line and "--force" in line


def test_force_overwrites(tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    (out / "options.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    result = run_cli("pretrain-classifier", *TINY, "--epochs", "1", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"  # --force only replaces what runs write
    assert json.loads((out / "options.json").read_text())["epochs"] == 1


def test_a_run_stopped_by_an_error_at_its_start_can_be_run_again(tmp_path):
    """A mistake found after --out is set up (here: a bad --weights file) leaves only options.json behind;
    the corrected command then needs no --force."""
    out = tmp_path / "f"
    line = assert_one_line_error(
        run_cli("pretrain-classifier", *TINY, "--weights", tmp_path / "nope.pth", "--out", out)
    )
    assert "nope.pth" in line and [p.name for p in out.iterdir()] == ["options.json"]
    result = run_cli("pretrain-classifier", *TINY, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "best.safetensors").is_file()


def test_resume_reproduces_the_uninterrupted_run(trained, tmp_path):
    out, _ = trained
    resumed = tmp_path / "r"
    assert run_cli("pretrain-classifier", *TINY, "--epochs", "1", "--out", resumed).exit_code == 0
    result = run_cli("pretrain-classifier", "--resume", resumed, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert read_meta(resumed / "latest.safetensors").step == 2
    straight, _ = load_checkpoint(out / "latest.safetensors")
    continued, _ = load_checkpoint(resumed / "latest.safetensors")
    for name, tensor in straight.items():
        assert torch.allclose(tensor, continued[name], atol=1e-5), name


def test_resume_refuses_a_changed_model_option(trained):
    out, _ = trained
    line = assert_one_line_error(run_cli("pretrain-classifier", "--resume", out, "--width", "8"))
    assert "--width cannot change when resuming" in line


def test_resume_of_a_folder_without_a_run(tmp_path):
    line = assert_one_line_error(run_cli("pretrain-classifier", "--resume", tmp_path))
    assert "no run to resume" in line


# --- bad input: one line, non-zero exit --------------------------------------------------------------


def test_wrong_checkpoint_kind_as_weights(tmp_path):
    save_state(tmp_path / "s.safetensors", {"a": 1}, step=0)
    line = assert_one_line_error(
        run_cli(
            "pretrain-classifier",
            *TINY,
            "--width",
            "64",
            "--weights",
            tmp_path / "s.safetensors",
            "--out",
            tmp_path / "o",
        )
    )
    assert "is a state checkpoint, expected a classifier checkpoint" in line


def test_truncated_weights_file(trained, tmp_path):
    out, _ = trained
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((out / "latest.safetensors").read_bytes()[:-100])
    line = assert_one_line_error(
        run_cli("pretrain-classifier", *TINY, "--width", "64", "--weights", cut, "--out", tmp_path / "o")
    )
    assert "truncated" in line


def test_missing_weights_file(tmp_path):
    line = assert_one_line_error(
        run_cli(
            "pretrain-classifier",
            *TINY,
            "--width",
            "64",
            "--weights",
            tmp_path / "nope.pth",
            "--out",
            tmp_path / "o",
        )
    )
    assert "no such file" in line


def test_missing_imagenet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    line = assert_one_line_error(
        run_cli(
            "pretrain-classifier",
            *TINY,
            "--width",
            "64",
            "--stem",
            "imagenet",
            "--weights",
            "imagenet",
            "--out",
            tmp_path / "o",
        )
    )
    assert "resnet18-f37072fd.pth" in line


def test_missing_dataset_root(tmp_path):
    line = assert_one_line_error(
        run_cli(
            "pretrain-classifier",
            "--dataset",
            "cub",
            "--data-root",
            tmp_path / "nowhere",
            "--device",
            "cpu",
            "--out",
            tmp_path / "o",
        )
    )
    assert "nowhere" in line


def test_unknown_dataset(tmp_path):
    line = assert_one_line_error(run_cli("pretrain-classifier", "--dataset", "mnist", "--out", tmp_path / "o"))
    assert "mnist" in line


def test_bad_device(tmp_path):
    line = assert_one_line_error(run_cli("pretrain-classifier", *TINY, "--device", "tpu", "--out", tmp_path / "o"))
    assert "tpu" in line


# --- torchrun ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_cpu_processes_only_rank0_writes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "viscoin_cli",
            "pretrain-classifier",
            *TINY,
            "--epochs",
            "1",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # exactly one JSON document: rank 1 printed nothing
    assert summary["epochs"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors",
        "latest.safetensors",
        "latest.state.safetensors",
        "metrics.jsonl",
        "options.json",
    ]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((out / "options.json").read_text())["world_size"] == 2
