"""`finetune-gan` and `generate` end to end on digits with a tiny generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_G, assert_one_line_error, run_cli
from PIL import Image

from viscoin_cli.io.checkpoint import load_checkpoint, read_meta

# 16 px, 16 channels, batch 8: a tick of 64 images takes well under a second on a CPU.
ARCH = ["--cbase", "256", "--cmax", "16", "--map", "1"]
RUN = ["--dataset", "digits", "--resolution", "16", "--batch-size", "8", "--tick-kimg", "0.064", "--snap", "1"]
RUN += ["--grid-size", "4", "--device", "cpu", "--quiet"]
TINY = RUN + ARCH


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan") / "run"
    result = run_cli("finetune-gan", *TINY, "--kimg", "0.128", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_run_folder_has_snapshots_grids_and_metrics(gan_run):
    out, summary = gan_run
    assert summary["kimg"] == pytest.approx(0.128)
    names = {p.name for p in out.iterdir()}
    assert {"options.json", "metrics.jsonl", "latest.safetensors", "latest.D.safetensors",
            "latest.state.safetensors", "fakes000000.png"} <= names  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in records] == [1, 2]
    for key in ("loss_G", "loss_D_real", "loss_D_fake", "loss_r1", "loss_pl", "p", "r_t", "kimg_per_sec"):
        assert key in records[-1], key
    assert all(np.isfinite(r["loss_G"]) for r in records)


def test_fakes_grid_has_the_requested_images(gan_run):
    out, _ = gan_run
    with Image.open(out / "fakes000000.png") as grid:
        assert grid.size == (2 * 18 + 2, 2 * 18 + 2)  # 4 images of 16 px, 2 per row, padding 2


def test_generator_checkpoint_is_self_describing(gan_run):
    out, _ = gan_run
    meta = read_meta(out / "latest.safetensors", kind="generator")
    assert meta.config["img_resolution"] == 16 and meta.config["mapping_kwargs"]["num_layers"] == 1
    assert meta.dataset["name"] == "digits" and meta.step == 128
    assert read_meta(out / "latest.D.safetensors", kind="discriminator").config["img_resolution"] == 16


def test_resume_reproduces_the_uninterrupted_run(gan_run, tmp_path):
    out, _ = gan_run
    resumed = tmp_path / "r"
    assert run_cli("finetune-gan", *TINY, "--kimg", "0.064", "--out", resumed).exit_code == 0
    result = run_cli("finetune-gan", "--resume", resumed, "--kimg", "0.128", "--quiet")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in records] == [1, 2]
    straight, _ = load_checkpoint(out / "latest.safetensors")
    continued, _ = load_checkpoint(resumed / "latest.safetensors")
    for name, tensor in straight.items():
        assert torch.allclose(tensor, continued[name], atol=1e-5), name


# options.json as the release before the typed configs wrote it for `finetune-gan *TINY --kimg 0.128` (G_kwargs
# and D_kwargs aside): the same keys and values, so a run folder it wrote still loads and resumes.
RELEASE_OPTIONS = {
    "ada_kimg": 50, "aug": "ada", "batch_size": 8, "bbox_crop": False, "cbase": 256, "cmax": 16, "data_root": None,
    "dataset": "digits", "device": "cpu", "discriminator": None, "dlr": 0.0025, "ema_kimg": 10.0, "ema_rampup": 0.05,
    "fid_classifier": None, "fid_features": None, "fid_images": 2000, "fp16_res": 0, "freeze_d": 0, "gamma": None,
    "glr": 0.0025, "grid_size": 4, "inception_weights": None, "keep_snapshots": False, "kimg": 0.128, "map": 1,
    "mbstd": 8, "mirror": False, "p": 0.2, "pl_weight": 0.0, "precision": "fp32", "resolution": 16,
    "resume_from": None, "seed": 0, "skip_bad_images": False, "snap": 1, "style_mixing": 0.0, "target": 0.6,
    "tick_kimg": 0.064, "w_dim": 128, "workers": 0, "world_size": 1, "z_dim": 128,
}  # fmt: skip


# keys added since, with the value that keeps the released behaviour
ADDED_OPTIONS = {"xflip_strength": 1.0, "compile": False, "pool": False}


def test_options_json_keeps_the_released_keys_and_values(gan_run):
    out, _ = gan_run
    options = json.loads((out / "options.json").read_text())
    assert {k: v for k, v in options.items() if k not in ("G_kwargs", "D_kwargs")} == RELEASE_OPTIONS | ADDED_OPTIONS
    assert options["G_kwargs"]["mapping_kwargs"] == {"num_layers": 1} and options["D_kwargs"]["img_resolution"] == 16


def test_older_options_json_gets_the_released_fallbacks():
    from viscoin_cli.training.gan import GanConfig

    older = {k: v for k, v in RELEASE_OPTIONS.items() if k not in ("style_mixing", "pl_weight", "fid_images")}
    config = GanConfig.from_json(older, "options.json")
    assert (config.style_mixing, config.pl_weight, config.fid_images) == (0.9, 2.0, 2000)
    assert GanConfig.from_json(RELEASE_OPTIONS, "options.json").to_json() == {
        **RELEASE_OPTIONS, **ADDED_OPTIONS, "G_kwargs": {}, "D_kwargs": {}
    }  # fmt: skip


def test_finetune_from_a_generator_checkpoint(gan_run, tmp_path):
    out, _ = gan_run
    result = run_cli("finetune-gan", *RUN, "--kimg", "0.064", "--resume-from", out / "latest.safetensors",
                 "--freeze-d", "1", "--out", tmp_path / "ft")  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "ft" / "options.json").read_text())
    assert options["discriminator"].endswith("latest.D.safetensors") and options["ada_kimg"] == 100


def test_finetuning_with_the_checkpoints_own_network_options_copies_everything(gan_run, tmp_path):
    out, _ = gan_run  # TINY's network options are those of the run's networks
    result = run_cli("finetune-gan", *TINY, "--kimg", "0.064", "--resume-from", out / "latest.safetensors",
                     "--out", tmp_path / "same", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["resume_from"]
    for net in ("generator", "discriminator"):
        assert record[net]["copied"] == record[net]["total"] and not record[net]["fresh"] and not record[net]["dropped"]


def test_resume_refuses_to_change_the_training_setup(gan_run):
    out, _ = gan_run
    line = assert_one_line_error(run_cli("finetune-gan", "--resume", out, "--glr", "0.01", "--quiet"))
    assert "--glr" in line and "resuming" in line


@pytest.mark.parametrize("drop", ["img_resolution", "z_dim"])
def test_finetuning_a_generator_with_a_bad_config_is_one_line(tmp_path, drop):
    from viscoin_cli.io.checkpoint import save_checkpoint

    config = {k: v for k, v in TINY_G.items() if k != drop}
    path = save_checkpoint(tmp_path / "G.safetensors", {}, kind="generator", config=config)
    line = assert_one_line_error(
        run_cli("finetune-gan", *TINY[:2], "--resume-from", path, "--out", tmp_path / "x", "--quiet")
    )
    assert "G.safetensors" in line and "generator config not understood" in line


def test_quiet_still_prints_the_result(gan_run, tmp_path):
    out, _ = gan_run
    result = run_cli(
        "finetune-gan", *RUN, "--kimg", "0.064", "--resume-from", out / "latest.safetensors", "--out", tmp_path / "q"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"generator: {tmp_path / 'q' / 'latest.safetensors'}"


def test_resolution_mismatch_with_the_generator_is_refused(gan_run, tmp_path):
    out, _ = gan_run
    line = assert_one_line_error(run_cli("finetune-gan", *TINY[:2], "--resolution", "32", "--resume-from",
                              out / "latest.safetensors", "--device", "cpu", "--out", tmp_path / "x"))  # fmt: skip
    assert "16 px" in line and "32 px" in line


def test_generate_png_grid_and_npy(gan_run, tmp_path):
    out, _ = gan_run
    G = out / "latest.safetensors"
    result = run_cli("generate", "--generator", G, "--seeds", "0-5", "--columns", "3", "--out", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size == (3 * 18 + 2, 2 * 18 + 2)
    assert (
        run_cli(
            "generate", "--generator", G, "--seeds", "0-5", "--format", "npy", "--out", tmp_path / "a.npy"
        ).exit_code
        == 0
    )
    assert (
        run_cli(
            "generate", "--generator", G, "--seeds", "3,4", "--format", "npy", "--out", tmp_path / "b.npy"
        ).exit_code
        == 0
    )
    first, second = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert first.shape == (6, 3, 16, 16) and first.dtype == np.float32
    np.testing.assert_allclose(first[3:5], second, atol=1e-5)  # a seed gives the same image in any batch


def test_generate_uses_nvidias_seed_convention(gan_run, tmp_path):
    from viscoin_cli.nets.stylegan2 import load_generator

    out, _ = gan_run
    assert run_cli("generate", "--generator", out / "latest.safetensors", "--seeds", "7", "--truncation", "0.5",
               "--format", "npy", "--out", tmp_path / "s.npy").exit_code == 0  # fmt: skip
    G, _ = load_generator(out / "latest.safetensors")
    z = torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim)).float()
    with torch.no_grad():
        expected = G(z, None, truncation_psi=0.5, noise_mode="const").numpy()
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5-2"], "--seeds"),
        (["--noise-mode", "loud"], "--noise-mode"),
        (["--class", "1"], "not a conditional generator"),
        (["--format", "jpg"], "--format"),
    ],
)
def test_generate_bad_options(gan_run, args, message):
    out, _ = gan_run
    assert message in assert_one_line_error(run_cli("generate", "--generator", out / "latest.safetensors", *args))


def test_generate_refuses_a_classifier_checkpoint(tmp_path):
    from viscoin_cli.io.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "f.safetensors", {"w": torch.zeros(1)}, kind="classifier", config={})
    assert "expected a generator checkpoint" in assert_one_line_error(run_cli("generate", "--generator", path))


def test_fid_tracking_with_classifier_features(tmp_path):
    from viscoin_cli.io.checkpoint import save_checkpoint
    from viscoin_cli.metrics.fid import ClassifierFeatures, feature_statistics, frechet_distance, generator_fid
    from viscoin_cli.nets.classifier import Classifier, load_classifier
    from viscoin_cli.nets.stylegan2 import load_generator

    torch.manual_seed(0)
    f = Classifier("resnet18", 10, width=4, stem="small")
    f_path = save_checkpoint(tmp_path / "f.safetensors", f.state_dict(), kind="classifier", config=f.config)
    out = tmp_path / "run"
    args = ["--kimg", "0.128", "--fid-features", "classifier", "--fid-classifier", f_path, "--fid-images", "32"]
    result = run_cli("finetune-gan", *TINY, *args, "--out", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["fid"] > 0 and r["fid_features"].startswith("classifier f.safetensors") for r in records)
    # the logged value is the FID of the saved generator against the first 32 shuffled training images
    from viscoin_cli.data import load_dataset

    dataset = load_dataset("digits", "train", resolution=16)
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:32].tolist()
    extractor = ClassifierFeatures(load_classifier(f_path)[0], "f")
    real = feature_statistics(extractor.features([torch.stack([dataset[i][0] for i in indices])]))
    G, _ = load_generator(out / "latest.safetensors")
    assert generator_fid(G, extractor, real, 32, seed=0) == pytest.approx(records[-1]["fid"], rel=1e-4)
    assert frechet_distance(*real, *real) == pytest.approx(0, abs=1e-6)


def test_fid_classifier_features_need_a_classifier(tmp_path):
    line = assert_one_line_error(
        run_cli("finetune-gan", *TINY, "--fid-features", "classifier", "--out", tmp_path / "x")
    )
    assert "--fid-classifier" in line


def test_generate_says_when_the_weights_are_not_finite(tmp_path):
    from conftest import save_tiny_generator

    from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(save_tiny_generator(tmp_path / "G.safetensors"), kind="generator")
    name = next(k for k, t in tensors.items() if t.is_floating_point() and k.startswith("synthesis"))
    tensors = {**tensors, name: torch.full_like(tensors[name], float("inf"))}
    broken = save_checkpoint(tmp_path / "inf.safetensors", tensors, kind="generator", config=meta.config)
    result = run_cli("generate", "--generator", broken, "--seeds", "0-1", "--out", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1 and f"(e.g. {name})" in result.stderr
