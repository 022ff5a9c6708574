"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data"), in plain PyTorch and differentiable to any order.

Every image D sees (reals and fakes alike) goes through `AugmentPipe`: each transform is applied to each
sample with probability p x (its strength), so that D never sees the un-augmented distribution often enough
to overfit it, while G still learns it (the transforms are invertible in distribution, "non-leaking").
`AdaController` tunes p during training from the overfitting heuristic r_t = E[sign(D(real))].

The pipeline follows NVIDIA's `AugmentPipe` (same keyword arguments, buffers, parameter distributions, order
of transforms and of random draws) with its own implementation:
  pixel blitting + general geometry -> one inverse homogeneous 3x3 matrix per sample, executed once:
      reflect-pad, 2x upsample (sym6 lowpass), bilinear grid sampling, 2x downsample (sym6 lowpass)
  color -> one homogeneous 4x4 matrix per sample in RGB space, applied per pixel
  image-space filtering, additive noise, cutout (not in 'bgc', kept for the other NVIDIA presets)
R1 backpropagates a gradient penalty through the pipeline, so every op here has a double backward; in
particular `grid_sample_bilinear` replaces `F.grid_sample`, whose backward is not differentiable.

Random draws happen in `sample_params` (one host sync per call, for the padding size), the deterministic
work in `apply_params`; `forward` is both. Drawing the parameters once and applying them repeatedly is how
to fix the randomness (tests, gradient checks); a seeded `torch.Generator` works too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Scaling (low-pass) coefficients of the Daubechies symlets of order 2 and 6, as tabulated in the wavelet
# literature (e.g. PyWavelets' reconstruction filters). sym6 is the resampling filter of the geometric
# transforms: being orthogonal, 2x upsampling followed by 2x downsampling with it is the identity.
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)  # fmt: skip

# NVIDIA's named pipelines (train.py --augpipe); 'bgc' is the default and the one ADA was tuned for.
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}

# Unit luma axis of homogeneous RGB: color transforms scale, flip or rotate around it.
_LUMA_AXIS = (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3), 0.0)
# Expected power of the four frequency bands of natural images (1/f spectrum), for filter gain normalisation.
_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


# ---------------------------------------------------------------------------------------------------
# Filters


def lowpass_taps(coefficients: Sequence[float]) -> torch.Tensor:
    """A separable FIR filter normalised to unit DC gain, float32 [taps] (the `Hz_geom` buffer)."""
    taps = torch.tensor(coefficients, dtype=torch.float32)
    return taps / taps.sum()


def filter_bank(lowpass: Sequence[float], bands: int = 4) -> np.ndarray:
    """Zero-phase 1-D filters that split a signal into `bands` octave bands and sum to an impulse: [bands, taps].

    Band 0 is the lowest. Each round stretches the current bank by 2 (zero insertion), smooths it with the
    low-pass autocorrelation H(z)H(1/z)/2, and gives the new top octave the high-pass one H(-z)H(-1/z)/2.
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)  # H(-z): the mirrored high-pass
    lo_auto = np.convolve(lo, lo[::-1]) / 2
    hi_auto = np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(bands, 1)  # every band starts as the zero-length identity; band 0 keeps it
    for band in range(1, bands):
        stretched = np.zeros((bands, 2 * bank.shape[1] - 1))
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo_auto) for row in stretched])
        start = (bank.shape[1] - hi_auto.size) // 2
        bank[band, start : start + hi_auto.size] += hi_auto
    return bank


def upsample2x(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W]: insert a zero after every pixel, pad (K + 1) // 2 zeros before and
    K // 2 - 1 after, convolve with the K `taps` at gain 2 per axis (NVIDIA's upsample2d phase).

    Computed as a stride-2 transposed convolution, which never multiplies the inserted zeros.
    """
    channels, k = images.shape[1], taps.numel()
    crop = k - 1 - (k + 1) // 2  # the transposed convolution's padding that gives (k + 1) // 2 leading zeros
    row = (taps * 2).to(images.dtype).view(1, 1, 1, k).repeat(channels, 1, 1, 1)  # [C, 1, 1, K]
    images = F.conv_transpose2d(images, row, stride=(1, 2), padding=(0, crop), groups=channels)
    return F.conv_transpose2d(images, row.transpose(2, 3), stride=(2, 1), padding=(crop, 0), groups=channels)


def downsample2x(images: torch.Tensor, taps: torch.Tensor, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Correlate with the K `taps` and keep every second pixel: [N, C, 2H, 2W] -> [N, C, H, W].

    The input is zero-padded by (K - 1) // 2 before and (K - 2) // 2 after, plus `pad` (negative crops).
    """
    channels, k = images.shape[1], taps.numel()
    before, after = (k - 1) // 2 + pad[0], (k - 2) // 2 + pad[1]
    images = F.pad(images, [before, after, before, after])  # negative values crop
    row = taps.to(images.dtype).view(1, 1, 1, k).repeat(channels, 1, 1, 1)  # [C, 1, 1, K]
    images = F.conv2d(images, row, stride=(1, 2), groups=channels)
    return F.conv2d(images, row.transpose(2, 3), stride=(2, 1), groups=channels)


# ---------------------------------------------------------------------------------------------------
# Bilinear sampling with a double backward


def grid_sample_bilinear(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(images, grid, mode='bilinear', padding_mode='zeros', align_corners=False)` from gathers
    and arithmetic, so that autograd can differentiate it to any order (with respect to both arguments).

    images: [N, C, H, W]; grid: [N, Ho, Wo, 2] with (x, y) in [-1, 1] spanning the pixel edges.
    Returns [N, C, Ho, Wo].
    """
    batch, channels, height, width = images.shape
    out_h, out_w = grid.shape[1:3]
    # Normalised coordinates -> pixel coordinates (pixel centres at integers).
    x = ((grid[..., 0] + 1) * width - 1) / 2  # [N, Ho, Wo]
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = x.detach().floor(), y.detach().floor()
    x1, y1 = x0 + 1, y0 + 1
    # The four neighbours, in order top-left, top-right, bottom-left, bottom-right: [N, 4, Ho, Wo].
    corner_x = torch.stack([x0, x1, x0, x1], dim=1)
    corner_y = torch.stack([y0, y0, y1, y1], dim=1)
    weights = torch.stack([(x1 - x) * (y1 - y), (x - x0) * (y1 - y), (x1 - x) * (y - y0), (x - x0) * (y - y0)], dim=1)
    inside = (corner_x >= 0) & (corner_x <= width - 1) & (corner_y >= 0) & (corner_y <= height - 1)
    flat_index = corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)
    flat_index = flat_index.long().view(batch, 1, -1).expand(-1, channels, -1)  # [N, C, 4 * Ho * Wo]
    values = images.reshape(batch, channels, height * width).gather(2, flat_index)
    values = values.view(batch, channels, 4, out_h, out_w)
    values = torch.where(inside.unsqueeze(1), values, values.new_zeros(()))  # zero padding outside
    return (values * weights.unsqueeze(1).to(values.dtype)).sum(dim=2)


# ---------------------------------------------------------------------------------------------------
# Homogeneous matrices, batched: [N] parameters -> [N, 3, 3] (2-D) or [N, 4, 4] (RGB)


def _from_rows(*rows: Sequence[torch.Tensor | float], like: torch.Tensor) -> torch.Tensor:
    entries = [e if isinstance(e, torch.Tensor) else torch.full_like(like, e) for row in rows for e in row]
    return torch.stack(entries, dim=-1).view(*like.shape, len(rows), len(rows[0]))


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _from_rows([1, 0, tx], [0, 1, ty], [0, 0, 1], like=tx)


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _from_rows([sx, 0, 0], [0, sy, 0], [0, 0, 1], like=sx)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise in a y-up frame (clockwise on screen, where y points down)."""
    cos, sin = theta.cos(), theta.sin()
    return _from_rows([cos, -sin, 0], [sin, cos, 0], [0, 0, 1], like=theta)


def translate3d(t: torch.Tensor) -> torch.Tensor:
    """Adds t to all three channels."""
    return _from_rows([1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1], like=t)


def scale3d(s: torch.Tensor) -> torch.Tensor:
    """Multiplies all three channels by s."""
    return _from_rows([s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1], like=s)


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta [N] around the unit `axis` [4] (homogeneous, w = 0), Rodrigues' formula:
    R = cos(t) I + sin(t) [axis]x + (1 - cos(t)) axis axis^T."""
    ax, ay, az = axis[0], axis[1], axis[2]
    cos, sin = theta.cos(), theta.sin()
    one_minus_cos = 1 - cos
    return _from_rows(
        [ax * ax * one_minus_cos + cos, ax * ay * one_minus_cos - az * sin, ax * az * one_minus_cos + ay * sin, 0],
        [ay * ax * one_minus_cos + az * sin, ay * ay * one_minus_cos + cos, ay * az * one_minus_cos - ax * sin, 0],
        [az * ax * one_minus_cos - ay * sin, az * ay * one_minus_cos + ax * sin, az * az * one_minus_cos + cos, 0],
        [0, 0, 0, 1],
        like=theta,
    )


# ---------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class AugmentParams:
    """One minibatch's draws, ready to apply. A field is None when no sample uses that stage."""

    geometry: torch.Tensor | None  # [N, 3, 3] output pixel -> input pixel, centred pixel coordinates
    padding: tuple[int, int, int, int]  # reflection padding (x0, y0, x1, y1) the geometry needs
    color: torch.Tensor | None  # [N, 4, 4] homogeneous RGB in -> RGB out
    band_gains: torch.Tensor | None  # [N, bands] gains of the image-space filter bank
    noise: torch.Tensor | None  # [N, C, H, W] additive noise, already scaled per sample
    keep_mask: torch.Tensor | None  # [N, 1, H, W] cutout: 0 inside the rectangle, 1 elsewhere


@dataclass
class _Draws:
    """The random draws of one `sample_params` call: one batch size, device and generator for all of them."""

    batch: int
    device: torch.device
    generator: torch.Generator | None

    def uniform(self, *size: int) -> torch.Tensor:
        return torch.rand(size, device=self.device, dtype=torch.float32, generator=self.generator)

    def normal(self, *size: int) -> torch.Tensor:
        return torch.randn(size, device=self.device, dtype=torch.float32, generator=self.generator)

    def gate(self, value: torch.Tensor, probability: torch.Tensor, neutral: float) -> tuple[torch.Tensor, torch.Tensor]:
        """`value` where a sample is chosen (with `probability`, drawn after `value`), `neutral` elsewhere."""
        chosen = self.uniform(self.batch) < probability  # [N]
        chosen_b = chosen.view(-1, *([1] * (value.ndim - 1)))
        return torch.where(chosen_b, value, torch.full_like(value, neutral)), chosen


class AugmentPipe(torch.nn.Module):
    """NVIDIA's augmentation pipeline. Each keyword is a probability multiplier (0 disables the transform;
    'bgc' sets the twelve blit/geometry/color ones to 1) or the spread of a transform's parameter: a sample
    gets a transform with probability strength x p, e.g. an x-flip with probability xflip x p x 1/2, as the
    transform draws "flip or not" (`finetune-gan --xflip-strength`: the paper's 0.1 for Stanford Cars).
    The `p` buffer is the overall probability ADA adjusts; images are [N, C, H, W] in [-1, 1], C = 1 or 3.
    """

    def __init__(
        self,
        xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
        scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0,
        scale_std: float = 0.2, rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
        brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0, saturation: float = 0,
        brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1, saturation_std: float = 1,
        imgfilter: float = 0, imgfilter_bands: Sequence[float] = (1, 1, 1, 1), imgfilter_std: float = 1,
        noise: float = 0, cutout: float = 0, noise_std: float = 0.1, cutout_size: float = 0.5,
    ):  # fmt: skip
        super().__init__()
        self.register_buffer("p", torch.ones([]))  # overall augmentation probability
        # Pixel blitting: x-flip, 90-degree rotations, integer translation (fraction of the image size).
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.xint_max = float(xint_max)
        # General geometry: isotropic scale (log2 std), rotation (1 = full circle), anisotropic scale (log2 std),
        # fractional translation (std, fraction of the image size).
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max = float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        # Color: brightness (std), contrast (log2 std), luma flip, hue rotation (1 = full circle), saturation
        # (log2 std).
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        # Image-space filtering: per-band probability multipliers, log2 std of the band gains.
        self.imgfilter, self.imgfilter_bands = float(imgfilter), [float(b) for b in imgfilter_bands]
        self.imgfilter_std = float(imgfilter_std)
        # Corruptions: additive RGB noise (std of the per-sample std), cutout (rectangle size, fraction).
        self.noise, self.cutout = float(noise), float(cutout)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)

        self.register_buffer("Hz_geom", lowpass_taps(SYM6))  # [12] resampling lowpass of the geometry
        self.register_buffer("Hz_fbank", torch.as_tensor(filter_bank(SYM2), dtype=torch.float32))  # [4, 43]

    def extra_repr(self) -> str:
        names = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
                 "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")  # fmt: skip
        return ", ".join(f"{name}={getattr(self, name):g}" for name in names if getattr(self, name))

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a minibatch [N, C, H, W]; same shape and dtype. p = 0 returns `images` itself."""
        return self.apply_params(images, self.sample_params(images.shape, images.device, generator))

    # --- random draws ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_params(
        self, shape: Sequence[int], device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw every random parameter for a minibatch of `shape` [N, C, H, W], in NVIDIA's order.

        Each transform draws its value and then a gate; a gated-off sample gets the neutral value. Costs one
        host sync (the padding size of the geometry, and which stages any sample uses).
        """
        batch, channels, height, width = (int(s) for s in shape)
        device = torch.device(device) if device is not None else self.p.device
        self._check_channels(channels)
        draw = _Draws(batch, device, generator)
        p = self.p.to(device=device, dtype=torch.float32)
        # The stages draw in this order (NVIDIA's): geometry, color, filter, noise, cutout.
        inverse, geometry_used = self._sample_geometry(draw, p, height, width)
        color, color_used = self._sample_color(draw, p, channels)
        band_gains, filter_used = self._sample_filter(draw, p)
        noise, noise_used = self._sample_noise(draw, p, channels, height, width)
        keep_mask, cutout_used = self._sample_cutout(draw, p, height, width)

        stages = (geometry_used, color_used, filter_used, noise_used, cutout_used)
        if not any(stages):  # every strength is 0: nothing to draw, nothing to sync
            return AugmentParams(None, (0, 0, 0, 0), None, None, None, None)

        # One host sync: which stages any sample uses, and the padding the geometry needs.
        def any_of(used: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([u.any() for u in used]).any().float() if used else torch.zeros((), device=device)

        flags = [any_of(used) for used in stages]
        margin = _geometry_margin(inverse, height, width, self.Hz_geom.numel()) if geometry_used else torch.zeros(4)
        summary = torch.cat([torch.stack(flags), margin.to(device)]).tolist()
        uses = [flag > 0 for flag in summary[:5]]
        padding = tuple(int(m) for m in summary[5:])
        return AugmentParams(
            geometry=inverse if uses[0] else None,
            padding=padding,  # type: ignore[arg-type]
            color=color if uses[1] else None,
            band_gains=band_gains if uses[2] else None,
            noise=noise if uses[3] else None,
            keep_mask=keep_mask if uses[4] else None,
        )

    def _sample_geometry(
        self, draw: _Draws, p: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pixel blitting and general geometry, composed right to left into one inverse matrix [N, 3, 3]."""
        batch, uniform, normal, gate = draw.batch, draw.uniform, draw.normal, draw.gate
        inverse = torch.eye(3, device=draw.device).expand(batch, 3, 3)
        geometry_used = []
        if self.xflip > 0:
            flip, used = gate(torch.floor(uniform(batch) * 2), self.xflip * p, 0)
            inverse = inverse @ scale2d(1 - 2 * flip, torch.ones_like(flip))
            geometry_used.append(used)
        if self.rotate90 > 0:
            quarter_turns, used = gate(torch.floor(uniform(batch) * 4), self.rotate90 * p, 0)
            inverse = inverse @ rotate2d(math.pi / 2 * quarter_turns)
            geometry_used.append(used)
        if self.xint > 0:
            shift, used = gate((uniform(batch, 2) * 2 - 1) * self.xint_max, self.xint * p, 0)  # [N, 2]
            dx, dy = torch.round(shift[:, 0] * width), torch.round(shift[:, 1] * height)
            inverse = inverse @ translate2d(-dx, -dy)
            geometry_used.append(used)
        if self.scale > 0:
            s, used = gate(torch.exp2(normal(batch) * self.scale_std), self.scale * p, 1)
            inverse = inverse @ scale2d(1 / s, 1 / s)
            geometry_used.append(used)
        # Pre- and post-rotation each with probability p_rot, so that P(at least one) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta, used = gate((uniform(batch) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0)
            inverse = inverse @ rotate2d(theta)  # inverse of rotate2d(-theta)
            geometry_used.append(used)
        if self.aniso > 0:
            s, used = gate(torch.exp2(normal(batch) * self.aniso_std), self.aniso * p, 1)
            inverse = inverse @ scale2d(1 / s, s)
            geometry_used.append(used)
        if self.rotate > 0:
            theta, used = gate((uniform(batch) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0)
            inverse = inverse @ rotate2d(theta)
            geometry_used.append(used)
        if self.xfrac > 0:
            shift, used = gate(normal(batch, 2) * self.xfrac_std, self.xfrac * p, 0)  # [N, 2]
            inverse = inverse @ translate2d(-shift[:, 0] * width, -shift[:, 1] * height)
            geometry_used.append(used)
        return inverse, geometry_used

    def _sample_color(self, draw: _Draws, p: torch.Tensor, channels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Color, composed left to right (each new transform acts after the previous ones) into [N, 4, 4]."""
        batch, device, uniform, normal, gate = draw.batch, draw.device, draw.uniform, draw.normal, draw.gate
        color = torch.eye(4, device=device).expand(batch, 4, 4)
        color_used = []
        luma = torch.tensor(_LUMA_AXIS, device=device)
        luma_projection = torch.outer(luma, luma)  # [4, 4]
        if self.brightness > 0:
            b, used = gate(normal(batch) * self.brightness_std, self.brightness * p, 0)
            color = translate3d(b) @ color
            color_used.append(used)
        if self.contrast > 0:
            c, used = gate(torch.exp2(normal(batch) * self.contrast_std), self.contrast * p, 1)
            color = scale3d(c) @ color
            color_used.append(used)
        if self.lumaflip > 0:
            flip, used = gate(torch.floor(uniform(batch) * 2), self.lumaflip * p, 0)
            householder = torch.eye(4, device=device) - 2 * luma_projection * flip.view(-1, 1, 1)
            color = householder @ color
            color_used.append(used)
        if self.hue > 0 and channels > 1:
            theta, used = gate((uniform(batch) * 2 - 1) * math.pi * self.hue_max, self.hue * p, 0)
            color = rotate3d(luma, theta) @ color
            color_used.append(used)
        if self.saturation > 0 and channels > 1:
            s, used = gate(torch.exp2(normal(batch) * self.saturation_std), self.saturation * p, 1)
            chroma_scale = luma_projection + (torch.eye(4, device=device) - luma_projection) * s.view(-1, 1, 1)
            color = chroma_scale @ color
            color_used.append(used)
        return color, color_used

    def _sample_filter(self, draw: _Draws, p: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Image-space filtering: each band amplified by 2^N(0, std) with probability, power kept constant."""
        band_gains, filter_used = None, []
        if self.imgfilter > 0:
            batch, device = draw.batch, draw.device
            bands = self.Hz_fbank.shape[0]
            if len(self.imgfilter_bands) != bands:
                raise ValueError(f"imgfilter_bands needs {bands} entries, got {len(self.imgfilter_bands)}")
            power = torch.tensor(_BAND_POWER, device=device)
            band_gains = torch.ones(batch, bands, device=device)
            for band, band_strength in enumerate(self.imgfilter_bands):
                strength = self.imgfilter * p * band_strength
                gain, used = draw.gate(torch.exp2(draw.normal(batch) * self.imgfilter_std), strength, 1)
                gains = torch.ones(batch, bands, device=device)
                gains[:, band] = gain
                gains = gains / (power * gains.square()).sum(dim=1, keepdim=True).sqrt()  # unit expected power
                band_gains = band_gains * gains
                filter_used.append(used)
        return band_gains, filter_used

    def _sample_noise(
        self, draw: _Draws, p: torch.Tensor, channels: int, height: int, width: int
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Additive noise [N, C, H, W] whose std is itself drawn per sample."""
        if not self.noise > 0:
            return None, []
        sigma, used = draw.gate(draw.normal(draw.batch).abs() * self.noise_std, self.noise * p, 0)
        noise = draw.normal(draw.batch, channels, height, width) * sigma.view(-1, 1, 1, 1)
        return noise, [used]

    def _sample_cutout(
        self, draw: _Draws, p: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Cutout: a keep mask [N, 1, H, W], 0 inside a rectangle of `cutout_size` at a random centre."""
        if not self.cutout > 0:
            return None, []
        batch, device = draw.batch, draw.device
        size, used = draw.gate(torch.full((batch,), self.cutout_size, device=device), self.cutout * p, 0)
        center = draw.uniform(batch, 2)  # [N, (x, y)], fraction of the image size
        pixel_x = (torch.arange(width, device=device) + 0.5) / width  # pixel centres, [W]
        pixel_y = (torch.arange(height, device=device) + 0.5) / height
        outside_x = (pixel_x.view(1, 1, -1) - center[:, 0:1, None]).abs() >= size.view(-1, 1, 1) / 2
        outside_y = (pixel_y.view(1, -1, 1) - center[:, 1:2, None]).abs() >= size.view(-1, 1, 1) / 2
        keep_mask = (outside_x | outside_y).to(torch.float32).unsqueeze(1)  # [N, 1, H, W]
        return keep_mask, [used]

    # --- deterministic execution ------------------------------------------------------------------

    def apply_params(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters: differentiable (to any order) with respect to `images`."""
        if images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
        self._check_channels(images.shape[1])
        out_dtype = images.dtype
        compute_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
        with torch.autocast(images.device.type, enabled=False):
            x = images.to(compute_dtype)
            if params.geometry is not None:
                x = _apply_geometry(x, params.geometry.to(compute_dtype), params.padding, self.Hz_geom)
            if params.color is not None:
                x = _apply_color(x, params.color.to(compute_dtype))
            if params.band_gains is not None:
                x = _apply_filter_bank(x, params.band_gains.to(compute_dtype), self.Hz_fbank.to(compute_dtype))
            if params.noise is not None:
                x = x + params.noise.to(compute_dtype)
            if params.keep_mask is not None:
                x = x * params.keep_mask.to(compute_dtype)
        return x if x is images else x.to(out_dtype)

    def _check_channels(self, channels: int) -> None:
        uses_color = any(getattr(self, n) > 0 for n in ("brightness", "contrast", "lumaflip", "hue", "saturation"))
        if uses_color and channels not in (1, 3):
            raise ValueError(f"color augmentation needs 1 (L) or 3 (RGB) channels, got {channels}")


def _geometry_margin(inverse: torch.Tensor, height: int, width: int, taps: int) -> torch.Tensor:
    """Reflection padding (x0, y0, x1, y1) so that every sample's footprint, plus the filter support, lies
    inside the padded image; one value for the whole batch, at most the image size - 1 (reflect's limit)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=inverse.device)
    footprint = inverse @ corners.t()  # [N, 3, 4]: where the output corners come from
    xs, ys = footprint[:, 0].flatten(), footprint[:, 1].flatten()
    reach = torch.stack([(-xs).max(), (-ys).max(), xs.max(), ys.max()])  # [x0, y0, x1, y1]
    support = taps // 4 * 2
    margin = reach + torch.tensor([support - cx, support - cy] * 2, device=inverse.device)
    limit = torch.tensor([width - 1, height - 1] * 2, device=inverse.device, dtype=margin.dtype)
    return torch.minimum(margin.clamp(min=0), limit).ceil()


def _apply_geometry(
    images: torch.Tensor, inverse: torch.Tensor, padding: tuple[int, int, int, int], lowpass: torch.Tensor
) -> torch.Tensor:
    """Resample [N, C, H, W] through the inverse maps [N, 3, 3] (output pixel -> input pixel, centred
    coordinates): reflect-pad, upsample 2x, sample bilinearly at 2x, downsample 2x back to H x W."""
    batch, channels, height, width = images.shape
    pad_x0, pad_y0, pad_x1, pad_y1 = padding
    border = lowpass.numel() // 4  # extra output pixels rendered on each side, cropped by the downsampling
    dtype = images.dtype

    def const(*rows: Sequence[float]) -> torch.Tensor:
        return torch.tensor(rows, dtype=dtype, device=images.device)

    images = F.pad(images, [pad_x0, pad_x1, pad_y0, pad_y1], mode="reflect")
    # Centred coordinates of the original image -> of the padded one.
    inverse = const([1, 0, (pad_x0 - pad_x1) / 2], [0, 1, (pad_y0 - pad_y1) / 2], [0, 0, 1]) @ inverse
    images = upsample2x(images, lowpass)
    # Both sides now at 2x: x_2x = 2 x - 1/2 (the sym6 upsampler's phase).
    to_2x = const([2, 0, -0.5], [0, 2, -0.5], [0, 0, 1])
    from_2x = const([0.5, 0, 0.25], [0, 0.5, 0.25], [0, 0, 1])
    inverse = to_2x @ inverse @ from_2x
    # Pixel coordinates -> grid_sample's normalised ones (align_corners=False: x_norm = 2 x / size).
    out_h, out_w = (height + 2 * border) * 2, (width + 2 * border) * 2
    in_h, in_w = images.shape[2:]
    to_normalised = const([2 / in_w, 0, 0], [0, 2 / in_h, 0], [0, 0, 1])
    from_normalised = const([out_w / 2, 0, 0], [0, out_h / 2, 0], [0, 0, 1])
    inverse = to_normalised @ inverse @ from_normalised
    grid = F.affine_grid(inverse[:, :2, :], [batch, channels, out_h, out_w], align_corners=False)
    images = grid_sample_bilinear(images, grid)
    return downsample2x(images, lowpass, pad=(-2 * border, -2 * border))


def _apply_color(images: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Per-pixel homogeneous RGB map [N, 4, 4]. A grey image is read as r = g = b and written as the mean
    of the three output channels."""
    batch, channels, height, width = images.shape
    pixels = images.reshape(batch, channels, height * width)
    if channels == 3:
        pixels = color[:, :3, :3] @ pixels + color[:, :3, 3:]
    else:
        mean_row = color[:, :3, :].mean(dim=1, keepdim=True)  # [N, 1, 4]
        pixels = pixels * mean_row[:, :, :3].sum(dim=2, keepdim=True) + mean_row[:, :, 3:]
    return pixels.reshape(batch, channels, height, width)


def _apply_filter_bank(images: torch.Tensor, band_gains: torch.Tensor, fbank: torch.Tensor) -> torch.Tensor:
    """Separable zero-phase filtering with the per-sample mix of bands `band_gains @ fbank`, reflect-padded."""
    batch, channels, height, width = images.shape
    taps = (band_gains @ fbank).repeat_interleave(channels, dim=0)  # [N * C, T]
    half = fbank.shape[1] // 2
    x = F.pad(images.reshape(1, batch * channels, height, width), [half] * 4, mode="reflect")
    x = F.conv2d(x, taps[:, None, None, :], groups=batch * channels)
    x = F.conv2d(x, taps[:, None, :, None], groups=batch * channels)
    return x.reshape(batch, channels, height, width)


# ---------------------------------------------------------------------------------------------------
# ADA: adjusting p


class AdaController:
    """Adjusts the augmentation probability p from the overfitting heuristic r_t = E[sign(D(real))].

    r_t near 1 means D is confidently right on every real image (overfitting): more augmentation; below the
    target, less. Each update moves p by sign(r_t - target) * batch_size * interval / (ada_kimg * 1000), so p
    can cross [0, 1] in `ada_kimg` thousand images; p is kept in [0, 1] (NVIDIA only clamps at 0, but a
    probability above 1 augments no more than 1 does).

    `batch_size` is the global minibatch (all processes) and `interval` the number of minibatches between
    updates (NVIDIA: 4). Signs accumulate on the device without host syncs; `update` syncs once. Under DDP,
    each process accumulates its own logits and `update(p, reduce=...)` sums [sign sum, count] over processes.
    """

    def __init__(
        self, target: float = 0.6, ada_kimg: float = 500, batch_size: int = 64, interval: int = 4, p: float = 0.0
    ):
        if ada_kimg <= 0 or batch_size <= 0 or interval <= 0:
            raise ValueError("ada_kimg, batch_size and interval must be positive")
        self.target, self.ada_kimg = float(target), float(ada_kimg)
        self.batch_size, self.interval = int(batch_size), int(interval)
        self._p: torch.Tensor | float = float(p)
        self._sign_sum: torch.Tensor | float = 0.0
        self._count = 0
        self.last_rt: float | None = None  # r_t of the last update (None before the first)

    @property
    def step_size(self) -> float:
        """How far one update moves p."""
        return self.batch_size * self.interval / (self.ada_kimg * 1000)

    @property
    def p(self) -> float:
        """The p of the last update (or the initial / loaded one)."""
        return float(self._p)

    @property
    def r_t(self) -> float | None:
        return self.last_rt

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record D's raw outputs on (augmented) real images; any shape."""
        self._sign_sum = self._sign_sum + real_logits.detach().sign().sum(dtype=torch.float64)
        self._count += real_logits.numel()

    def update(
        self,
        p: torch.Tensor | float | None = None,
        reduce: Callable[[list[float]], Sequence[float]] | None = None,
    ) -> torch.Tensor:
        """Return the new p from the signs accumulated since the last update, and start a new interval.

        p: the current value (e.g. `augment_pipe.p`; default: the controller's own); the result has its
        device and dtype. reduce: sums a list of floats over processes (e.g. `lambda v: all_reduce_sum(v, rt)`);
        every process must call `update` together when it is given. With no signs anywhere, p is unchanged.
        """
        current = p if p is not None else self._p
        current = current.detach().clone() if isinstance(current, torch.Tensor) else torch.tensor(float(current))
        sign_sum, count = float(self._sign_sum), float(self._count)
        if reduce is not None:
            sign_sum, count = (float(v) for v in reduce([sign_sum, count]))
        self._sign_sum, self._count = 0.0, 0
        if count > 0:
            self.last_rt = sign_sum / count
            current = (current + float(np.sign(self.last_rt - self.target)) * self.step_size).clamp(0, 1)
        self._p = current
        return current

    def state_dict(self) -> dict[str, float | int | None]:
        """Plain numbers: the settings, p, the last r_t and the signs of the interval in progress."""
        return {
            "target": self.target,
            "ada_kimg": self.ada_kimg,
            "batch_size": self.batch_size,
            "interval": self.interval,
            "p": self.p,
            "last_rt": self.last_rt,
            "sign_sum": float(self._sign_sum),
            "count": self._count,
        }

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore what `state_dict` returned (values may be 0-d tensors after a round trip through a file)."""

        def number(key: str) -> float:
            return float(state[key])  # type: ignore[arg-type]

        self.target, self.ada_kimg = number("target"), number("ada_kimg")
        self.batch_size, self.interval = int(number("batch_size")), int(number("interval"))
        self._p = number("p")
        self.last_rt = None if state.get("last_rt") is None else number("last_rt")
        self._sign_sum, self._count = number("sign_sum"), int(number("count"))
