"""StyleGAN2 networks against reference data produced by NVIDIA's own (non-CUDA) code on CPU.

`tests/data/stylegan2/` holds only names, shapes and tensors: the state_dict layout of NVIDIA's networks for
several configs, and weights + inputs + outputs of slightly perturbed ("trained-looking") NVIDIA networks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import save_checkpoint
from viscoin_cli.nets.stylegan2 import Conv2dLayer, Discriminator, Generator, SynthesisLayer, load_generator

DATA = Path(__file__).parent / "data" / "stylegan2"
ATOL = 1e-4  # images must match to 1e-3; we hold ourselves to 10x tighter


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    with safe_open(DATA / "reference.safetensors", "pt") as f:
        configs = json.loads(f.metadata()["configs"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return configs, tensors


def _group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _layout_cases() -> list[dict]:
    return json.loads((DATA / "state_dict_keys.json").read_text())


@pytest.mark.parametrize(
    "case", _layout_cases(), ids=lambda c: f"{c['kind']}-{json.dumps(c['kwargs'], sort_keys=True)}"
)
def test_state_dict_layout_matches_nvidia(case: dict) -> None:
    net = (Generator if case["kind"] == "G" else Discriminator)(**case["kwargs"])
    assert [[n, list(t.shape)] for n, t in net.state_dict().items()] == case["state"]
    assert [n for n, _ in net.named_parameters()] == case["params"]


@pytest.mark.parametrize("name", ["G_init", "D_init"])
def test_init_matches_nvidia_for_the_same_seed(reference, name: str) -> None:
    configs, tensors = reference
    torch.manual_seed(1234)
    net = (Generator if name.startswith("G") else Discriminator)(**configs[name])
    expected = _group(tensors, f"{name}.state")
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def _generator(reference, name: str) -> tuple[Generator, dict[str, torch.Tensor]]:
    configs, tensors = reference
    G = Generator(**configs[name])
    G.load_state_dict(_group(tensors, f"{name}.state"))
    return G.eval(), _group(tensors, f"{name}.io")


@pytest.mark.parametrize("name", ["G32c", "G16"])
@pytest.mark.parametrize(
    "output, kwargs",
    [
        ("img_const", dict(noise_mode="const")),
        ("img_psi0.7", dict(noise_mode="const", truncation_psi=0.7)),
        ("img_psi0.5_cutoff2", dict(noise_mode="const", truncation_psi=0.5, truncation_cutoff=2)),
        ("img_none", dict(noise_mode="none")),
    ],
)
def test_generator_reproduces_nvidia_images(reference, name: str, output: str, kwargs: dict) -> None:
    G, io = _generator(reference, name)
    with torch.no_grad():
        img = G(io["z"], io.get("c"), **kwargs)
    assert img.shape == io[output].shape
    assert (img - io[output]).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", ["G32c", "G16"])
def test_mapping_reproduces_nvidia_ws(reference, name: str) -> None:
    G, io = _generator(reference, name)
    with torch.no_grad():
        ws = G.mapping(io["z"], io.get("c"))
    assert ws.shape == (io["z"].shape[0], G.num_ws, G.w_dim)
    torch.testing.assert_close(ws, io["ws"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["G32c", "G16"])
def test_training_mode_uses_the_equivalent_unfused_conv_and_tracks_w_avg(reference, name: str) -> None:
    G, io = _generator(reference, name)
    G.train()
    with torch.no_grad():
        img = G(io["z"], io.get("c"), noise_mode="const")
    assert (img - io["img_train_const"]).abs().max().item() <= ATOL
    torch.testing.assert_close(G.mapping.w_avg, io["w_avg_after_train_step"], rtol=0, atol=1e-6)


def test_fused_and_unfused_modulated_conv_agree(reference) -> None:
    G, io = _generator(reference, "G16")
    ws = G.mapping(io["z"], None)
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode="const", fused_modconv=True)
        unfused = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert (fused - unfused).abs().max().item() <= 1e-5


def _input_formats(module: torch.nn.Module, layer_type: type, run) -> set[bool]:
    """Whether each `layer_type` layer's input was channels_last during `run()` (True) or not (False)."""
    seen: set[bool] = set()
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.add(args[0].is_contiguous(memory_format=torch.channels_last)))
        for m in module.modules()
        if isinstance(m, layer_type)
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("training", [False, True])
def test_generator_runs_unfused_in_channels_last_on_the_cpu(reference, training: bool) -> None:
    G, io = _generator(reference, "G16")
    G.train(training)
    ws = G.mapping(io["z"], None).detach()
    with torch.no_grad():
        assert _input_formats(G, SynthesisLayer, lambda: G.synthesis(ws, noise_mode="const")) == {True}
        assert _input_formats(G, SynthesisLayer, lambda: G.synthesis(ws, fused_modconv=True)) == {False}
        assert G.synthesis(ws, noise_mode="const").is_contiguous()


def test_discriminator_blocks_run_in_channels_last_on_the_cpu(reference) -> None:
    configs, tensors = reference
    D = Discriminator(**configs["D16"])
    img = _group(tensors, "D16.io")["img"]
    blocks = _input_formats(D, Conv2dLayer, lambda: D(img, None))
    assert True in blocks  # the blocks' layers
    assert D(img, None).is_contiguous()


def test_noise_modes(reference) -> None:
    G, io = _generator(reference, "G16")
    ws = G.mapping(io["z"], None)
    with torch.no_grad():
        const = [G.synthesis(ws, noise_mode="const") for _ in range(2)]
        random = [G.synthesis(ws, noise_mode="random") for _ in range(2)]
    assert torch.equal(const[0], const[1])
    assert not torch.equal(random[0], random[1])
    assert not torch.equal(random[0], const[0])


def test_synthesis_takes_w_plus_codes_per_layer(reference) -> None:
    G, io = _generator(reference, "G16")
    ws = G.mapping(io["z"], None)
    edited = ws.clone()
    edited[:, -1] += 1.0  # only the last W+ vector (finest torgb) changes
    with torch.no_grad():
        a, b = G.synthesis(ws, noise_mode="const"), G.synthesis(edited, noise_mode="const")
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", ["D32c", "D16"])
def test_discriminator_and_r1_double_backward_match_nvidia(reference, name: str) -> None:
    configs, tensors = reference
    D = Discriminator(**configs[name])
    D.load_state_dict(_group(tensors, f"{name}.state"))
    io = _group(tensors, f"{name}.io")
    x = io["img"].clone().requires_grad_(True)
    logits = D(x, io.get("c"))
    torch.testing.assert_close(logits.detach(), io["logits"], rtol=0, atol=1e-4)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    torch.testing.assert_close(grad.detach(), io["grad_img"], rtol=1e-4, atol=1e-6)
    grad.square().sum().backward()
    for key, expected in _group(io, "r1_grad").items():
        got = dict(D.named_parameters())[key].grad
        scale = expected.abs().max().clamp_min(1e-8)
        assert ((got - expected).abs().max() / scale).item() <= 1e-3, key


def test_generator_gradient_reaches_ws(reference) -> None:
    G, io = _generator(reference, "G16")
    ws = G.mapping(io["z"], None).detach().requires_grad_(True)
    G.synthesis(ws, noise_mode="const").square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0


def test_resolution_must_be_a_power_of_two() -> None:
    with pytest.raises(UserError, match="power-of-two"):
        Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=24, img_channels=3)


@pytest.mark.parametrize("typo", ["noise_mod", "truncation", "force_fp16"])
def test_generator_refuses_unknown_keywords(reference, typo: str) -> None:
    G, io = _generator(reference, "G16")
    with pytest.raises(TypeError, match=typo):
        G(io["z"], None, **{typo: "const"})
    with pytest.raises(TypeError, match=typo):
        G.synthesis(G.mapping(io["z"], None), **{typo: "const"})


def test_discriminator_refuses_unknown_keywords(reference) -> None:
    configs, tensors = reference
    D = Discriminator(**configs["D16"])
    with pytest.raises(TypeError, match="force_fp16"):
        D(_group(tensors, "D16.io")["img"], None, force_fp16=True)


def test_nvidias_keywords_are_accepted(reference) -> None:
    """Every keyword NVIDIA's stylegan2-ada-pytorch / stylegan3 G and D take still works by name."""
    configs, tensors = reference
    G, io = _generator(reference, "G16")
    with torch.no_grad():
        G(io["z"], None, 1, None, noise_mode="const", force_fp32=True, fused_modconv=False, update_emas=False)
        G(io["z"], None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=True, noise_mode="const")
        G.synthesis(G.mapping(io["z"], None), noise_mode="none", force_fp32=True, update_emas=False)
    D = Discriminator(**configs["D16"])
    x = _group(tensors, "D16.io")["img"]
    assert D(x, None, force_fp32=True, update_emas=False).shape == (len(x), 1)


def test_bad_noise_mode_and_ws_shape_are_user_errors(reference) -> None:
    G, io = _generator(reference, "G16")
    ws = G.mapping(io["z"], None)
    with pytest.raises(UserError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")
    with pytest.raises(UserError, match="ws must be"):
        G.synthesis(ws[:, 1:])


def test_load_generator_with_a_bad_config_is_one_user_error(tmp_path, reference) -> None:
    configs, _ = reference
    G, _ = _generator(reference, "G16")
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, G.state_dict(), kind="generator", config={**configs["G16"], "z_dims": 8})
    with pytest.raises(UserError, match="generator config not understood.*z_dims") as err:
        load_generator(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_round_trip_rebuilds_the_same_generator(tmp_path, reference) -> None:
    configs, _ = reference
    G, io = _generator(reference, "G32c")
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, G.state_dict(), kind="generator", config=configs["G32c"])
    loaded, meta = load_generator(path)
    assert meta.kind == "generator"
    with torch.no_grad():
        assert torch.equal(loaded(io["z"], io["c"], noise_mode="const"), G(io["z"], io["c"], noise_mode="const"))


def test_load_generator_refuses_a_discriminator(tmp_path) -> None:
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16)
    path = tmp_path / "d.safetensors"
    save_checkpoint(path, D.state_dict(), kind="discriminator", config={})
    with pytest.raises(UserError, match="discriminator"):
        load_generator(path)


def test_deepcopy_keeps_outputs(reference) -> None:
    G, io = _generator(reference, "G16")
    ema = copy.deepcopy(G)
    with torch.no_grad():
        assert torch.equal(ema(io["z"], None, noise_mode="const"), G(io["z"], None, noise_mode="const"))


@pytest.mark.parametrize(
    "up, down, padding, taps",
    [
        (1, 1, 1, [1, 3, 3, 1]),
        (2, 1, [2, 1, 2, 1], [1, 3, 3, 1]),  # G's upsampling
        (1, 2, [1, 1, 1, 1], [1, 3, 3, 1]),  # D's downsampling
        (1, 2, [2, 1, 0, 3], [1, 2, 1]),  # uneven padding, odd filter
        (2, 1, [-1, 2, 1, 0], None),  # a crop
        (2, 1, [5, 4, 5, 4], list(range(1, 12))),  # a long (separable) filter
    ],
)
def test_upfirdn2d_gradients_of_every_order_are_its_adjoint(up, down, padding, taps) -> None:
    """upfirdn2d's gradient is another upfirdn2d (its adjoint), so R1's double backward through D needs no
    grouped-conv double backward: checked numerically to second order, and the forward is unchanged."""
    from viscoin_cli.nets import ops

    f = ops.setup_filter(taps).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.double, requires_grad=True)

    def resample(x: torch.Tensor) -> torch.Tensor:
        return ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.7)

    assert torch.autograd.gradcheck(resample, (x,))
    assert torch.autograd.gradgradcheck(resample, (x,))
    assert torch.equal(resample(x), ops._upfirdn2d(x, f, up, down, ops._pads(padding), False, 1.7))
