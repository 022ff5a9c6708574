"""Concept visualisation grids (paper §3.5, App. E): a λ sweep per sample, and optional difference views.

One row per sample; columns: the input, x̃_λ for each λ (λ = 1 is the plain reconstruction), then with
`diff` three views per λ ≠ 1 that show what scaling the concept changes:
    added    max(x̃_λ − x̃_1, 0)   (what appears)
    removed  max(x̃_1 − x̃_λ, 0)   (what fades: "its reverse")
    energy   ‖x̃_λ − x̃_1‖² summed over channels, per pixel, in gray
Each view is mapped into [-1, 1] for display, black = no change and white = the largest change of its
row, so the columns of one sample share a scale and a larger λ visibly changes more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lambda_name(lam: float) -> str:
    return f"lambda={lam:g}"


def column_names(lambdas: Sequence[float], diff: bool) -> list[str]:
    """Names of the grid's columns, in order (the JSON output lists them)."""
    names = ["input", *(lambda_name(lam) for lam in lambdas)]
    if diff:
        for lam in lambdas:
            if lam != 1:
                names += [f"added {lambda_name(lam)}", f"removed {lambda_name(lam)}", f"energy {lambda_name(lam)}"]
    return names


def difference_views(renders: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """[N, L, C, H, W] renders (one of them at λ = 1) -> [N, 3·(L−1), C, H, W] added / removed / energy views."""
    lambdas = list(lambdas)
    base = renders[:, lambdas.index(1)]
    others = [j for j, lam in enumerate(lambdas) if lam != 1]
    delta = renders[:, others] - base[:, None]  # [N, M, C, H, W] in [-2, 2]
    if not others:
        return delta
    tiny = torch.finfo(delta.dtype).tiny
    span = delta.abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(tiny)  # largest change of the row
    added = delta.clamp_min(0) / span * 2 - 1
    removed = (-delta).clamp_min(0) / span * 2 - 1
    energy = delta.pow(2).sum(dim=2, keepdim=True)
    energy = energy / energy.amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(tiny) * 2 - 1
    views = torch.stack([added, removed, energy.expand_as(added)], dim=2)  # [N, M, 3, C, H, W]
    return views.flatten(1, 2)


def sweep_tiles(inputs: torch.Tensor, renders: torch.Tensor, lambdas: Sequence[float], diff: bool) -> torch.Tensor:
    """The grid's images in row-major order, [N·columns, C, H, W]: input, renders, then difference views."""
    parts = [inputs[:, None].to(renders.dtype), renders]
    if diff:
        parts.append(difference_views(renders, lambdas))
    return torch.cat(parts, dim=1).flatten(0, 1)
