"""Interpretable directions in a generator's W space (Voynov & Babenko 2020): the direction matrix A and the
reconstructor R that learn together against a frozen G (`viscoin directions gan`, training/directions.py).

    d_k   = row k of A                     unit-norm, or orthonormal rows (QR of the free matrix)
    w'    = w + ε·σ_W·d_k                  added to every W+ vector of w; ε in units of σ_W (`scale`)
    R(G(w), G(w')) -> (logits over k, ε̂)  R must tell which direction moved the image and how far

A `directions` checkpoint of method "gan" holds both modules (`directions.*`, `reconstructor.*`); `load_gan_
directions` rebuilds them and checks that the generator it names is the one they were trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta, build_from_config, load_checkpoint, load_into

MAX_DIRECTIONS = 1024  # far more than any published run (the paper's largest K is a few hundred)
MAX_RECONSTRUCTOR_INPUT = 64  # larger images are shrunk to this before R (the paper's optional downsampling)


class LatentDirections(nn.Module):
    """K directions in W as the rows of a [K, w_dim] matrix, kept unit-norm or orthonormal by construction.

    The free parameter `raw` is unconstrained; `matrix()` normalises its rows (unit-norm, the paper's default)
    or orthonormalises them with a QR decomposition (`orthonormal`, the paper's other option), so plain Adam
    steps on `raw` never leave the constraint. `scale` (σ_W, a buffer) is W's typical spread per coordinate:
    a shift ε moves w by ε·σ_W, so ε has the same meaning for any generator.
    """

    def __init__(self, num_directions: int, w_dim: int, orthonormal: bool = False, scale: float = 1.0):
        super().__init__()
        if not 1 <= num_directions <= MAX_DIRECTIONS:
            raise ValueError(f"num_directions = {num_directions} is outside 1..{MAX_DIRECTIONS}")
        if orthonormal and num_directions > w_dim:
            raise ValueError(f"{num_directions} orthonormal directions do not fit in {w_dim} dimensions")
        self.num_directions, self.w_dim, self.orthonormal = num_directions, w_dim, orthonormal
        self.raw = nn.Parameter(torch.randn(num_directions, w_dim))
        self.register_buffer("scale", torch.tensor(float(scale)))

    @property
    def config(self) -> dict[str, Any]:
        return {"num_directions": self.num_directions, "w_dim": self.w_dim, "orthonormal": self.orthonormal}

    def matrix(self) -> torch.Tensor:
        """The directions [K, w_dim], each of unit length (and mutually orthogonal when `orthonormal`)."""
        if not self.orthonormal:
            return F.normalize(self.raw, dim=1)
        q, r = torch.linalg.qr(self.raw.T)  # raw^T = QR, Q [w_dim, K] with orthonormal columns
        signs = torch.sign(torch.diagonal(r))  # fix QR's sign freedom so Q follows raw continuously
        return (q * torch.where(signs == 0, torch.ones_like(signs), signs)).T

    def shift(self, ws: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """ws [N, num_ws, w_dim] moved by eps[n]·σ_W along direction k[n], the same shift on every W+ vector."""
        steps = (eps.to(ws.dtype) * self.scale)[:, None, None] * self.matrix()[k][:, None, :]
        return ws + steps


class Reconstructor(nn.Module):
    """R: the paper's LeNet reconstructor (its choice for 32 px MNIST) on the 6-channel pair [x, x'].

    Three 5×5 convolutions (3w, 8w, 60w channels, BatchNorm, ReLU, 2×2 max-pools after the first two), a
    spatial mean, then two heads of Linear(60w, 42w)-BN-ReLU-Linear: the direction's logits and ε̂. Width
    w = 2 is classic LeNet (6, 16, 120, 84). The convolutions are padded so that any size from 4 px works;
    images above 64 px are shrunk to 64 px first (the paper's reconstructor had the same option).
    """

    def __init__(self, num_directions: int, channels: int = 3, width: int = 2, resolution: int = 32):
        super().__init__()
        if width < 1 or channels < 1 or resolution < 4:
            raise ValueError(f"reconstructor width {width}, channels {channels}, resolution {resolution}")
        self.num_directions, self.channels, self.width, self.resolution = num_directions, channels, width, resolution
        self.features = nn.Sequential(
            *_conv(2 * channels, 3 * width),
            nn.MaxPool2d(2),
            *_conv(3 * width, 8 * width),
            nn.MaxPool2d(2),
            *_conv(8 * width, 60 * width),
        )
        self.direction_head = _head(60 * width, 42 * width, num_directions)
        self.shift_head = _head(60 * width, 42 * width, 1)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "num_directions": self.num_directions,
            "channels": self.channels,
            "width": self.width,
            "resolution": self.resolution,
        }

    def forward(self, images: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, K], ε̂ [N]) for image pairs in [-1, 1]."""
        pair = torch.cat([images, shifted], dim=1)
        if pair.shape[-1] > MAX_RECONSTRUCTOR_INPUT:
            pair = F.interpolate(pair, size=MAX_RECONSTRUCTOR_INPUT, mode="area")
        features = self.features(pair).mean(dim=(2, 3))
        return self.direction_head(features), self.shift_head(features).squeeze(1)


def _conv(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 5, padding=2), nn.BatchNorm2d(outputs), nn.ReLU()]


def _head(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class GanDirections(nn.Module):
    """What a `directions` checkpoint of method "gan" stores: A (`directions`) and R (`reconstructor`)."""

    def __init__(self, directions: LatentDirections, reconstructor: Reconstructor):
        super().__init__()
        self.directions, self.reconstructor = directions, reconstructor

    @classmethod
    def build(cls, directions: dict[str, Any], reconstructor: dict[str, Any]) -> GanDirections:
        return cls(LatentDirections(**directions), Reconstructor(**reconstructor))

    @property
    def config(self) -> dict[str, Any]:
        return {"directions": self.directions.config, "reconstructor": self.reconstructor.config}


@dataclass
class LoadedDirections:
    """A trained direction matrix, its reconstructor, the generator they belong to, and the checkpoint's meta."""

    model: GanDirections
    generator: nn.Module
    meta: CheckpointMeta

    @property
    def shift_scale(self) -> float:
        """The largest |ε| of training (the reconstructor saw shifts in [-S, S])."""
        return float(self.meta.config.get("shift_scale", 1.0))


def load_gan_directions(
    path: str | os.PathLike, device: str | torch.device = "cpu", generator: str | os.PathLike | None = None
) -> LoadedDirections:
    """A `directions` checkpoint of method "gan", with its generator (recorded path or `generator`), hash checked."""
    from viscoin_cli.nets.concept_model import freeze, verified_parent
    from viscoin_cli.nets.stylegan2 import load_generator

    tensors, meta = load_checkpoint(path, kind="directions")
    method = meta.config.get("method")
    if method != "gan":
        raise UserError(f"{meta.path}: holds directions of method {method!r}, expected gan (viscoin directions gan)")
    parts = {key: meta.config.get(key) for key in ("directions", "reconstructor")}
    model = build_from_config(GanDirections.build, parts, meta.path, "directions")
    load_into(model, tensors, meta.path)
    G, _ = load_generator(verified_parent(meta, "generator", generator), device)
    return LoadedDirections(model.to(device).eval(), freeze(G), meta)
