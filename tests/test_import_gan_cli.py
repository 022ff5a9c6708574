"""`viscoin import-gan` through the CLI: a pickle in NVIDIA's persistence format becomes our checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import torch
from _fake_nvidia import as_persistent, augment_pipe, dump, marker_source
from conftest import run_cli

from viscoin_cli.cli import load_commands
from viscoin_cli.io.checkpoint import read_meta
from viscoin_cli.nets.stylegan2 import Discriminator, Generator, load_generator

load_commands()
G_KWARGS = dict(
    z_dim=16,
    c_dim=0,
    w_dim=16,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs={"num_layers": 2},
    synthesis_kwargs={"channel_base": 128, "channel_max": 16},
)
D_KWARGS = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)


def nvidia_pickle(path, source="", break_weights=False):
    torch.manual_seed(0)
    G, D = Generator(**G_KWARGS), Discriminator(**D_KWARGS)
    if break_weights:  # a diverged network: NaN in D's first layer
        with torch.no_grad():
            next(D.parameters()).fill_(float("nan"))
    data = {
        "G": as_persistent(G, "Generator", G_KWARGS),
        "G_ema": as_persistent(G, "Generator", G_KWARGS),
        "D": as_persistent(D, "Discriminator", D_KWARGS),
        "augment_pipe": augment_pipe(0.25),
    }
    return dump(data, path, source=source), G


def test_import_writes_generator_and_discriminator_that_reproduce_the_source(tmp_path):
    src, G = nvidia_pickle(tmp_path / "network-snapshot.pkl", source=marker_source(tmp_path / "ran"))
    dest = tmp_path / "out" / "G.safetensors"
    result = run_cli("import-gan", src, dest, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["resolution"] == 16 and summary["augment_p"] == 0.25 and summary["num_ws"] == G.num_ws
    assert read_meta(dest, kind="generator").extra["discriminator"] == "G.D.safetensors"
    assert read_meta(tmp_path / "out" / "G.D.safetensors", kind="discriminator").config["img_resolution"] == 16
    assert not (tmp_path / "ran").exists()  # the pickle's embedded source never ran
    imported, _ = load_generator(dest)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.allclose(imported(z, None, noise_mode="const"), G.eval()(z, None, noise_mode="const"), atol=1e-6)


def test_import_then_generate(tmp_path):
    src, _ = nvidia_pickle(tmp_path / "n.pkl")
    assert run_cli("import-gan", src, tmp_path / "G.safetensors").exit_code == 0
    result = run_cli(
        "generate",
        "--generator",
        tmp_path / "G.safetensors",
        "--seeds",
        "0-3",
        "--format",
        "npy",
        "--out",
        tmp_path / "x.npy",
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "x.npy").shape == (4, 3, 16, 16)


def test_existing_destination_needs_force(tmp_path):
    src, _ = nvidia_pickle(tmp_path / "n.pkl")
    assert run_cli("import-gan", src, tmp_path / "G.safetensors").exit_code == 0
    result = run_cli("import-gan", src, tmp_path / "G.safetensors")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert run_cli("import-gan", src, tmp_path / "G.safetensors", "--force").exit_code == 0


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": evil}))
    result = run_cli("import-gan", tmp_path / "evil.pkl", tmp_path / "G.safetensors")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to load" in lines[0] and "system" in lines[0]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "G.safetensors").exists()


def test_a_configuration_we_cannot_build_is_one_line(tmp_path):
    torch.manual_seed(0)
    G = Generator(**G_KWARGS)
    bad = {**G_KWARGS, "mapping_kwargs": {"num_layers": 2, "lr_mul": 0.01}}  # NVIDIA spells it lr_multiplier
    src = dump({"G_ema": as_persistent(G, "Generator", bad)}, tmp_path / "n.pkl")
    result = run_cli("import-gan", src, tmp_path / "G.safetensors")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src}: G_ema config not understood"), result.stderr
    assert "lr_mul" in lines[0] and not (tmp_path / "G.safetensors").exists()


def test_quiet_is_not_an_option_of_import_gan(tmp_path):
    """It never did anything here (the command prints only its result); an unknown option is one line."""
    src, _ = nvidia_pickle(tmp_path / "n.pkl")
    result = run_cli("import-gan", src, tmp_path / "G.safetensors", "--quiet")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no such option --quiet"), result.stderr


def test_import_says_when_the_weights_are_not_finite(tmp_path):
    src, _ = nvidia_pickle(tmp_path / "diverged.pkl", break_weights=True)
    result = run_cli("import-gan", src, tmp_path / "G.safetensors")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1 and "(D) has 1 weight tensor(s) with NaN" in result.stderr
