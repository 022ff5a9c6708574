"""ADA: the 'bgc' augmentation pipeline, its double-backward grid sampler, and the p controller."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from viscoin_cli.nets.augment import (
    PRESETS,
    SYM6,
    AdaController,
    AugmentPipe,
    _apply_geometry,
    grid_sample_bilinear,
    lowpass_taps,
)

COLOR_NAMES = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def make_pipe(p: float, **strengths: float) -> AugmentPipe:
    pipe = AugmentPipe(**strengths)
    pipe.p.fill_(p)
    return pipe


def smooth_images(n: int = 4, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Band-limited images in [-1, 1]: per channel, the mean of two plane waves of at most 2 cycles per image."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")  # [S, S]
    cycles = torch.randint(0, 3, (n, c, 2, 2, 1, 1), generator=gen).float()  # [N, C, wave, (x, y), 1, 1]
    phase = torch.rand(n, c, 2, 1, 1, generator=gen) * 2 * math.pi  # [N, C, wave, 1, 1]
    waves = torch.sin(2 * math.pi * (cycles[:, :, :, 0] * xx + cycles[:, :, :, 1] * yy) + phase)
    return waves.mean(2)  # [N, C, S, S]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- pipeline basics --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_exactly_the_identity(channels):
    images = torch.rand(4, channels, 16, 16) * 2 - 1
    pipe = make_pipe(0.0, **PRESETS["bgcfnc"])
    out = pipe(images, seeded())
    assert torch.equal(out, images)
    assert torch.equal(pipe(images.double(), seeded()), images.double())


@pytest.mark.parametrize("channels", [1, 3])
def test_p_one_changes_images_and_keeps_shape_and_dtype(channels):
    images = torch.rand(4, channels, 16, 16) * 2 - 1
    out = make_pipe(1.0, **PRESETS["bgc"])(images, seeded())
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    per_sample_change = (out - images).abs().flatten(1).amax(1)
    assert (per_sample_change > 0.05).all()


def test_seeded_draws_are_reproducible_and_params_can_be_reused():
    images = smooth_images()
    pipe = make_pipe(0.7, **PRESETS["bgc"])
    assert torch.equal(pipe(images, seeded(3)), pipe(images, seeded(3)))
    params = pipe.sample_params(images.shape, generator=seeded(3))
    assert torch.equal(pipe.apply_params(images, params), pipe(images, seeded(3)))


def test_buffers_and_keywords_match_nvidia_names():
    pipe = AugmentPipe(**PRESETS["bgc"])
    state = pipe.state_dict()
    assert set(state) == {"p", "Hz_geom", "Hz_fbank"}
    assert state["p"].shape == () and state["Hz_geom"].shape == (12,) and state["Hz_fbank"].shape == (4, 43)
    assert abs(state["Hz_geom"].sum().item() - 1) < 1e-6
    # The filter bank splits a signal into bands that add back up to it: the rows sum to an impulse.
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    assert torch.allclose(state["Hz_fbank"].double().sum(0), impulse, atol=1e-6)
    # A state saved by another pipe (e.g. NVIDIA's) loads by name.
    other = AugmentPipe(xflip=1)
    other.p.fill_(0.25)
    pipe.load_state_dict(other.state_dict())
    assert pipe.p.item() == 0.25


def test_color_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="1 \\(L\\) or 3 \\(RGB\\)"):
        make_pipe(1.0, **PRESETS["bgc"])(torch.zeros(2, 2, 16, 16))
    out = make_pipe(1.0, **PRESETS["bg"])(torch.zeros(2, 2, 16, 16))  # geometry alone takes any C
    assert out.shape == (2, 2, 16, 16)


def test_autocast_input_dtype_is_kept():
    images = (torch.rand(2, 3, 16, 16) * 2 - 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = make_pipe(1.0, **PRESETS["bgc"])(images, seeded())
    assert out.dtype == torch.bfloat16


# --- pixel blitting and geometry -------------------------------------------------------------------
# As in NVIDIA's pipeline, blits are folded into the geometric matrix and executed by resampling through the
# sym6 lowpass. Identity and integer translations come out exact (to ~1e-5); a flip (xflip, and the axis
# flips inside 90-degree turns) comes out as the mirror image shifted by ~0.1 pixel, because sym6 is not
# symmetric (NVIDIA's output does the same, to ~4e-6). The tests below hold to those tolerances.


def test_xflip_gives_the_image_or_its_mirror_per_sample():
    images = smooth_images(16)
    out = make_pipe(1.0, xflip=1)(images, seeded())
    err_same = (out - images).abs().flatten(1).amax(1)
    err_mirror = (out - images.flip(3)).abs().flatten(1).amax(1)
    same, mirrored = err_same < 1e-4, (err_mirror < 0.1) & (err_same > 0.5)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


@pytest.mark.parametrize(("strength", "flipped"), [(0.0, 0.0), (1.0, 0.5), (0.1, 0.05)])
def test_xflip_strength_scales_the_probability_of_a_flip(strength, flipped):
    """At p = 1, x-flip draws a flip or not for a sample with probability `strength` (NVIDIA's `xflip`
    multiplier) and then flips with probability 1/2: 'bgc' (1) flips half the samples, the paper's 0.1 for
    Stanford Cars 5%, and 0 none."""
    batch = 40_000
    params = make_pipe(1.0, xflip=strength).sample_params((batch, 3, 8, 8), generator=seeded())
    if strength == 0:
        assert params.geometry is None  # no draw at all
        return
    signs = params.geometry[:, 0, 0]
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert (signs < 0).float().mean().item() == pytest.approx(flipped, abs=4 * math.sqrt(flipped / batch))


def test_rotate90_gives_quarter_turns():
    images = smooth_images(16)
    out = make_pipe(1.0, rotate90=1)(images, seeded())
    errors = torch.stack([(out - images.rot90(k, (2, 3))).abs().flatten(1).amax(1) for k in range(4)])  # [4, N]
    best, second = errors.sort(0).values[:2]
    assert (best < 0.15).all() and (second > 0.5).all()
    assert len(set(errors.argmin(0).tolist())) == 4  # every number of turns occurred


def test_integer_translation_is_an_exact_reflect_padded_shift():
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    out = make_pipe(1.0, xint=1)(images, seeded())
    reach = 2  # xint_max 0.125 of 16 pixels
    padded = F.pad(images, [reach] * 4, mode="reflect")
    shifted = [padded[:, :, reach - dy : reach - dy + 16, reach - dx : reach - dx + 16]
               for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]  # fmt: skip
    errors = torch.stack([(out - s).abs().flatten(1).amax(1) for s in shifted])  # [shifts, N]
    assert (errors.amin(0) < 1e-4).all()
    assert out.amin() >= images.amin() - 1e-5 and out.amax() <= images.amax() + 1e-5


def test_identity_geometry_reproduces_the_image():
    """Up- and downsampling with the orthogonal sym6 lowpass and grid sampling at the pixel centres cancel."""
    images = torch.rand(3, 3, 16, 12, dtype=torch.float64) * 2 - 1
    identity = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    out = _apply_geometry(images, identity, (6, 6, 6, 6), lowpass_taps(SYM6))
    assert (out - images).abs().max() < 1e-6  # the tabulated sym6 taps are orthogonal to ~1e-7


@pytest.mark.parametrize("preset", ["blit", "geom", "bg"])
def test_geometry_keeps_constant_images_constant(preset):
    """Reflection padding and unit-DC filters: no border is pulled towards zero (as zero padding would).
    At 32 px the padding never hits reflect's limit (size - 1); on tiny images it can, as in NVIDIA's."""
    images = torch.full((8, 3, 32, 32), 0.7)
    out = make_pipe(1.0, **PRESETS[preset])(images, seeded())
    assert (out - 0.7).abs().max() < 1e-4


@pytest.mark.parametrize("preset", ["blit", "geom"])
def test_geometry_stays_near_the_input_range(preset):
    """Resampling through a lowpass with negative taps can ring past the input range; on band-limited images
    only by a few percent of it (measured: up to ~3% for blits, ~4% for geometry at 16 px)."""
    images = smooth_images(8)
    out = make_pipe(1.0, **PRESETS[preset])(images, seeded())
    lo, hi = images.amin(), images.amax()
    slack = 0.08 * (hi - lo)
    assert out.amin() >= lo - slack and out.amax() <= hi + slack


# --- color -----------------------------------------------------------------------------------------
# Color transforms are per-sample affine maps of RGB; they leave [-1, 1] by design (NVIDIA does not clamp).
# What they preserve is checked instead; luma = mean over channels, chroma = the rest.


def luma(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1, keepdim=True)


def test_brightness_adds_one_offset_per_sample():
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    delta = make_pipe(1.0, brightness=1)(images, seeded()) - images
    offset = delta.flatten(1)[:, :1]
    assert torch.allclose(delta.flatten(1), offset.expand(-1, 3 * 256), atol=1e-5)
    assert offset.abs().max() < 5 * 0.2  # N(0, 0.2) draws


def test_contrast_scales_each_sample():
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    out = make_pipe(1.0, contrast=1)(images, seeded())
    factor = (out * images).flatten(1).sum(1) / images.square().flatten(1).sum(1)
    assert torch.allclose(out, images * factor.view(-1, 1, 1, 1), atol=1e-5)


def test_hue_rotation_keeps_luma_and_rgb_norm():
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    out = make_pipe(1.0, hue=1)(images, seeded())
    assert torch.allclose(luma(out), luma(images), atol=1e-5)
    assert torch.allclose(out.norm(dim=1), images.norm(dim=1), atol=1e-5)
    assert (out - images).abs().max() > 0.1


def test_saturation_keeps_luma_and_scales_chroma():
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    out = make_pipe(1.0, saturation=1)(images, seeded())
    assert torch.allclose(luma(out), luma(images), atol=1e-5)
    chroma_in, chroma_out = images - luma(images), out - luma(out)
    factor = (chroma_out * chroma_in).flatten(1).sum(1) / chroma_in.square().flatten(1).sum(1)
    assert torch.allclose(chroma_out, chroma_in * factor.view(-1, 1, 1, 1), atol=1e-4)


def test_lumaflip_negates_luma_and_keeps_chroma():
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    out = make_pipe(1.0, lumaflip=1)(images, seeded())
    assert torch.allclose(out - luma(out), images - luma(images), atol=1e-5)
    flipped = (luma(out) + luma(images)).abs().flatten(1).amax(1) < 1e-5
    kept = (luma(out) - luma(images)).abs().flatten(1).amax(1) < 1e-5
    assert (flipped | kept).all() and flipped.any() and kept.any()


def test_color_on_grey_images_stays_grey_and_bounded():
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    out = make_pipe(1.0, **PRESETS["color"])(images, seeded())
    assert out.shape == images.shape and torch.isfinite(out).all()
    # brightness, contrast, luma flip: an affine map of the grey value per sample
    a = ((out - out.mean((2, 3), keepdim=True)) * (images - images.mean((2, 3), keepdim=True))).flatten(1).sum(1)
    a = a / (images - images.mean((2, 3), keepdim=True)).square().flatten(1).sum(1)
    b = (out - a.view(-1, 1, 1, 1) * images).mean((1, 2, 3))
    assert torch.allclose(out, a.view(-1, 1, 1, 1) * images + b.view(-1, 1, 1, 1), atol=1e-5)


# --- the grid sampler ------------------------------------------------------------------------------


def test_grid_sampler_matches_torch_values_and_gradients():
    gen = seeded()
    images = (torch.rand(2, 3, 7, 9, generator=gen) * 2 - 1).requires_grad_(True)
    grid = (torch.rand(2, 5, 6, 2, generator=gen) * 2.6 - 1.3).requires_grad_(True)  # some points outside
    ours = grid_sample_bilinear(images, grid)
    ref = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert (ours - ref).abs().max() < 1e-6
    weights = torch.randn(ref.shape, generator=gen)
    grads_ours = torch.autograd.grad((ours * weights).sum(), [images, grid])
    grads_ref = torch.autograd.grad((ref * weights).sum(), [images, grid])
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        assert (g_ours - g_ref).abs().max() < 1e-5


def test_grid_sampler_gradcheck_and_gradgradcheck():
    gen = seeded(1)
    images = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    grid = (torch.rand(1, 3, 3, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True)
    assert torch.autograd.gradcheck(grid_sample_bilinear, (images, grid))
    assert torch.autograd.gradgradcheck(grid_sample_bilinear, (images, grid))


# --- the whole pipeline, to second order ------------------------------------------------------------


def test_pipeline_gradcheck_and_gradgradcheck_with_fixed_draws():
    pipe = make_pipe(1.0, **PRESETS["bgc"])
    images = (torch.rand(1, 3, 8, 8, generator=seeded(2), dtype=torch.float64) * 2 - 1).requires_grad_(True)
    params = pipe.sample_params(images.shape, generator=seeded(2))
    assert params.geometry is not None and params.color is not None

    def augmented_nonlinear(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(pipe.apply_params(x, params))  # a nonlinearity makes the second derivative non-zero

    assert torch.autograd.gradcheck(augmented_nonlinear, (images,), fast_mode=True)
    assert torch.autograd.gradgradcheck(augmented_nonlinear, (images,), fast_mode=True)


def test_r1_penalty_backpropagates_through_the_pipeline():
    torch.manual_seed(0)
    disc = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.LazyLinear(1)
    )
    pipe = make_pipe(1.0, **PRESETS["bgc"])
    reals = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    logits = disc(pipe(reals, seeded()))
    (grads,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    grads.square().sum().backward()
    weight_grad = disc[0].weight.grad
    assert weight_grad is not None and torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0


# --- the ADA controller ----------------------------------------------------------------------------


def fake_logits(positive_fraction: float, n: int = 16, seed: int = 0) -> torch.Tensor:
    gen = seeded(seed)
    signs = torch.where(torch.rand(n, 1, generator=gen) < positive_fraction, 1.0, -1.0)
    return signs * (torch.rand(n, 1, generator=gen) + 0.1)


def test_p_rises_when_d_overfits():
    ada = AdaController(target=0.6, ada_kimg=1, batch_size=16, interval=4)
    p = torch.zeros([])
    history = []
    for step in range(8):
        for k in range(4):
            ada.accumulate(fake_logits(0.95, seed=4 * step + k))
        p = ada.update(p)
        history.append(p.item())
    assert ada.r_t is not None and ada.r_t > 0.6
    assert all(b > a for a, b in itertools.pairwise(history))
    assert history[0] == pytest.approx(16 * 4 / 1000)


def test_p_falls_and_clamps_at_zero_when_d_underfits():
    ada = AdaController(target=0.6, ada_kimg=1, batch_size=16, interval=4, p=0.2)
    history = []
    for step in range(6):
        for k in range(4):
            ada.accumulate(fake_logits(0.2, seed=4 * step + k))
        history.append(ada.update().item())
    assert ada.r_t < 0.6
    assert history[0] == pytest.approx(0.2 - 0.064) and history[-1] == 0.0 and min(history) >= 0.0
    assert ada.p == 0.0


def test_p_clamps_at_one_and_keeps_device_and_dtype():
    ada = AdaController(ada_kimg=0.01, batch_size=64)  # steps larger than 1
    ada.accumulate(torch.ones(8))
    p = ada.update(torch.tensor(0.5, dtype=torch.float64))
    assert p.item() == 1.0 and p.dtype == torch.float64


def test_no_signs_leave_p_unchanged():
    ada = AdaController(p=0.3)
    assert ada.update().item() == pytest.approx(0.3) and ada.r_t is None


def test_reduce_hook_combines_processes():
    ada = AdaController(target=0.6, ada_kimg=1, batch_size=8, interval=1)
    ada.accumulate(torch.tensor([1.0, 1.0, -1.0, 1.0]))  # this process: 2 / 4
    other_process = [-4.0, 4.0]  # the other one: all negative

    def all_reduce(values: list[float]) -> list[float]:
        return [v + o for v, o in zip(values, other_process, strict=True)]

    ada.update(torch.tensor(0.5), reduce=all_reduce)
    assert ada.r_t == pytest.approx((2 - 4) / 8)
    assert ada.p == pytest.approx(0.5 - 8 / 1000)


def test_state_round_trip():
    ada = AdaController(target=0.6, ada_kimg=100, batch_size=32, interval=4)
    ada.accumulate(fake_logits(0.9))
    ada.update(torch.tensor(0.1))
    ada.accumulate(fake_logits(0.9, seed=1))  # an interval in progress is kept too
    state = ada.state_dict()
    assert all(v is None or isinstance(v, int | float) for v in state.values())
    restored = AdaController()
    restored.load_state_dict(
        {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in state.items()}
    )
    assert restored.state_dict() == state
    assert restored.update().item() == pytest.approx(ada.update().item())
    assert restored.r_t == pytest.approx(ada.r_t)
