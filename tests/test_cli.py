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
from viscoin_cli.io.checkpoint import load_checkpoint, load_state, read_meta, save_state

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
    assert "[default: 32 for digits and shapes, else 256]" in result.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from viscoin_cli.cli import app, load_commands; "
        "load_commands(); runner = CliRunner(); "
        "codes = [runner.invoke(app, [*c, '--help']).exit_code for c in ([],) + tuple([n] for n in sys.argv[1:])]; "
        "print(codes, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"{[0] * (len(COMMANDS) + 1)} False"


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("0", "0")])
def test_main_asks_torch_for_huge_pages_before_loading_it(given, expected):
    # The setting is read once, when torch starts; a value the user gave wins.
    code = (
        "import os, sys; from viscoin_cli.cli import main; sys.argv = ['viscoin', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ['THP_MEM_ALLOC_ENABLE'], 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.split()[-2:] == [expected, "False"]


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
    scores = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    assert scores | {"lr", "epoch_seconds"} <= set(records[0])
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in records)
    assert options["val_fraction"] == 0.1  # the default, recorded for --resume


def test_checkpoint_metadata_is_complete(trained):
    out, summary = trained
    meta = read_meta(out / "latest.safetensors", kind="classifier")
    assert meta.config == {"arch": "resnet18", "num_classes": 10, "width": 4, "stem": "small"}
    assert meta.dataset["name"] == "digits" and meta.dataset["class_names"] == [str(i) for i in range(10)]
    assert meta.dataset["resolution"] == 32 and meta.dataset["channels"] == 3
    assert meta.step == 2 and meta.version and meta.created
    assert meta.extra["test_accuracy"] == pytest.approx(summary["final_test_accuracy"])
    assert meta.dataset["val_fraction"] == 0.1 and meta.dataset["val_images"] == 142  # ~10% of each class


def test_best_is_a_copy_of_the_best_epoch(trained):
    out, summary = trained
    best = read_meta(out / "best.safetensors")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    chosen = max(records, key=lambda r: r["val_accuracy"])  # the first of equals: the earlier epoch
    assert best.step == chosen["epoch"] == summary["best_epoch"]
    assert best.extra == {"epoch": chosen["epoch"], "val_accuracy": chosen["val_accuracy"],
                          "test_accuracy": chosen["test_accuracy"]}  # fmt: skip
    assert summary["best_epoch_test_accuracy"] == chosen["test_accuracy"]
    assert not (out / "best.safetensors").is_symlink()


def test_trained_classifier_learns_something(trained):
    _, summary = trained
    # 10 classes, chance 0.1; 40 steps of a width-4 ResNet reach ~0.3 (0.27 on 2 threads, more on 1)
    assert summary["best_val_accuracy"] > 0.2
    assert summary["final_test_accuracy"] > 0.2


def test_best_is_chosen_by_validation_accuracy_not_by_test(tmp_path, monkeypatch):
    """Scripted accuracies: the test split would pick epoch 3 (or 1); validation picks epoch 2, whose tie
    with epoch 3 keeps the earlier epoch."""
    from viscoin_cli.training import classifier

    scripted = {"val": [0.5, 0.9, 0.9], "test": [0.9, 0.5, 0.95]}
    evaluated = []

    def fake_evaluate(model, loader, rt):  # noqa: ARG001
        evaluated.append((loader.dataset.split, len(loader.dataset)))
        return {"loss": 1.0, "accuracy": scripted[loader.dataset.split].pop(0)}

    monkeypatch.setattr(classifier, "evaluate", fake_evaluate)
    out = tmp_path / "f"
    args = ["--epochs", "3", "--resolution", "16", "--val-fraction", "0.2", "--out", out, "--json"]
    result = run_cli("pretrain-classifier", *TINY, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert evaluated == [("val", 287), ("test", 360)] * 3  # 20% of each class of the 1437 training images
    assert (summary["best_epoch"], summary["best_val_accuracy"], summary["best_epoch_test_accuracy"]) == (2, 0.9, 0.5)
    assert summary["final_test_accuracy"] == 0.95 and "best_test_accuracy" not in summary
    best = read_meta(out / "best.safetensors")
    assert best.step == 2 and best.extra == {"epoch": 2, "val_accuracy": 0.9, "test_accuracy": 0.5}
    assert best.dataset["val_fraction"] == 0.2 and best.dataset["val_images"] == 287
    assert json.loads((out / "options.json").read_text())["val_fraction"] == 0.2
    latest, _ = load_checkpoint(out / "latest.safetensors")
    chosen, _ = load_checkpoint(out / "best.safetensors")
    assert any(not torch.equal(tensor, chosen[name]) for name, tensor in latest.items())  # not the last epoch


def test_no_validation_split_makes_best_the_last_epoch(tmp_path):
    out = tmp_path / "f"
    args = ["--epochs", "2", "--resolution", "16", "--val-fraction", "0", "--out", out]
    result = run_cli("pretrain-classifier", *TINY, *args)
    assert result.exit_code == 0, result.output
    assert "no validation split: best is the last epoch" in result.stdout
    best = read_meta(out / "best.safetensors")
    assert best.step == 2 and "val_accuracy" not in best.extra and best.dataset["val_images"] == 0
    assert (out / "best.safetensors").read_bytes() == (out / "latest.safetensors").read_bytes()


def test_a_run_of_the_previous_release_resumes_on_the_whole_training_split(tmp_path):
    """Its options.json has no val_fraction: it goes on as it started, without a hold-out."""
    out = tmp_path / "old"
    args = ["--epochs", "1", "--resolution", "16", "--val-fraction", "0", "--out", out]  # as that release trained
    result = run_cli("pretrain-classifier", *TINY, *args)
    assert result.exit_code == 0, result.output
    options = json.loads((out / "options.json").read_text())
    del options["val_fraction"]
    (out / "options.json").write_text(json.dumps(options))
    state = load_state(out / "latest.state.safetensors")  # that release kept only the best test accuracy
    state = {k: v for k, v in state.items() if k not in ("best", "test_accuracy")} | {"best_accuracy": 0.9}
    save_state(out / "latest.state.safetensors", state, step=1)
    assert run_cli("pretrain-classifier", "--resume", out, "--epochs", "2", "--quiet").exit_code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [22, 44]  # 1437 // 64 steps an epoch: all training images
    assert "val_accuracy" not in records[1]
    assert json.loads((out / "options.json").read_text())["val_fraction"] == 0.0
    assert read_meta(out / "best.safetensors").step == 2
    line = assert_one_line_error(run_cli("pretrain-classifier", "--resume", out, "--val-fraction", "0.1"))
    assert "--val-fraction cannot change when resuming" in line


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", "nan", "inf"])
def test_bad_val_fraction_is_one_line(value, tmp_path):
    line = assert_one_line_error(
        run_cli("pretrain-classifier", *TINY, "--val-fraction", value, "--out", tmp_path / "o")
    )
    assert "--val-fraction" in line and "expected a fraction in [0, 1)" in line
    assert not (tmp_path / "o").exists()  # refused before anything is written


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
