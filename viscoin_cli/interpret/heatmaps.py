"""Where a concept sits in an image: two heatmaps per (image, concept).

- map: the concept's own map Φ_k (3×3 for VisCoIN and FLINT), bilinearly upsampled to the image and
  divided by its largest value, so it says which part of the image the concept reads, at the resolution
  the concept has.
- gradient: |∂φ̄_k/∂x| summed over colour channels and divided by its largest value (a saliency map of the
  pooled activation), which says which pixels the activation is sensitive to, at full resolution.
A method whose concepts are plain numbers (FLAEM's 1×1 maps) has a flat map heatmap; its gradient map
still localises. `heat_overlay` draws either over the image in one colour scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Heatmaps:
    maps: torch.Tensor  # [N, M, H, W] in [0, 1]: the upsampled concept maps
    gradients: torch.Tensor  # [N, M, H, W] in [0, 1]: |∂φ̄/∂x| summed over channels


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Each [H, W] map of [..., H, W] divided by its largest value (an all-zero map stays zero)."""
    peak = heat.flatten(-2).amax(-1)[..., None, None]
    return heat / peak.clamp_min(torch.finfo(heat.dtype).tiny)


def concept_heatmaps(model, images: torch.Tensor, concepts: torch.Tensor) -> Heatmaps:
    """Both heatmaps of concepts[i, j] [N, M] in image i, for [N, C, H, W] images in [-1, 1].

    One backward pass per column j covers the whole batch (images do not interact in eval mode), so the
    cost is M backward passes, not N·M.
    """
    device = next(model.parameters()).device
    pixels = images.detach().to(device, torch.float32).clone().requires_grad_(True)  # never the caller's tensor
    with torch.enable_grad():
        out = model.encode(pixels)
        chosen = concepts.to(device)
        rows = torch.arange(len(pixels), device=device)[:, None]
        maps = out.concept_maps.float()[rows, chosen]  # [N, M, h, w]
        gradients = []
        for column in range(chosen.shape[1]):
            (grad,) = torch.autograd.grad(
                out.pooled[rows[:, 0], chosen[:, column]].float().sum(), pixels, retain_graph=True
            )
            gradients.append(grad.abs().sum(1))
    size = tuple(images.shape[-2:])
    upsampled = F.interpolate(maps.detach().clamp_min(0), size=size, mode="bilinear", align_corners=False)
    return Heatmaps(normalise(upsampled).cpu(), normalise(torch.stack(gradients, 1)).cpu())


# A perceptually ordered colour scale (dark purple -> orange -> pale yellow), sampled at five stops.
HEAT_STOPS = torch.tensor(
    [[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]]
)


def colour_scale(heat: torch.Tensor) -> torch.Tensor:
    """[..., H, W] values in [0, 1] -> [..., 3, H, W] RGB in [0, 1], piecewise linear between HEAT_STOPS."""
    position = heat.clamp(0, 1) * (len(HEAT_STOPS) - 1)
    lower = position.floor().long().clamp(max=len(HEAT_STOPS) - 2)
    t = (position - lower)[..., None]
    rgb = HEAT_STOPS[lower] * (1 - t) + HEAT_STOPS[lower + 1] * t  # [..., H, W, 3]
    return rgb.movedim(-1, -3)


def heat_overlay(images: torch.Tensor, heat: torch.Tensor, opacity: float = 0.6) -> torch.Tensor:
    """[N, C, H, W] images in [-1, 1] (C = 1 or 3) under [N, H, W] heat in [0, 1] -> [N, 3, H, W] in [-1, 1]:
    the image in gray, the heat in colour on top."""
    gray = images.float().mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return (1 - opacity) * gray + opacity * (colour_scale(heat) * 2 - 1)
