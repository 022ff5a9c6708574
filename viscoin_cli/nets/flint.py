"""FLINT (Parekh et al., NeurIPS 2021) as the VisCoIN paper adapts it as a baseline (App. B.3.1;
docs/method.md, "Baselines: FLINT"): frozen f, an attribute extractor Φ with Ψ's structure, a dropout +
linear head, and FLINT's upsampling decoder rendering the image from the pooled attributes alone.

    taps = f.forward_taps(x)                  # the same taps as VisCoIN: layer2, layer3, layer4_penultimate
    concept_maps = Φ(taps)                    # [N, K, 3, 3] >= 0 (ReLU, as FLINT's attributes)
    pooled = mean over each 3x3 map           # φ̄ [N, K]: FLINT's attribute vector
    logits = W·dropout(φ̄) + b                 # FLINT's `explainer`
    x̃ = d(φ̄)                                  # FLINT's `decoder_v2`, sized for the resolution

Only Φ, the head and the decoder are saved in a `flint` checkpoint; f is loaded from the file it was
trained against, whose sha256 the checkpoint records and `load_flint` verifies.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta
from viscoin_cli.nets.classifier import Classifier
from viscoin_cli.nets.concept_model import ConceptModel, ConceptOutput, check_config_keys, freeze, load_on_classifier
from viscoin_cli.nets.concepts import ConceptMapExtractor

CONFIG_KEYS = ("num_concepts", "hidden", "resolution")  # what a flint checkpoint's config holds
HEAD_DROPOUT = 0.01  # FLINT's `explainer`: nn.Dropout(0.01) before its linear layer
DECODER_BASE_CHANNELS = 128  # decoder_v2: fc1 -> 128 x 7 x 7
DECODER_WIDTHS = (128, 128, 64)  # decoder_v2: conv2, conv3, conv4 (each + BN + ReLU), then conv5 -> 3
DECODER_MAX_UPSAMPLINGS = 5  # decoder_v2: 7 -> 224 px, five x2 upsamplings
DECODER_MIN_BASE = 4  # smallest spatial base the fc layer writes (small images use fewer upsamplings)
RESOLUTIONS = (16, 8192)  # the decoder's supported sizes (powers of two)


# Φ: VisCoIN's Ψ without its support branch (same taps, projections, trunk and 1x1 concept conv): three
# taps of f -> non-negative attribute maps [N, K, 3, 3].
AttributeExtractor = ConceptMapExtractor


class FlintHead(nn.Module):
    """FLINT's `explainer`: logits = W·dropout(φ̄) + b, on φ̄ = the mean of each attribute map (FLINT only
    ever average-pools on the way to its attributes). W [C, K] holds the relevance weights."""

    def __init__(self, num_concepts: int, num_classes: int):
        super().__init__()
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.linear = nn.Linear(num_concepts, num_classes)

    @staticmethod
    def pool(concept_maps: torch.Tensor) -> torch.Tensor:
        return concept_maps.mean(dim=(2, 3))  # [N, K]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))


def decoder_upsamplings(resolution: int) -> int:
    """How many x2 upsamplings take the fc's base map to `resolution`: FLINT's five (7 -> 224 px; 8 -> 256 px),
    fewer for small images so that the base stays at least 4x4."""
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise UserError(f"FLINT decoder resolution {resolution!r} is not a whole number")
    low, high = RESOLUTIONS
    if not low <= resolution <= high or resolution & (resolution - 1):
        raise UserError(f"FLINT decoder resolution {resolution}: expected a power of two in {low}..{high}")
    return min(DECODER_MAX_UPSAMPLINGS, resolution.bit_length() - DECODER_MIN_BASE.bit_length())  # log2(R / 4)


class FlintDecoder(nn.Module):
    """d: FLINT's CUB decoder (`networks.decoder_v2`) for any power-of-two resolution >= 16.

    fc(K -> 128·b·b), then n nearest x2 upsamplings; the first has no conv after it (decoder_v2's conv1 is
    commented out), each middle one is followed by conv3x3 + BN + ReLU (widths 128, 128, 64: the last
    n - 2 of them), the last by conv3x3 -> channels with no activation. At 256 px: b = 8, n = 5, as FLINT's
    b = 7 at 224 px. The output is not squashed (decoder_v2 has no final activation); MSE pulls it to [-1, 1].
    """

    def __init__(self, num_concepts: int, resolution: int, channels: int = 3):
        super().__init__()
        self.upsamplings = decoder_upsamplings(resolution)
        self.base = resolution >> self.upsamplings
        self.fc = nn.Linear(num_concepts, DECODER_BASE_CHANNELS * self.base**2)
        widths = (DECODER_BASE_CHANNELS, *DECODER_WIDTHS[len(DECODER_WIDTHS) - (self.upsamplings - 2) :])
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in itertools.pairwise(widths)
        )
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.fc(pooled).view(pooled.shape[0], DECODER_BASE_CHANNELS, self.base, self.base)
        x = F.interpolate(x, scale_factor=2)  # decoder_v2's bare first upsampling
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2))
        return self.to_image(F.interpolate(x, scale_factor=2))  # [N, channels, R, R]


class FLINT(ConceptModel):
    method = "flint"

    def __init__(self, classifier: Classifier, config: dict[str, Any]):
        check_config_keys(config, CONFIG_KEYS, "FLINT")
        super().__init__()
        self.config = dict(config)
        self.f = freeze(classifier)
        num_concepts = config["num_concepts"]
        self.phi = AttributeExtractor(
            classifier.tap_channels(), classifier.tap_strides(), num_concepts, config["hidden"]
        )
        self.head = FlintHead(num_concepts, classifier.num_classes)
        self.decoder = FlintDecoder(num_concepts, config["resolution"])

    def trained_parts(self) -> nn.ModuleDict:
        """What a flint checkpoint stores: Φ, the head and the decoder (f lives in its own file)."""
        return nn.ModuleDict({"phi": self.phi, "head": self.head, "decoder": self.decoder})

    def head_weight(self) -> torch.Tensor:
        return self.head.linear.weight

    def encode(self, images: torch.Tensor) -> ConceptOutput:
        """Attribute maps, pooled attributes and prediction for [-1, 1] images (no rendering)."""
        taps = self.f.forward_taps(images)
        concept_maps = self.phi(taps)
        pooled = self.head.pool(concept_maps)
        support = concept_maps.new_zeros(concept_maps.shape[0], 0)  # FLINT decodes from the attributes alone
        return ConceptOutput(concept_maps, pooled, self.head(pooled), support, taps["logits"])

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """x̃ = d(pool(Φ)) from (possibly edited) attribute maps; `support` must be FLINT's empty one."""
        if support.shape[-1]:
            raise ValueError(f"FLINT renders from the attributes alone, got a support of width {support.shape[-1]}")
        return self.decoder(self.head.pool(concept_maps))


def load_flint(
    path: str | os.PathLike, device: str | torch.device = "cpu", classifier: str | os.PathLike | None = None
) -> tuple[FLINT, CheckpointMeta]:
    """A trained FLINT with f from the recorded path (or the given one), its hash verified."""
    return load_on_classifier(FLINT, path, device, classifier)
