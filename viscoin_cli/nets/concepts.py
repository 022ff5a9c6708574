"""VisCoIN's trainable parts (paper §3.2-3.3, App. B.1; docs/method.md, "Overview"): Ψ (concept extractor),
Θ (interpretable head) and Ω (concept translator into the generator's W+ space).

    taps = f.forward_taps(x)                          # layer2, layer3, layer4_penultimate
    concept_maps, support = Ψ(taps)                   # Φ: [N, K, 3, 3] >= 0,  γ: [N, K*9]
    logits = Θ(concept_maps)                          # max-pool to φ̄ [N, K], then linear
    ws = Ω(concept_maps, support)                     # [N, num_ws, w_dim], centred on G's w_avg
    x̃ = G.synthesis(ws)

Every size is derived from the classifier's taps and the generator's W+ shape; nothing is hard-coded
to ResNet50 or 256 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.errors import UserError

TAPS = ("layer2", "layer3", "layer4_penultimate")
CONCEPT_GRID = 3  # Φ is K maps of 3x3


def default_support_ws(num_ws: int) -> tuple[int, ...]:
    """W+ vectors fed by γ instead of Φ: the first 3 and the last 2 (paper App. B.1.2)."""
    return resolve_support_ws((0, 1, 2, -2, -1), num_ws)


def resolve_support_ws(indices: Sequence[int], num_ws: int) -> tuple[int, ...]:
    """W+ indices fed by γ, negative ones counted from the end (-1: the last), sorted and checked."""
    if num_ws < 6:
        raise UserError(f"a generator with {num_ws} W+ vectors is too small for VisCoIN (need >= 6, i.e. >= 16 px)")
    if not indices or any(not -num_ws <= i < num_ws for i in indices):
        raise UserError(f"support W+ indices {list(indices)}: expected some of 0..{num_ws - 1} (or -1..-{num_ws})")
    resolved = sorted({i % num_ws for i in indices})
    if len(resolved) == num_ws:
        raise UserError(f"support W+ indices {list(indices)}: leave at least one W+ vector to the concepts")
    return tuple(resolved)


class TapProjection(nn.Module):
    """One tap -> the common grid: a strided conv (+ReLU). Stride s = tap size / grid size; the kernel
    covers the stride (3x3 for s <= 2, s x s patches beyond) so no input pixel is skipped."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        kernel = 3 if stride <= 2 else stride
        padding = 1 if stride <= 2 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(features))


class ConceptMapExtractor(nn.Module):
    """Three taps of f -> non-negative concept maps [N, K, 3, 3]: each tap projected to the common grid,
    a 3x3 trunk conv, a 1x1 conv to K maps. Ψ without its support branch (also FLINT's Φ)."""

    def __init__(self, tap_channels: dict[str, int], tap_strides: dict[str, int], num_concepts: int, hidden: int):
        super().__init__()
        grid_stride = max(tap_strides[name] for name in TAPS)
        self.projections = nn.ModuleDict()
        for name in TAPS:
            ratio = grid_stride // tap_strides[name]
            if ratio * tap_strides[name] != grid_stride or ratio & (ratio - 1):
                raise UserError(f"classifier taps have incompatible strides {tap_strides}")
            self.projections[name] = TapProjection(tap_channels[name], hidden, ratio)
        self.trunk = nn.Conv2d(len(TAPS) * hidden, hidden, 3, padding=1)
        self.concept_conv = nn.Conv2d(hidden, num_concepts, 1)  # the layer L_orth acts on
        self.num_concepts = num_concepts

    def maps_and_trunk(self, taps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        projected = [self.projections[name](taps[name]) for name in TAPS]  # each [N, hidden, g, g]
        trunk = F.relu(self.trunk(torch.cat(projected, dim=1)))  # [N, hidden, g, g]
        concept_maps = F.adaptive_avg_pool2d(F.relu(self.concept_conv(trunk)), CONCEPT_GRID)  # [N, K, 3, 3]
        return concept_maps, trunk

    def forward(self, taps: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.maps_and_trunk(taps)[0]


class ConceptExtractor(ConceptMapExtractor):
    """Ψ: three taps of f -> concept maps Φ [N, K, 3, 3] (non-negative) and support vector γ [N, K*9]."""

    def __init__(self, tap_channels: dict[str, int], tap_strides: dict[str, int], num_concepts: int, hidden: int):
        super().__init__(tap_channels, tap_strides, num_concepts, hidden)
        support_size = num_concepts * CONCEPT_GRID**2
        self.support_fc1 = nn.Linear(hidden * CONCEPT_GRID**2, support_size)
        self.support_fc2 = nn.Linear(support_size, support_size)

    def forward(self, taps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        concept_maps, trunk = self.maps_and_trunk(taps)
        pooled_trunk = F.adaptive_avg_pool2d(trunk, CONCEPT_GRID).flatten(1)  # [N, hidden*9]
        support = self.support_fc2(F.relu(self.support_fc1(pooled_trunk)))  # [N, K*9]
        return concept_maps, support


class InterpretableHead(nn.Module):
    """Θ: φ̄_k = max over the 3x3 map of concept k; logits = W φ̄ + b (W: [C, K], the relevance weights)."""

    def __init__(self, num_concepts: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(num_concepts, num_classes)

    @staticmethod
    def pool(concept_maps: torch.Tensor) -> torch.Tensor:
        return concept_maps.amax(dim=(2, 3))  # [N, K]

    def forward(self, concept_maps: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(concept_maps))


class ConceptTranslator(nn.Module):
    """Ω: one affine map per W+ vector, w_i = A_i u_i + b_i + w̄, with u_i = flattened Φ, or γ for the
    vectors in `support_ws`. A starts small, so Ω starts near w̄ (the generator's average image)."""

    def __init__(self, num_concepts: int, num_ws: int, w_dim: int, w_avg: torch.Tensor, support_ws: Sequence[int]):
        super().__init__()
        in_features = num_concepts * CONCEPT_GRID**2
        self.support_ws = resolve_support_ws(support_ws, num_ws)
        self.weight = nn.Parameter(torch.randn(num_ws, w_dim, in_features) * (0.1 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(num_ws, w_dim))
        self.register_buffer("w_avg", w_avg.detach().clone().reshape(w_dim))
        mask = torch.zeros(num_ws, dtype=torch.bool)
        mask[list(self.support_ws)] = True
        self.register_buffer("uses_support", mask)

    def forward(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        flat = concept_maps.flatten(1)  # [N, K*9]
        inputs = torch.where(self.uses_support[None, :, None], support[:, None, :], flat[:, None, :])  # [N, ws, K*9]
        return torch.einsum("nik,iwk->niw", inputs, self.weight) + self.bias + self.w_avg  # [N, num_ws, w_dim]


def orthogonality_loss(concept_conv: nn.Conv2d) -> torch.Tensor:
    """‖ŴᵀŴ − I‖²_F for the 1x1 concept conv, W: [C_in, K] with unit-norm columns (0 when orthonormal)."""
    weight = concept_conv.weight.flatten(1).t()  # [C_in, K]
    normalised = F.normalize(weight, dim=0)
    gram = normalised.t() @ normalised  # [K, K]
    return (gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)).square().sum()
