"""The low-level ops of StyleGAN2-ADA in plain PyTorch: FIR resampling, bias + activation, modulated conv.

Everything here is built from standard differentiable PyTorch ops (conv2d, conv_transpose2d, pad, ...), so
gradients of any order work (R1 needs double backward through the discriminator) and nothing is compiled.
The numerics follow NVIDIA's stylegan2-ada-pytorch so that imported weights give the same images:

- FIR filters are stored as NVIDIA stores them (`resample_filter` buffers: the outer product of the taps,
  normalized to sum 1) and applied as a *convolution* (not a correlation), with NVIDIA's padding rules.
- An up-sampling conv is a transposed conv (stride 2) followed by the FIR filter; a down-sampling conv is
  the FIR filter followed by a strided conv. Both equal "zero-insert → pad → FIR → conv → subsample".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Padding = int | Sequence[int]  # p, (px, py) or (x_before, x_after, y_before, y_after)

# name -> (function of (x, alpha), default alpha, default gain). The gains keep activations at unit variance.
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float, float]] = {
    "linear": (lambda x, _alpha: x, 0.0, 1.0),
    "relu": (lambda x, _alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": (lambda x, _alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, _alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, _alpha: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, _alpha: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, _alpha: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, _alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    """The default output gain of an activation (√2 for the ReLU family, 1 otherwise)."""
    return ACTIVATIONS[act][2]


def _along(b: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """b reshaped to broadcast along dimension `dim` of an ndim-dimensional tensor."""
    return b.reshape([-1 if i == dim else 1 for i in range(ndim)])


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """x + b (broadcast along `dim`), activation, times gain, then clamped to ±clamp (None: no clamp).

    For the piecewise-linear activations the gain (> 0) is applied first, together with the bias, and the
    rest runs in place: one fresh tensor instead of four on the widest layers. With autograd, that path is
    `_BiasActPWL`, whose gradient is computed from the output alone, as NVIDIA's CUDA op does.
    """
    func, default_alpha, default_gain = ACTIVATIONS[act]
    alpha = default_alpha if alpha is None else alpha
    gain = default_gain if gain is None else gain
    if act in ("linear", "relu", "lrelu") and gain > 0:  # gain·act(x + b) == act(gain·x + gain·b)
        if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
            return _BiasActPWL.apply(x, b, act, alpha, gain, clamp, dim)
        return _bias_act_pwl(x, b, act, alpha, gain, clamp, dim)
    if b is not None:
        x = x + _along(b, dim, x.ndim)
    x = func(x, alpha)
    if gain != 1:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def _bias_act_pwl(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
    dim: int,
) -> torch.Tensor:
    """The piecewise-linear bias_act without autograd, in place on the one tensor it makes (never on x)."""
    if b is not None:
        x = torch.add(_along(b, dim, x.ndim) * gain, x, alpha=gain)
    elif gain != 1:
        x = x * gain
    elif act != "linear" or clamp is not None:
        x = x.clone()
    if act == "lrelu":
        x = F.leaky_relu(x, alpha, inplace=True)
    elif act == "relu":
        x = F.relu(x, inplace=True)
    return x.clamp_(-clamp, clamp) if clamp is not None else x


def _pwl_grad(dy: torch.Tensor, y: torch.Tensor, act: str, alpha: float, gain: float, clamp: float | None):
    """∂/∂x of Σ dy·bias_act(x) from its output y: gain where y > 0, gain·alpha (lrelu) or 0 (relu) where not,
    and 0 where y was clamped (|y| ≥ clamp, NVIDIA's rule). Three passes where autograd's chain of add, lrelu
    and clamp gradients takes eight."""
    if act == "lrelu":
        dx = torch.ops.aten.leaky_relu_backward(dy, y, alpha, False).mul_(gain)
    elif act == "relu":
        dx = torch.ops.aten.threshold_backward(dy, y, 0).mul_(gain)
    else:
        dx = dy * gain
    if clamp is not None and _may_reach(y, clamp):
        dx = dx.masked_fill_(y.abs() >= clamp, 0)
    return dx


def _may_reach(y: torch.Tensor, clamp: float) -> bool:
    """Whether some |y| reached the clamp. Nothing does in a healthy network, so on the CPU one read of y
    saves the mask's two passes; elsewhere (a GPU, compiled code) the answer is yes, as asking would
    synchronise the device or break the graph."""
    if y.device.type != "cpu" or torch.compiler.is_compiling():
        return True
    low, high = torch.aminmax(y)
    return max(-low.item(), high.item()) >= clamp


class _BiasActPWL(torch.autograd.Function):
    """bias_act for linear/relu/lrelu with the gradient taken from the output, differentiable again (R1)."""

    @staticmethod
    def forward(ctx, x, b, act, alpha, gain, clamp, dim):
        y = _bias_act_pwl(x, b, act, alpha, gain, clamp, dim)
        ctx.args = (act, alpha, gain, clamp)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = _PWLGrad.apply(dy, y, *ctx.args)
        db = None
        if ctx.needs_input_grad[1]:
            db = dx.sum([i for i in range(dx.ndim) if i != ctx.dim])
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None, None


class _PWLGrad(torch.autograd.Function):
    """dy ↦ bias_act's gradient: linear in dy, piecewise constant in y (so y gets no gradient)."""

    @staticmethod
    def forward(ctx, dy, y, act, alpha, gain, clamp):
        ctx.args = (act, alpha, gain, clamp)
        ctx.save_for_backward(y)
        return _pwl_grad(dy, y, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, ddx):
        (y,) = ctx.saved_tensors
        return _PWLGrad.apply(ddx, y, *ctx.args), None, None, None, None, None


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (the mapping network's input normalization)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ---------------------------------------------------------------------------------------------------
# FIR filters


def setup_filter(
    taps: Sequence[float] | torch.Tensor | None,
    normalize: bool = True,
    flip: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """A float32 FIR filter as NVIDIA stores it: 1-D taps become their 2-D outer product unless long (≥ 8)."""
    f = torch.as_tensor(1.0 if taps is None else taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip:
        f = f.flip(list(range(f.ndim)))
    return f * gain ** (f.ndim / 2)


def _pads(padding: Padding) -> tuple[int, int, int, int]:
    """(x_before, x_after, y_before, y_after) from an int, an (x, y) pair or four values."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; a separable one is square."""
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype, gain: float, flip: bool) -> list[torch.Tensor]:
    """The filter as one [C, 1, fh, fw] kernel (2-D) or two [C, 1, k, 1] / [C, 1, 1, k] kernels (separable)."""
    f = (f * gain ** (f.ndim / 2)).to(dtype)
    if flip:  # conv2d correlates: flipping the filter makes it a convolution
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return [f.repeat(channels, 1, 1, 1)]
    return [f.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1), f.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Per channel: insert up−1 zeros after each pixel, pad (negative = crop), convolve with f, keep every down-th.

    A linear map whose gradient is its adjoint, another upfirdn2d (up and down swapped, the filter flipped,
    the padding NVIDIA's CUDA op uses), so gradients of any order are upfirdn2d calls: autograd's own double
    backward of the depthwise conv inside runs one conv per channel (thousands per R1 step through D).
    """
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    return _UpFirDn2d.apply(x, f, up, down, _pads(padding), flip_filter, gain)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d with its adjoint as gradient (NVIDIA's CUDA op's backward, here on `_upfirdn2d`)."""

    @staticmethod
    def forward(ctx, x, f, up, down, pads, flip_filter, gain):
        ctx.save_for_backward(f)
        ctx.args = (up, down, pads, flip_filter, gain, x.shape[2:])
        return _upfirdn2d(x, f, up, down, pads, flip_filter, gain)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        up, down, (px0, _, py0, _), flip_filter, gain, (ih, iw) = ctx.args
        oh, ow = dy.shape[2:]
        fw, fh = _filter_size(f)
        pads = (fw - px0 - 1, iw * up - ow * down + px0 - up + 1, fh - py0 - 1, ih * up - oh * down + py0 - up + 1)
        dx = _UpFirDn2d.apply(dy, f, down, up, pads, not flip_filter, gain) if ctx.needs_input_grad[0] else None
        return dx, None, None, None, None, None, None


def _upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int, down: int, pads: Sequence[int], flip_filter: bool, gain: float
) -> torch.Tensor:
    """upfirdn2d's forward. The zero-insertion and the filter run as one depthwise transposed conv (stride
    `up`), which never materializes the zeros; padding relative to the upsampled image is then applied as a
    pad/crop."""
    channels = x.shape[1]
    px0, px1, py0, py1 = pads
    fw, fh = _filter_size(f)
    if up > 1:
        # conv_transpose2d = zero-insertion then *full* convolution: output pixel j is filtered-upsampled
        # pixel j - (k - 1) + p0, hence the pad/crop below (x_after: up + p1 - k).
        kernels = _depthwise(f, channels, x.dtype, gain, flip=flip_filter)
        strides = [(up, up)] if len(kernels) == 1 else [(1, up), (up, 1)]
        for kernel, stride in zip(kernels, strides, strict=True):
            x = F.conv_transpose2d(x, kernel, stride=stride, groups=channels)
        x = F.pad(x, [px0 - fw + 1, px1 + up - fw, py0 - fh + 1, py1 + up - fh])
        return x[:, :, ::down, ::down] if down > 1 else x
    # Keeping every down-th output is the conv's stride: a quarter of the work, and a dense result in the
    # input's memory format (a strided slice would hand the next conv a layout it copies).
    kernels = _depthwise(f, channels, x.dtype, gain, flip=not flip_filter)
    if len(kernels) == 1 and px0 == px1 >= 0 and py0 == py1 >= 0:  # let the conv pad: saves a copy
        return F.conv2d(x, kernels[0], stride=down, padding=(py0, px0), groups=channels)
    x = F.pad(x, [px0, px1, py0, py1])
    strides = [down] if len(kernels) == 1 else [(1, down), (down, 1)]
    for kernel, stride in zip(kernels, strides, strict=True):
        x = F.conv2d(x, kernel, stride=stride, groups=channels)
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 2, gain: float = 1) -> torch.Tensor:
    """FIR upsampling by `up`: [N, C, H, W] -> [N, C, H·up, W·up], preserving the DC level."""
    fw, fh = _filter_size(f)
    pads = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pads, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: int = 2, gain: float = 1) -> torch.Tensor:
    """FIR downsampling by `down`: [N, C, H, W] -> [N, C, H/down, W/down]."""
    fw, fh = _filter_size(f)
    pads = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pads, gain=gain)


# ---------------------------------------------------------------------------------------------------
# Convolution with resampling


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """conv2d(w) of the FIR-upsampled input, or FIR-downsampled conv2d(w) output (up and down: not both).

    `padding` is relative to the upsampled image. flip_weight=True correlates like F.conv2d; False
    convolves (NVIDIA uses False for up-sampling layers, which matters for imported weights).
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and down-sampling at once is not supported")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        if flip_weight:
            w = w.flip([2, 3])
        w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        return upsample_conv2d(
            x, w.reshape(groups * in_per_group, out_channels // groups, kh, kw), f, up, padding, groups
        )
    if not flip_weight:
        w = w.flip([2, 3])
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
        if kw == 1 and kh == 1:  # subsample before the (pointwise) conv: fewer pixels to convolve
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return F.conv2d(x, w, stride=down, groups=groups)
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, w, padding=(py0, px0), groups=groups)
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), w, groups=groups)


def _add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """fresh + other, in place when autograd is off (`fresh` must be a tensor this module just made)."""
    return fresh.add_(other) if not torch.is_grad_enabled() else fresh + other


def _mul(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """fresh · other, in place when autograd is off (`fresh` must be a tensor this module just made)."""
    return fresh.mul_(other) if not torch.is_grad_enabled() else fresh * other


def upsample_conv2d(
    x: torch.Tensor, w_t: torch.Tensor, f: torch.Tensor | None, up: int = 2, padding: int = 0, groups: int = 1
) -> torch.Tensor:
    """Convolution (not correlation) with w of the FIR-upsampled x, as a transposed conv then the filter.

    w_t is w in conv_transpose2d's layout: [groups·in_per_group, out_per_group, kh, kw].
    """
    kh, kw = w_t.shape[2:]
    fw, fh = _filter_size(f)
    # Padding relative to the upsampled image, as for upsample2d plus the conv's own.
    px0, px1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
    py0, py1 = padding + (fh + up - 1) // 2, padding + (fh - up) // 2
    # Transposed conv = zero-insertion + *full* convolution with w, which consumed k - 1 of that padding
    # (and the image's trailing up - 1 zeros).
    x = F.conv_transpose2d(x, w_t, stride=up, groups=groups)
    return upfirdn2d(x, f, padding=[px0 - kw + 1, px1 + up - kw, py0 - kh + 1, py1 + up - kh], gain=up * up)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2's style-modulated conv: per-sample weights weight·styles, rescaled to unit norm per output.

    x: [N, I, H, W], weight: [O, I, kh, kw], styles: [N, I]; noise (already scaled) is added after the conv.
    fused_modconv=True folds the batch into the channels and runs one grouped conv with per-sample weights
    (fast at inference). False scales the activations before and after a conv with the shared weight
    instead, which is the same function but cheaper to differentiate (training).
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    if x.dtype == torch.float16 and demodulate:  # pre-normalize so fp16 cannot overflow; demod undoes it
        weight = weight * (
            1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # 1 / ‖weight·styles‖ per (sample, output channel), without building the per-sample weights.
    dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt() if demodulate else None  # [N, O]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(
            x, weight.to(x.dtype), resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
        )
        if dcoefs is not None and noise is not None and torch.is_grad_enabled():  # one pass, as NVIDIA's fma
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        if dcoefs is not None:
            x = _mul(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        if noise is not None:
            x = _add(x, noise.to(x.dtype))
        return x

    scales = styles.reshape(batch_size, 1, -1)  # [N, 1, I] -> [N, O, I]: what multiplies weight[o, i]
    if dcoefs is not None:
        scales = scales * dcoefs.reshape(batch_size, -1, 1)
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N·I, H, W]: one group per sample
    if up > 1:  # build the weights directly in conv_transpose2d's [N·I, O, kh, kw] layout (no copy)
        if flip_weight:
            weight = weight.flip([2, 3])
        w = weight.transpose(0, 1).contiguous()[None] * scales.transpose(1, 2).contiguous()[..., None, None]
        x = upsample_conv2d(
            x, w.reshape(-1, out_channels, kh, kw).to(x.dtype), resample_filter, up, padding, batch_size
        )
    else:
        w = weight[None] * scales[..., None, None]  # [N, O, I, kh, kw]
        x = conv2d_resample(
            x,
            w.reshape(-1, in_channels, kh, kw).to(x.dtype),
            resample_filter,
            down=down,
            padding=padding,
            groups=batch_size,
            flip_weight=flip_weight,
        )
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = _add(x, noise.to(x.dtype))
    return x
