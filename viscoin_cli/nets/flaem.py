"""FLAEM (Sarkar et al., CVPR 2022) as VisCoIN's paper sets it up for comparison: FLAEM's concept encoder,
linear head and 3-deconvolution decoder trained around the same frozen classifier f (docs/method.md,
"Baselines: FLAEM"; losses in `training/flaem_losses.py`).

    features = f.forward_taps(x)["pooled"]      # f's last conv block, globally averaged [N, D]
    concepts = ReLU(Linear(features))           # h(x) >= 0 [N, K]; concept maps are [N, K, 1, 1]
    logits   = W·concepts + b                   # FLAEM's aggregator: W [C, K] is the relevance
    x̃        = decoder(concepts)                # per-concept seed map, 3 transposed convs, tanh: [N, 3, R, R]

Layers follow the official code (github anirbansarkar-cs/Ante-hoc_Explainability_Concepts, cifar10/SENN/
conceptizers.py `image_resnet_conceptizer`, aggregators.py `additive_scalar_aggregator`). A `flaem`
checkpoint stores the encoder, head and decoder; f lives in its own file, whose sha256 it records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta
from viscoin_cli.nets.classifier import Classifier
from viscoin_cli.nets.concept_model import ConceptModel, ConceptOutput, check_config_keys, freeze, load_on_classifier

CONFIG_KEYS = ("num_concepts", "resolution", "decoder_channels")  # what a flaem checkpoint's config holds
DECODER_CHANNELS = (16, 8)  # the official decoder's widths after its first and second transposed conv
MAX_RESOLUTION = 8192
MAX_CHANNELS = 1 << 14


def seed_size(resolution: int) -> int:
    """Side of each concept's seed map, R/4 − 3: the official `dout` evaluated at din = R² (5 at 32 px),
    the size from which the three transposed convs below end at exactly R (s → 2s+3 → 2s+7 → 4s+12)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise UserError(f"FLAEM resolution {resolution!r} is not a whole number")
    if resolution % 4 or not 16 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"FLAEM's decoder needs a resolution that is a multiple of 4 in 16..{MAX_RESOLUTION}")
    return resolution // 4 - 3


def _check_channels(channels: Sequence[int]) -> tuple[int, int]:
    if (
        not isinstance(channels, (list, tuple))
        or len(channels) != 2
        or any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CHANNELS for c in channels)
    ):
        raise UserError(f"FLAEM decoder_channels {channels!r}: expected two widths in 1..{MAX_CHANNELS}")
    return channels[0], channels[1]


class ConceptEncoder(nn.Module):
    """h: f's pooled last conv features -> K concepts >= 0 (official `conc_linear1` then ReLU)."""

    def __init__(self, feature_dim: int, num_concepts: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_concepts)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(features))


class ConceptDecoder(nn.Module):
    """K concepts -> an image in [-1, 1], as the official `decode`: one Linear(1 → s²) shared by all
    concepts lifts each concept to an s×s seed map (K channels), then transposed convs K→c1 (5×5,
    stride 2) + ReLU, c1→c2 (5×5) + ReLU, c2→3 (2×2, stride 2, padding 1) + tanh."""

    def __init__(self, num_concepts: int, resolution: int, channels: Sequence[int] = DECODER_CHANNELS):
        super().__init__()
        first, second = _check_channels(channels)
        self.seed_size = seed_size(resolution)
        self.seed = nn.Linear(1, self.seed_size**2)  # official `unlinear` (concept_dim = 1)
        self.deconv1 = nn.ConvTranspose2d(num_concepts, first, 5, stride=2)
        self.deconv2 = nn.ConvTranspose2d(first, second, 5)
        self.deconv3 = nn.ConvTranspose2d(second, 3, 2, stride=2, padding=1)

    def forward(self, concepts: torch.Tensor) -> torch.Tensor:
        n, k = concepts.shape
        seeds = self.seed(concepts.unsqueeze(-1)).view(n, k, self.seed_size, self.seed_size)
        hidden = F.relu(self.deconv2(F.relu(self.deconv1(seeds))))
        return torch.tanh(self.deconv3(hidden))  # [N, 3, R, R]


class FLAEM(ConceptModel):
    method = "flaem"

    def __init__(self, classifier: Classifier, config: dict[str, Any]):
        check_config_keys(config, CONFIG_KEYS, "FLAEM")
        super().__init__()
        self.config = {"decoder_channels": list(DECODER_CHANNELS), **config}
        self.config["decoder_channels"] = list(_check_channels(self.config["decoder_channels"]))
        num_concepts = self.config["num_concepts"]
        self.f = freeze(classifier)
        self.encoder = ConceptEncoder(classifier.fc.in_features, num_concepts)
        self.head = nn.Linear(num_concepts, classifier.num_classes)  # official aggregator's `linear`
        self.decoder = ConceptDecoder(num_concepts, self.config["resolution"], self.config["decoder_channels"])

    def trained_parts(self) -> nn.ModuleDict:
        """What a flaem checkpoint stores: encoder, head and decoder (f lives in its own file)."""
        return nn.ModuleDict({"encoder": self.encoder, "head": self.head, "decoder": self.decoder})

    def head_weight(self) -> torch.Tensor:
        return self.head.weight

    @staticmethod
    def pool(concept_maps: torch.Tensor) -> torch.Tensor:
        """[N, K, 1, 1] -> [N, K]: FLAEM's concepts are numbers, so a map is its value."""
        if concept_maps.dim() != 4 or concept_maps.shape[2:] != (1, 1):
            raise ValueError(f"FLAEM concept maps are [N, K, 1, 1], got {list(concept_maps.shape)}")
        return concept_maps.flatten(1)

    def encode(self, images: torch.Tensor) -> ConceptOutput:
        """Concepts and prediction for [-1, 1] images (no rendering)."""
        taps = self.f.forward_taps(images)
        concepts = self.encoder(taps["pooled"])  # [N, K]
        no_support = concepts.new_zeros(len(concepts), 0)
        return ConceptOutput(concepts[:, :, None, None], concepts, self.head(concepts), no_support, taps["logits"])

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """x̃ [N, 3, R, R] from (possibly edited) concepts; `support` must be the empty [N, 0] from encode."""
        if support.shape[-1] != 0:
            raise ValueError(f"FLAEM's decoder reads only the concepts; got a support of {support.shape[-1]}")
        return self.decoder(self.pool(concept_maps))


def load_flaem(
    path: str | os.PathLike, device: str | torch.device = "cpu", classifier: str | os.PathLike | None = None
) -> tuple[FLAEM, CheckpointMeta]:
    """A trained FLAEM, with f from the recorded path (or the given one), its hash verified."""
    return load_on_classifier(FLAEM, path, device, classifier)
