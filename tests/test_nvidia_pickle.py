"""NVIDIA pickle import: formats come back exactly, TF weights are converted like legacy.py, nothing runs."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from _fake_nvidia import (
    augment_pipe,
    dump,
    expected_state_dict,
    fake_modules,
    marker_source,
    node,
    tf_discriminator,
    tf_generator,
    tiny_discriminator,
    tiny_generator,
)

from viscoin_cli.errors import UserError
from viscoin_cli.io.nvidia_pickle import read_nvidia_pickle

ADA_G_KWARGS = {
    "z_dim": 8,
    "w_dim": 8,
    "c_dim": 0,
    "img_resolution": 4,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2},
    "synthesis_kwargs": {"channel_base": 16, "channel_max": 4, "num_fp16_res": 0, "conv_clamp": None},
}
D_KWARGS = {"c_dim": 0, "img_resolution": 4, "img_channels": 3, "channel_base": 16, "channel_max": 4,
            "block_kwargs": {}, "mapping_kwargs": {}, "epilogue_kwargs": {"mbstd_group_size": 4}}  # fmt: skip


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code from the pickle was executed"


def refused(path, *needles: str) -> str:
    """Reading `path` raises a one-line UserError that names the file and contains `needles`."""
    with pytest.raises(UserError) as info:
        read_nvidia_pickle(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# PyTorch pickles


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pytorch_pickle_comes_back_exactly(tmp_path, marker, protocol):
    G, G_ema, D = tiny_generator(ADA_G_KWARGS, 0), tiny_generator(ADA_G_KWARGS, 1), tiny_discriminator(D_KWARGS)
    data = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe(0.25), "training_set_kwargs": {"xflip": 0}}
    path = dump(data, tmp_path / "ada.pkl", protocol=protocol, source=marker_source(marker))

    got = read_nvidia_pickle(str(path))

    assert got.source == "pytorch" and list(got.networks) == ["G", "D", "G_ema"]
    assert got.augment_p == pytest.approx(0.25)
    for key, module in (("G", G), ("D", D), ("G_ema", G_ema)):
        net, want = got.networks[key], expected_state_dict(module)
        assert list(net.state_dict) == list(want)
        for name, tensor in want.items():
            assert torch.equal(net.state_dict[name], tensor) and net.state_dict[name].device.type == "cpu", name
    g = got.networks["G"]
    assert g.class_name == "Generator" and g.init_kwargs == ADA_G_KWARGS
    assert type(g.init_kwargs) is dict and type(g.init_kwargs["mapping_kwargs"]) is dict  # no EasyDict leaks out
    assert "synthesis.b4.conv1.scratch" not in g.state_dict  # non-persistent buffer
    assert "mapping.extra.0.weight" in g.state_dict and "mapping.extra.0.bias" not in g.state_dict  # ModuleList, None
    assert got.networks["D"].init_kwargs == D_KWARGS


def test_tensors_from_cuda_storages_land_on_cpu(tmp_path, monkeypatch):
    """Storages record their device; one saved from a GPU must still load here, on the CPU."""
    G = tiny_generator(ADA_G_KWARGS)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda _storage: "cuda:0")
    path = dump({"G": G, "G_ema": G, "D": tiny_discriminator(D_KWARGS)}, tmp_path / "cuda.pkl")
    monkeypatch.undo()
    assert b"cuda:0" in path.read_bytes()

    state = read_nvidia_pickle(path).networks["G_ema"].state_dict
    assert all(t.device.type == "cpu" for t in state.values())
    assert torch.equal(state["synthesis.b4.const"], G.synthesis.b4.const.detach())


def test_stylegan3_repository_layout_is_normalised(tmp_path):
    flat = {"z_dim": 8, "w_dim": 8, "mapping_kwargs": {"num_layers": 2}, "channel_base": 16, "channel_max": 4,
            "fused_modconv_default": "inference_only", "c_dim": 0, "img_resolution": 4, "img_channels": 3}  # fmt: skip
    data = {"G": tiny_generator(flat), "D": tiny_discriminator(D_KWARGS), "G_ema": tiny_generator(flat)}

    got = read_nvidia_pickle(dump(data, tmp_path / "sg3.pkl"))

    # stylegan3's networks_stylegan2 defaults (fp16 in 4 blocks, clamp 256, w_avg_beta 0.998) are made explicit.
    synthesis = {"channel_base": 16, "channel_max": 4, "num_fp16_res": 4, "conv_clamp": 256}
    want = {"z_dim": 8, "w_dim": 8, "c_dim": 0, "img_resolution": 4, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2, "w_avg_beta": 0.998}, "synthesis_kwargs": synthesis}  # fmt: skip
    assert got.networks["G"].init_kwargs == want and got.networks["G_ema"].init_kwargs == want
    assert got.networks["D"].init_kwargs == {**D_KWARGS, "num_fp16_res": 4, "conv_clamp": 256}
    assert got.augment_p is None

    fp32 = {**flat, "num_fp16_res": 0, "conv_clamp": None}  # train.py --fp32 writes these out
    got = read_nvidia_pickle(dump({"G": tiny_generator(fp32)}, tmp_path / "fp32.pkl"))
    assert got.networks["G"].init_kwargs["synthesis_kwargs"] == {**synthesis, "num_fp16_res": 0, "conv_clamp": None}


def test_stylegan3_alias_free_generator_is_refused(tmp_path):
    g = node("Generator", children={"synthesis": node(children={"input": node(params={"weight": torch.ones(2)})}),
                                    "mapping": node(children={"fc0": node(params={"weight": torch.ones(2)})})},
             z_dim=8, magnitude_ema_beta=0.99)  # fmt: skip
    refused(dump({"G": g, "G_ema": g}, tmp_path / "sg3t.pkl"), "not a StyleGAN2 generator", "StyleGAN3")


# ---------------------------------------------------------------------------------------------------
# TensorFlow pickles


def tf_pickle(tmp_path, marker, g_kwargs, d_kwargs, seed=0):
    rng = np.random.default_rng(seed)
    nets = (tf_generator(g_kwargs, rng), tf_discriminator(d_kwargs, rng), tf_generator(g_kwargs, rng))
    return dump(nets, tmp_path / "tf.pkl", protocol=3, source=marker_source(marker)), nets


def tf_vars(net):
    out = {}
    for name, comp in [("", net), *((f"{k}/", c) for k, c in net.components.items())]:
        out.update({name + k: v for k, v in comp.variables.items()})
    return out


G_TF = {"resolution": 8, "num_channels": 3, "label_size": 0, "fmap_base": 32, "fmap_max": 8, "latent_size": 8,
        "dlatent_size": 6, "truncation_psi": 0.5}  # fmt: skip
D_TF = {"resolution": 8, "num_channels": 3, "label_size": 0, "fmap_base": 32, "fmap_max": 8, "mbstd_group_size": 4}
FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


@pytest.mark.parametrize("mapping_layers", [2, 8])
def test_tensorflow_pickle_is_converted_like_legacy_py(tmp_path, marker, mapping_layers):
    path, (tf_g, tf_d, tf_gs) = tf_pickle(tmp_path, marker, {**G_TF, "mapping_layers": mapping_layers}, D_TF)

    got = read_nvidia_pickle(path)

    assert got.source == "tensorflow" and got.augment_p is None and set(got.networks) == {"G", "D", "G_ema"}
    g = got.networks["G"]
    assert g.init_kwargs == {
        "z_dim": 8, "c_dim": 0, "w_dim": 6, "img_resolution": 8, "img_channels": 3,
        "mapping_kwargs": {"num_layers": mapping_layers, "embed_features": None, "layer_features": None,
                           "activation": "lrelu", "lr_multiplier": 0.01, "w_avg_beta": 0.995},
        "synthesis_kwargs": {"channel_base": 64, "channel_max": 8, "num_fp16_res": 0, "conv_clamp": None,
                             "architecture": "skip", "resample_filter": [1, 3, 3, 1], "use_noise": True,
                             "activation": "lrelu"},
    }  # fmt: skip
    layer = ["weight", "noise_strength", "bias", "resample_filter", "noise_const", "affine.weight", "affine.bias"]
    torgb = ["weight", "bias", "affine.weight", "affine.bias"]
    names = {"synthesis.b4.const", "synthesis.b4.resample_filter", "synthesis.b8.resample_filter", "mapping.w_avg"}
    names |= {f"synthesis.b{r}.{conv}.{n}" for r, conv in [(4, "conv1"), (8, "conv0"), (8, "conv1")] for n in layer}
    names |= {f"synthesis.b{r}.torgb.{n}" for r in (4, 8) for n in torgb}
    names |= {f"mapping.fc{i}.{n}" for i in range(mapping_layers) for n in ("weight", "bias")}
    assert set(g.state_dict) == names == set(got.networks["G_ema"].state_dict)

    for net, tf in ((g, tf_vars(tf_g)), (got.networks["G_ema"], tf_vars(tf_gs))):
        sd = {k: v.numpy() for k, v in net.state_dict.items()}
        assert all(v.dtype == np.float32 for v in sd.values())
        assert np.array_equal(sd["synthesis.b4.const"], tf["synthesis/4x4/Const/const"][0])
        assert np.array_equal(sd["synthesis.b4.conv1.weight"], tf["synthesis/4x4/Conv/weight"].transpose(3, 2, 0, 1))
        up = tf["synthesis/8x8/Conv0_up/weight"][::-1, ::-1].transpose(3, 2, 0, 1)  # flipped, then OIHW
        assert np.array_equal(sd["synthesis.b8.conv0.weight"], up) and up.shape == (8, 8, 3, 3)
        assert np.array_equal(sd["synthesis.b8.conv1.affine.weight"], tf["synthesis/8x8/Conv1/mod_weight"].T)
        assert np.array_equal(sd["synthesis.b8.conv1.affine.bias"], tf["synthesis/8x8/Conv1/mod_bias"] + 1)
        assert np.array_equal(sd["synthesis.b8.torgb.weight"], tf["synthesis/8x8/ToRGB/weight"].transpose(3, 2, 0, 1))
        assert np.array_equal(sd["synthesis.b4.conv1.noise_const"], tf["synthesis/noise0"][0, 0])
        assert np.array_equal(sd["synthesis.b8.conv0.noise_const"], tf["synthesis/noise1"][0, 0])
        assert np.array_equal(sd["synthesis.b8.conv1.noise_const"], tf["synthesis/noise2"][0, 0])
        assert sd["synthesis.b8.conv0.noise_strength"].shape == ()
        assert sd["synthesis.b8.conv0.noise_strength"] == tf["synthesis/8x8/Conv0_up/noise_strength"]
        assert np.array_equal(sd["mapping.w_avg"], tf["dlatent_avg"])
        last = mapping_layers - 1
        assert np.array_equal(sd[f"mapping.fc{last}.weight"], tf[f"mapping/Dense{last}/weight"].T)
        assert np.array_equal(sd["synthesis.b8.conv0.resample_filter"], FILTER.numpy())

    d, tf = got.networks["D"], tf_vars(tf_d)
    assert d.init_kwargs == {
        "c_dim": 0, "img_resolution": 8, "img_channels": 3, "architecture": "resnet", "channel_base": 64,
        "channel_max": 8, "num_fp16_res": 0, "conv_clamp": None, "cmap_dim": None,
        "block_kwargs": {"activation": "lrelu", "resample_filter": [1, 3, 3, 1], "freeze_layers": 0},
        "mapping_kwargs": {"num_layers": 0, "embed_features": None, "layer_features": None, "activation": "lrelu",
                           "lr_multiplier": 0.1},
        "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 1, "activation": "lrelu"},
    }  # fmt: skip
    names = {"b8.resample_filter", "b8.skip.weight", "b8.skip.resample_filter", "b4.fc.weight", "b4.fc.bias"}
    names |= {f"b{p}.{n}" for p in ("8.fromrgb", "8.conv0", "8.conv1", "4.conv") for n in ("weight", "bias")}
    names |= {f"b{p}.resample_filter" for p in ("8.fromrgb", "8.conv0", "8.conv1", "4.conv")}
    names |= {"b4.out.weight", "b4.out.bias"}
    assert set(d.state_dict) == names
    sd = {k: v.numpy() for k, v in d.state_dict.items()}
    assert np.array_equal(sd["b8.conv1.weight"], tf["8x8/Conv1_down/weight"].transpose(3, 2, 0, 1))  # not flipped
    assert np.array_equal(sd["b8.skip.weight"], tf["8x8/Skip/weight"].transpose(3, 2, 0, 1))
    assert sd["b4.conv.weight"].shape == (8, 9, 3, 3)  # + the minibatch-stddev channel
    assert np.array_equal(sd["b4.fc.weight"], tf["4x4/Dense0/weight"].T) and sd["b4.fc.weight"].shape == (8, 128)
    assert np.array_equal(sd["b4.out.weight"], tf["Output/weight"].T)


def test_tensorflow_conditional_resnet_generator(tmp_path, marker):
    g_kwargs = {**G_TF, "mapping_layers": 2, "label_size": 3, "architecture": "resnet", "label_fmaps": 5}
    d_kwargs = {**D_TF, "label_size": 3, "architecture": "skip", "mapping_layers": 1}
    path, (tf_g, tf_d, _) = tf_pickle(tmp_path, marker, g_kwargs, d_kwargs)

    got = read_nvidia_pickle(path)

    sd, tf = {k: v.numpy() for k, v in got.networks["G"].state_dict.items()}, tf_vars(tf_g)
    assert "synthesis.b4.torgb.weight" not in sd and "synthesis.b8.torgb.weight" in sd  # resnet: last block only
    skip = tf["synthesis/8x8/Skip/weight"][::-1, ::-1].transpose(3, 2, 0, 1)
    assert np.array_equal(sd["synthesis.b8.skip.weight"], skip)
    assert np.array_equal(sd["mapping.embed.weight"], tf["mapping/LabelEmbed/weight"].T)
    assert sd["mapping.fc0.weight"].shape == (6, 13)  # z (8) + label embedding (5) -> w (6)
    sd, tf = {k: v.numpy() for k, v in got.networks["D"].state_dict.items()}, tf_vars(tf_d)
    assert {"b8.fromrgb.weight", "b4.fromrgb.weight", "mapping.embed.weight", "mapping.fc0.weight"} <= set(sd)
    assert np.array_equal(sd["mapping.fc0.weight"], tf["Mapping0/weight"].T) and sd["b4.out.weight"].shape == (8, 8)


def test_tensorflow_progressive_discriminator_names_are_renamed(tmp_path, marker):
    rng = np.random.default_rng(0)
    d = tf_discriminator({**D_TF, "architecture": "orig"}, rng)
    d.variables = {k.replace("8x8/FromRGB", "FromRGB_lod0"): v for k, v in d.variables.items()}
    g = tf_generator({**G_TF, "mapping_layers": 2}, rng)
    got = read_nvidia_pickle(dump((g, d, g), tmp_path / "lod.pkl", source=marker_source(marker)))
    d_out = got.networks["D"]
    assert d_out.init_kwargs["architecture"] == "orig"
    assert np.array_equal(d_out.state_dict["b8.fromrgb.bias"].numpy(), d.variables["FromRGB_lod0/bias"])


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda g: g.static_kwargs.update(fmap_decay=0.5), "unsupported setting 'fmap_decay'"),
        (lambda g: setattr(g, "version", 3), "pickle version 3"),
        (lambda g: g.variables.update({"ToRGB_lod0/weight": np.zeros(1, np.float32)}), "progressive-growing"),
        (lambda g: g.components["synthesis"].variables.pop("8x8/Conv1/weight"), "no variable 'synthesis/8x8/Conv1"),
        (lambda g: g.static_kwargs.update(fmap_max=4), "b4.const has shape [8, 4, 4], expected [4, 4, 4]"),
    ],
)
def test_unsupported_tensorflow_configs_are_refused(tmp_path, change, needle):
    rng = np.random.default_rng(0)
    g, d = tf_generator({**G_TF, "mapping_layers": 2}, rng), tf_discriminator(D_TF, rng)
    change(g)
    refused(dump((g, d, g), tmp_path / "tf.pkl"), "TensorFlow G", needle)


# ---------------------------------------------------------------------------------------------------
# Nothing from the file runs, and broken files get one line


NOT_PART = "which is not part of a network checkpoint"


class System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Eval(System):
    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w')",)


class Popen(System):
    def __reduce__(self):
        return subprocess.Popen, (["touch", str(self.marker)],)


class SmuggledStorage(System):
    """A storage whose bytes are a malicious pickle: torch's own `_load_from_bytes` would run it."""

    def __reduce__(self):
        return torch.storage._load_from_bytes, (pickle.dumps(System(self.marker)),)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (System, f"{os.system.__module__}.system"),
        (Eval, "builtins.eval"),
        (Popen, "subprocess.Popen"),
        (SmuggledStorage, "torch.load(weights_only=True) rejects"),
    ],
)
def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, marker, payload, needle):
    G = tiny_generator(ADA_G_KWARGS)
    G.synthesis.b4._init_kwargs["resolution"] = payload(marker)  # deep inside an otherwise valid network
    path = dump({"G": G, "D": tiny_discriminator(D_KWARGS), "G_ema": G}, tmp_path / "evil.pkl")
    message = refused(path, "refusing to load", needle)
    if payload is System:
        assert message == f"{path}: refusing to load: the pickle asks for {needle}, {NOT_PART}"


def test_persistent_ids_are_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if isinstance(obj, str) and obj == "ext" else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as fh:
        PidPickler(fh, protocol=4).dump({"G": "ext"})
    refused(path, "persistent ids")


def test_broken_files_give_one_line_errors(tmp_path):
    good = dump({"G": tiny_generator(ADA_G_KWARGS), "G_ema": tiny_generator(ADA_G_KWARGS)}, tmp_path / "good.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    refused(truncated, "truncated")
    (tmp_path / "notes.pkl").write_text("hello, not a pickle\n")
    refused(tmp_path / "notes.pkl", "not a pickle file")
    (tmp_path / "empty.pkl").write_bytes(b"")
    refused(tmp_path / "empty.pkl", "empty")
    torch.save({"w": torch.ones(1)}, tmp_path / "model.pt")
    refused(tmp_path / "model.pt", "zip archive")
    refused(tmp_path / "missing.pkl", "no such file")
    refused(tmp_path, "is a directory")
    with fake_modules():
        (tmp_path / "other.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    refused(tmp_path / "other.pkl", "not a StyleGAN2 network pickle")
