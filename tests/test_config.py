"""Typed training configs: presets, type checks on options.json, resume rules, choices validated by type."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli

from viscoin_cli.choices import Arch, DatasetName, LpipsNet
from viscoin_cli.errors import UserError
from viscoin_cli.training.classifier import ClassifierConfig
from viscoin_cli.training.viscoin import VisCoINConfig

# An options.json as the previous release wrote it for `viscoin train --dataset digits` (every key, as JSON).
RELEASED_VISCOIN_OPTIONS = {
    "alpha": 0.5,
    "bbox_crop": False,
    "beta": 0.0,
    "classifier": "f.safetensors",
    "data_root": None,
    "dataset": "digits",
    "delta": 0.2,
    "device": "cpu",
    "gamma_rc": 0.1,
    "generator": "G.safetensors",
    "grid_every": 1000,
    "hidden": 64,
    "iterations": 50,
    "log_every": 100,
    "lpips": "none",
    "lpips_weights": None,
    "lr": 0.0001,
    "num_concepts": 64,
    "precision": "fp32",
    "real_batch": 16,
    "resolution": None,
    "seed": 0,
    "skip_bad_images": False,
    "support_ws": [-2, -1],
    "synthetic_batch": 16,
    "workers": 0,
    "world_size": 1,
}


def test_preset_then_given_options():
    config = ClassifierConfig.create({"dataset": "cars", "epochs": 3})
    assert (config.arch, config.optimizer, config.milestones, config.epochs) == ("resnet50", "sgd", [30, 60], 3)
    assert isinstance(config.arch, Arch) and config.dataset is DatasetName.cars


def test_classifier_val_fraction_new_runs_and_runs_of_the_previous_release():
    assert ClassifierConfig.create({"dataset": "digits"}).val_fraction == 0.1  # every preset holds out 10%
    assert ClassifierConfig.create({"dataset": "cub", "val_fraction": 0}).val_fraction == 0.0
    released = {
        k: v for k, v in ClassifierConfig.create({"dataset": "digits"}).to_json().items() if k != "val_fraction"
    }
    assert ClassifierConfig.from_json(released, "options.json").val_fraction == 0.0  # trained on the whole split
    with pytest.raises(UserError, match=r"--val-fraction 1.0: expected a fraction in \[0, 1\)"):
        ClassifierConfig.create({"dataset": "digits", "val_fraction": 1.0})


def test_viscoin_digits_defaults_follow_from_the_dataset():
    config = VisCoINConfig.create({"dataset": "digits"})
    assert config.lpips is LpipsNet.none and config.beta == 0.0  # no LPIPS weights offline
    assert config.classifier.endswith("classifier.safetensors") and config.support_ws == [-2, -1]
    with_weights = VisCoINConfig.create({"dataset": "digits", "lpips_weights": "alex.pth"})
    assert with_weights.lpips is LpipsNet.alex and with_weights.beta == 3.0


def test_real_datasets_need_f_and_g():
    with pytest.raises(UserError, match="--classifier and --generator are required"):
        VisCoINConfig.create({"dataset": "cub"})


def test_json_round_trip_is_the_released_options_file():
    config = VisCoINConfig.from_json(RELEASED_VISCOIN_OPTIONS, "options.json")
    # `method` came with the baselines (absent: viscoin), `compile` later (absent: off)
    now = {**RELEASED_VISCOIN_OPTIONS, "method": "viscoin", "compile": False}
    assert config.to_json() == now
    assert json.loads(json.dumps(config.to_json())) == now


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_conceptz": 3}, "unknown option 'num_conceptz'"),
        ({"iterations": "50"}, "iterations = '50': expected int"),
        ({"iterations": 5.5}, "iterations = 5.5: expected int"),
        ({"skip_bad_images": 1}, "skip_bad_images = 1: expected bool"),
        ({"lpips": "squeeze"}, "lpips = 'squeeze': expected one of alex, vgg, none"),
        ({"support_ws": [0, "x"]}, r"support_ws\[1\] = 'x'"),
        ({"dataset": "mnist"}, "dataset = 'mnist'"),
    ],
)
def test_bad_field_in_options_json(change, message):
    with pytest.raises(UserError, match=message):
        VisCoINConfig.from_json({**RELEASED_VISCOIN_OPTIONS, **change}, "options.json")


def test_resume_changes_only_resumable_fields(tmp_path):
    options = tmp_path / "options.json"
    options.write_text(json.dumps(RELEASED_VISCOIN_OPTIONS))
    resumed = VisCoINConfig.resume(options, {"iterations": 80, "num_concepts": 64, "device": "cuda"})
    assert resumed.iterations == 80 and resumed.device == "cpu"  # runtime options are the command's business
    with pytest.raises(UserError, match="--concepts cannot change when resuming"):
        VisCoINConfig.resume(options, {"num_concepts": 32})


def test_resume_refuses_a_tampered_options_json(tmp_path, tiny_model):
    run = tiny_model.parent
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("options.json", "latest.state.safetensors"):
        (broken / name).write_bytes((run / name).read_bytes())
    options = json.loads((broken / "options.json").read_text())
    (broken / "options.json").write_text(json.dumps({**options, "hidden": "wide"}))
    line = assert_one_line_error(run_cli("train", "--resume", broken, "--iterations", "5"))
    assert "hidden = 'wide': expected int" in line


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("train", "--lpips", "squeeze"),
        ("train", "--dataset", "mnist"),
        ("pretrain-classifier", "--arch", "vgg11"),
        ("pretrain-classifier", "--optimizer", "rmsprop"),
        ("pretrain-classifier", "--precision", "fp8"),
    ],
)
def test_bad_choice_is_one_line(command, option, value, tmp_path):
    line = assert_one_line_error(run_cli(command, option, value, "--out", tmp_path / "o"))
    assert value in line
    assert not (tmp_path / "o").exists()  # refused before anything is written


@pytest.mark.parametrize("command", [["pretrain-classifier"], ["finetune-gan"], ["train", "--method", "flint"]])
def test_bbox_crop_on_a_dataset_without_boxes_is_refused_before_the_run_folder(command, tmp_path):
    line = assert_one_line_error(run_cli(*command, "--dataset", "digits", "--bbox-crop", "--out", tmp_path / "o"))
    assert "--bbox-crop applies to cub and cars, not digits" in line
    assert not (tmp_path / "o").exists()


def test_resume_refuses_a_length_below_what_is_done(tiny_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("options.json", "latest.state.safetensors"):
        (run / name).write_bytes((tiny_model.parent / name).read_bytes())
    before = (run / "options.json").read_text()
    line = assert_one_line_error(run_cli("train", "--resume", run, "--iterations", "2"))  # the run did 4
    assert "--iterations 2" in line and "already done 4" in line
    assert (run / "options.json").read_text() == before  # refused before anything was rewritten


def test_gan_length_is_compared_in_kimg(tmp_path):
    from viscoin_cli.io.checkpoint import save_state
    from viscoin_cli.training.gan import GanConfig

    save_state(tmp_path / "latest.state.safetensors", {"tick": 1}, step=2048)  # 2.048 kimg shown
    with pytest.raises(UserError, match="--kimg 2: .* already done 2.048"):
        GanConfig(kimg=2.0).check_length(tmp_path / "latest.state.safetensors")
    GanConfig(kimg=2.048).check_length(tmp_path / "latest.state.safetensors")
