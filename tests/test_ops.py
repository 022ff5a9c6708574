"""StyleGAN2's low-level ops against their definitions: bias_act's hand-written gradients, upfirdn2d's forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from viscoin_cli.nets import ops


def _reference_bias_act(x, b, act, gain, clamp):
    """bias_act as NVIDIA's reference path writes it: add, activation, gain, clamp (autograd's gradients)."""
    y = x + b.reshape(1, -1, 1, 1)
    y = {"linear": lambda v: v, "relu": F.relu, "lrelu": lambda v: F.leaky_relu(v, 0.2)}[act](y)
    y = y * gain
    return y.clamp(-clamp, clamp) if clamp is not None else y


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 0.6, 100.0])  # none; some outputs clamped; a clamp nothing reaches
def test_bias_act_gradients_of_every_order(act: str, clamp: float | None) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4, dtype=torch.double, requires_grad=True)
    b = torch.randn(5, dtype=torch.double, requires_grad=True)
    y = ops.bias_act(x, b, act=act, gain=1.3, clamp=clamp)
    reference = _reference_bias_act(x, b, act, 1.3, clamp)
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-12)
    if clamp == 0.6:
        assert (y.abs() == clamp).any() and (y.abs() < clamp).any()
    # First order against autograd's, then numerically to second order (R1 differentiates D twice).
    dy = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, b), dy)
    theirs = torch.autograd.grad(reference, (x, b), dy)
    for got, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)

    def fn(x, b):
        return ops.bias_act(x, b, act=act, gain=1.3, clamp=clamp)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_without_autograd_leaves_its_input_alone() -> None:
    x = torch.randn(2, 3, 4, 4)
    before = x.clone()
    with torch.no_grad():
        y = ops.bias_act(x, None, act="lrelu", gain=1.0, clamp=0.5)
    assert torch.equal(x, before)
    torch.testing.assert_close(y, F.leaky_relu(before, 0.2).clamp(-0.5, 0.5))


def _naive_upfirdn2d(x, f, up, down, padding, gain):
    """The definition, step by step: zero-insertion, pad (negative: crop), convolution with f, subsampling."""
    px0, px1, py0, py1 = ops._pads(padding)
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    f = (f * gain ** (f.ndim / 2)).flip(list(range(f.ndim))).to(x.dtype)  # flipped: a convolution
    kernels = [f[None, None]] if f.ndim == 2 else [f[None, None, None, :], f[None, None, :, None]]
    for kernel in kernels:
        x = F.conv2d(x, kernel.repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up, down, padding, taps",
    [
        (1, 2, 1, [1, 3, 3, 1]),  # the conv pads and strides
        (1, 2, [1, 1, 1, 1], [1, 3, 3, 1]),  # D's downsampling
        (1, 2, [2, 1, 0, 3], [1, 2, 1]),  # uneven padding, odd filter
        (1, 2, [5, 4, 5, 4], list(range(1, 12))),  # a long (separable) filter, strided in each direction
        (1, 3, [0, 2, 1, 1], [1, 1]),
        (2, 1, [2, 1, 2, 1], [1, 3, 3, 1]),  # G's upsampling
        (2, 1, [-1, 2, 1, 0], None),  # a crop
    ],
)
def test_upfirdn2d_matches_its_definition(up, down, padding, taps) -> None:
    f = ops.setup_filter(taps).double()
    x = torch.randn(2, 3, 9, 8, dtype=torch.double)
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.7)
    torch.testing.assert_close(got, _naive_upfirdn2d(x, f, up, down, padding, 1.7), rtol=0, atol=1e-12)


def test_downsampling_keeps_channels_last_dense() -> None:
    x = torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last)
    y = ops.downsample2d(x, ops.setup_filter([1, 3, 3, 1]))
    assert y.shape == (2, 8, 8, 8) and y.is_contiguous(memory_format=torch.channels_last)
