"""`viscoin train` end to end on digits with tiny f and G, and the Python API it produces."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import load_checkpoint, read_meta, save_checkpoint
from viscoin_cli.nets.viscoin import load_viscoin

TINY = ["--dataset", "digits", "--concepts", "8", "--hidden", "8", "--real-batch", "4", "--synthetic-batch", "4"]
TINY += ["--log-every", "2", "--grid-every", "2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    return (
        save_tiny_classifier(folder / "f.safetensors"),
        save_tiny_generator(folder / "G.safetensors"),
        folder,
    )


@pytest.fixture(scope="module")
def trained(parts, tmp_path_factory):
    f_path, g_path, _ = parts
    out = tmp_path_factory.mktemp("train") / "run"
    result = run_cli(
        "train", "--classifier", f_path, "--generator", g_path, *TINY, "--iterations", "4", "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_run_folder_and_metrics(trained):
    out, summary = trained
    assert summary["iterations"] == 4 and 0 <= summary["g_accuracy"] <= 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for term in (
        "fidelity",
        "rec_l2",
        "rec_l1",
        "rec_lpips",
        "rec_class",
        "sparsity",
        "orthogonality",
        "w_reg",
        "loss",
        "train_agreement",
    ):
        assert term in records[0], term
    assert (out / "recon0000004.png").is_file()
    options = json.loads((out / "options.json").read_text())
    assert options["lpips"] == "none" and options["beta"] == 0.0


def test_checkpoint_records_its_parents_and_loads(trained, parts):
    out, _ = trained
    _, g_path, _ = parts
    meta = read_meta(out / "latest.safetensors", kind="viscoin")
    assert set(meta.parents) == {"classifier", "generator"}
    assert meta.parents["generator"]["path"] == str(g_path.resolve())
    tensors, _ = load_checkpoint(out / "latest.safetensors")
    assert all(name.split(".")[0] in ("psi", "theta", "omega") for name in tensors)
    model, _ = load_viscoin(out / "latest.safetensors")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        result = model(images)
    assert result.concept_maps.shape == (2, 8, 3, 3) and result.recon.shape == (2, 3, 16, 16)
    assert result.ws.shape == (2, model.G.num_ws, 16) and result.logits.shape == (2, 10)
    edited = result.concept_maps.clone()
    edited[:, 0] *= 3
    with torch.no_grad():
        assert model.render(edited, result.support).shape == (2, 3, 16, 16)


def test_loading_refuses_a_changed_generator(trained, tmp_path):
    out, _ = trained
    other = save_tiny_generator(tmp_path / "other.safetensors")
    tensors, meta = load_checkpoint(other)
    tensors = {k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}
    save_checkpoint(other, tensors, kind="generator", config=meta.config, dataset=meta.dataset)
    with pytest.raises(UserError, match="sha256 differs"):
        load_viscoin(out / "latest.safetensors", generator=other)


def test_resume_to_the_same_step_count(trained, parts, tmp_path):
    out, _ = trained
    f_path, g_path, _ = parts
    resumed = tmp_path / "r"
    assert (
        run_cli(
            "train", "--classifier", f_path, "--generator", g_path, *TINY, "--iterations", "2", "--out", resumed
        ).exit_code
        == 0
    )
    result = run_cli("train", "--resume", resumed, "--iterations", "4", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_meta(resumed / "latest.safetensors").step == 4
    straight, _ = load_checkpoint(out / "latest.safetensors")
    continued, _ = load_checkpoint(resumed / "latest.safetensors")
    for name, tensor in straight.items():
        assert torch.allclose(tensor, continued[name], atol=1e-5), name


def test_generator_resolution_must_match_the_data(parts, tmp_path):
    f_path, _, folder = parts
    g32 = save_tiny_generator(folder / "G32.safetensors", resolution=32)
    line = assert_one_line_error(
        run_cli(
            "train", "--classifier", f_path, "--generator", g32, *TINY, "--resolution", "16", "--out", tmp_path / "x"
        )
    )
    assert "32 px" in line and "16 px" in line


def test_digits_preset_gives_gamma_the_last_two_w_vectors(trained):
    out, _ = trained
    assert read_meta(out / "latest.safetensors", kind="viscoin").config["support_ws"] == [4, 5]  # 6 W+ at 16 px


def test_support_ws_option(parts, tmp_path):
    f_path, g_path, _ = parts
    args = ("train", "--classifier", f_path, "--generator", g_path, *TINY, "--iterations", "1")
    assert run_cli(*args, "--support-ws", "0,-1", "--out", tmp_path / "a").exit_code == 0
    assert read_meta(tmp_path / "a" / "latest.safetensors").config["support_ws"] == [0, 5]


@pytest.mark.parametrize(
    ("value", "message"),
    [("x", "comma-separated integers"), ("0,1,2,3,4,5", "at least one W+ vector"), ("6", "expected some of 0..5")],
)
def test_bad_support_ws(parts, tmp_path, value, message):
    f_path, g_path, _ = parts
    args = ("train", "--classifier", f_path, "--generator", g_path, *TINY, "--support-ws", value)
    assert message in assert_one_line_error(run_cli(*args, "--out", tmp_path / "x"))


def test_wrong_kind_for_the_generator(parts, tmp_path):
    f_path, _, _ = parts
    line = assert_one_line_error(
        run_cli("train", "--classifier", f_path, "--generator", f_path, *TINY, "--out", tmp_path / "x")
    )
    assert "expected a generator checkpoint" in line
