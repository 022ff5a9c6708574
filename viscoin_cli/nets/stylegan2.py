"""StyleGAN2-ADA generator and discriminator in plain PyTorch, interchangeable with NVIDIA's networks.

Constructors take the keyword arguments of NVIDIA's stylegan2-ada-pytorch `training/networks.py` (with the
same defaults), and parameter / buffer names, shapes, order and init are NVIDIA's, so that a pickled
network's `_init_kwargs` and `state_dict()` load as they are and reproduce its images. Conventions kept:

- Equalized learning rate: weights are stored unscaled (N(0, 1) init, divided by the lr multiplier) and
  multiplied by `weight_gain` = lr_multiplier / sqrt(fan_in) at run time; the mapping net uses 0.01.
- The generator is the 'skip' architecture by default (every block adds its own RGB image to the
  upsampled running image); the discriminator is 'resnet' with minibatch-stddev in the 4x4 epilogue.
  'orig' / 'resnet' / 'skip' are all accepted where NVIDIA accepts them.
- fp16 blocks (`num_fp16_res`) run in fp16 only on CUDA; on CPU everything is fp32. `conv_clamp`
  clamps activations whatever the precision, as NVIDIA does.
- `forward` takes NVIDIA's keywords by name and nothing else: a misspelt one (`noise_mod=`) is a TypeError,
  as it is in NVIDIA's code, instead of silently running with the default.
- A bad configuration or argument (resolution, architecture, noise mode, ws shape, batch vs. minibatch-std
  group) is a `UserError`: the configs come from checkpoints and pickles, the arguments from options.

Shapes: z [N, z_dim], c [N, c_dim], ws [N, num_ws, w_dim] (W+), images [N, img_channels, res, res] in ~[-1, 1].
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta, build_from_config, load_checkpoint, load_into
from viscoin_cli.nets.ops import (
    activation_gain,
    bias_act,
    conv2d_resample,
    downsample2d,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)

FIR_TAPS = (1, 3, 3, 1)  # the binomial low-pass filter of all resampling
SQRT_HALF = math.sqrt(0.5)  # residual branches are summed with this gain to keep unit variance
NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")


def _check_resolution(resolution: int) -> None:
    if resolution < 4 or resolution & (resolution - 1):
        raise UserError(f"StyleGAN2 needs a power-of-two resolution >= 4, got {resolution}")


def _block_format(
    use_fp16: bool, channels_last: bool, device: torch.device, force_fp32: bool, cpu_channels_last: bool = False
):
    """(dtype, memory_format) a block runs in: fp16 only where asked for and on CUDA; channels_last as NVIDIA
    for fp16 blocks, and for fp32 blocks on the CPU where the caller asks (oneDNN's convolutions are faster
    on NHWC there)."""
    if use_fp16 and not force_fp32 and device.type == "cuda":
        return torch.float16, (torch.channels_last if channels_last else torch.contiguous_format)
    cpu_nhwc = cpu_channels_last and device.type == "cpu"
    return torch.float32, (torch.channels_last if cpu_nhwc else torch.contiguous_format)


# ---------------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: y = act(x · (gain·W)ᵀ + lr·b)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float = 0,
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return nn.functional.linear(x, weight, bias)
        return bias_act(nn.functional.linear(x, weight), bias, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Conv with equalized learning rate, optional FIR up/down-sampling, bias, activation and clamp.

    trainable=False (Freeze-D) stores weight and bias as buffers: same names in the state dict.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = FIR_TAPS,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = activation_gain(activation)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_init = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_init) if bias_init is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_init)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        # NVIDIA convolves (flipped weight) when upsampling and correlates otherwise.
        x = conv2d_resample(
            x, weight, self.resample_filter, up=self.up, down=self.down, padding=self.padding, flip_weight=self.up == 1
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


# ---------------------------------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """z (and an embedded label c) -> w, an MLP with lr multiplier 0.01; tracks w_avg for truncation.

    Also the label mapping of a conditional discriminator (z_dim=0, num_ws=None, w_avg_beta=None).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        *,
        update_emas: bool | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim] when num_ws is None).

        w_avg moves towards the batch mean when `update_emas` is True; left at None it follows
        stylegan2-ada-pytorch: in training mode unless `skip_w_avg_update` (e.g. the style-mixing pass).
        Truncation pulls the first `truncation_cutoff` ws (all when None) towards w_avg by psi.
        """
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas is None:
            update_emas = self.training and not skip_w_avg_update
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise UserError("truncation needs w_avg, which this mapping network does not track")
            truncated = self.w_avg.lerp(x, truncation_psi)
            if self.num_ws is not None and truncation_cutoff is not None:
                truncated = torch.cat([truncated[:, :truncation_cutoff], x[:, truncation_cutoff:]], dim=1)
            x = truncated
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + per-pixel noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = FIR_TAPS,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # w -> styles, starting at 1
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise UserError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        styles = self.affine(w)  # [N, in_channels]
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=self.up == 1,
            fused_modconv=fused_modconv,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation (it sets the output's colour scale)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # equalized lr folded into the styles
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (upsampling conv0,) conv1, and its RGB output.

    The first block (in_channels == 0) starts from a learned constant. It consumes num_conv + num_torgb
    ws; its torgb w is the next block's conv0 w (they overlap by one in W+).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = FIR_TAPS,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs: Any,
    ):
        if architecture not in ARCHITECTURES:
            raise UserError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                channels_last=self.channels_last,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            channels_last=self.channels_last,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, channels_last=self.channels_last
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def _default_fused_modconv(self, ws: torch.Tensor, force_fp32: bool) -> bool:
        """On CUDA, NVIDIA's choice: the grouped conv at inference, unless fp16 with a batch > 1. On the CPU,
        never: the non-fused form in NHWC is faster there, in training and at inference alike."""
        if ws.device.type == "cpu" or self.training:
            return False
        dtype, _ = _block_format(self.use_fp16, self.channels_last, ws.device, force_fp32)
        return dtype == torch.float32 or ws.shape[0] == 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features [N, C, res, res], image so far [N, img_channels, res, res] or None) from ws [N, k, w_dim].

        `update_emas` is accepted for stylegan3's API and does nothing: a synthesis block keeps no averages.
        """
        del update_emas
        w_iter = iter(ws.unbind(dim=1))
        if fused_modconv is None:
            fused_modconv = self._default_fused_modconv(ws, force_fp32)
        dtype, memory_format = _block_format(
            self.use_fp16, self.channels_last, ws.device, force_fp32, cpu_channels_last=not fused_modconv
        )
        layer_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.to(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            x = x.to(dtype=dtype, memory_format=memory_format)
            y = self.skip(x, gain=SQRT_HALF)
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), gain=SQRT_HALF, **layer_kwargs)
            x = y + x
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ codes -> image: blocks from 4x4 up to img_resolution, channels min(channel_base / res, channel_max)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs: Any,
    ):
        _check_resolution(img_resolution)
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(
        self,
        ws: torch.Tensor,
        *,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Image [N, img_channels, res, res] from ws [N, num_ws, w_dim].

        noise_mode: 'random' | 'const' | 'none'; force_fp32: no fp16 blocks even on CUDA; fused_modconv: one
        grouped conv per layer (None: NVIDIA's choice); update_emas: passed on to the blocks as NVIDIA does,
        accepted for stylegan3's API and with no effect (no block keeps averages).
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise UserError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        block_kwargs = dict(
            force_fp32=force_fp32, fused_modconv=fused_modconv, noise_mode=noise_mode, update_emas=update_emas
        )
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, **block_kwargs)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2-ADA generator: mapping (z, c -> W+) then synthesis (W+ -> image)."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **(synthesis_kwargs or {})
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        *,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        update_emas: bool | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """Images [N, img_channels, res, res]; the keywords are those of the mapping's and synthesis' forward."""
        ws = self.mapping(
            z,
            c,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
            skip_w_avg_update=skip_w_avg_update,
        )
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)


# ---------------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """One resolution of D: (fromrgb,) conv0, downsampling conv1, plus a 1x1 downsampling skip ('resnet').

    Layers whose running index (over the whole D) is below `freeze_layers` are frozen (Freeze-D).
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = FIR_TAPS,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        if architecture not in ARCHITECTURES:
            raise UserError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def layer(*args: Any, **kwargs: Any) -> Conv2dLayer:
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = layer(
                img_channels, tmp_channels, kernel_size=1, activation=activation, conv_clamp=conv_clamp
            )
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = layer(
            tmp_channels,
            out_channels,
            kernel_size=3,
            activation=activation,
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        if architecture == "resnet":
            self.skip = layer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features at half the resolution, and the downsampled image for the 'skip' architecture."""
        device = (x if x is not None else img).device
        dtype, memory_format = _block_format(
            self.use_fp16, self.channels_last, device, force_fp32, cpu_channels_last=True
        )
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=SQRT_HALF)
            x = self.conv0(x)
            x = self.conv1(x, gain=SQRT_HALF)
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(nn.Module):
    """Appends the stddev across groups of samples as extra channels, so D can see a lack of variety.

    Sample i belongs to group i mod (N / group_size); N must be divisible by min(group_size, N).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        group = min(self.group_size, N) if self.group_size is not None else N
        if N % group:
            raise UserError(f"minibatch-std: batch {N} is not divisible by group size {group}")
        F = self.num_channels
        y = x.reshape(group, -1, F, C // F, H, W)  # [G, n, F, c, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # [n, F, c, H, W] variance over each group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F] mean stddev over channels and pixels
        y = y.reshape(-1, F, 1, 1).repeat(group, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch-std, conv, fc, out; conditional D projects the output on the mapped label."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        if architecture not in ARCHITECTURES:
            raise UserError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels)
            if mbstd_num_channels > 0
            else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None, force_fp32: bool = False
    ) -> torch.Tensor:
        """Logits [N, 1] from features [N, C, 4, 4], always in fp32: a block that never uses fp16, so
        `force_fp32` (NVIDIA's keyword, taken like every block's) leaves it unchanged."""
        dtype, memory_format = _block_format(False, False, x.device, force_fp32)  # no fp16, no channels_last
        x = x.to(dtype=dtype, memory_format=memory_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=dtype, memory_format=memory_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """StyleGAN2-ADA discriminator: blocks from img_resolution down to 8x8, then the 4x4 epilogue."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict[str, Any] | None = None,
        mapping_kwargs: dict[str, Any] | None = None,
        epilogue_kwargs: dict[str, Any] | None = None,
    ):
        _check_resolution(img_resolution)
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in [*self.block_resolutions, 4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                resolution=res,
                first_layer_idx=layer_idx,
                use_fp16=res >= fp16_resolution,
                **(block_kwargs or {}),
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **(mapping_kwargs or {})
            )
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}), **common
        )

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None, *, force_fp32: bool = False, update_emas: bool = False
    ) -> torch.Tensor:
        """Logits [N, 1] for images [N, img_channels, res, res] (and labels [N, c_dim]).

        `update_emas` is accepted for stylegan3's API and does nothing: D keeps no averages.
        """
        del update_emas
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap, force_fp32=force_fp32)


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Generator, CheckpointMeta]:
    """A generator rebuilt from its checkpoint alone (config = Generator kwargs), in eval mode."""
    tensors, meta = load_checkpoint(path, kind="generator")
    G = build_from_config(Generator, meta.config, meta.path, "generator")
    load_into(G, tensors, meta.path)
    return G.to(device).eval(), meta
