"""FLINT's part of concept-model training (`viscoin train --method flint`): attribute maps with Ψ's structure,
dropout + linear head and FLINT's upsampling decoder against the frozen classifier f, with FLINT's loss.
Its CUB-200 settings: Adam lr 2e-4, batch 16, 51 epochs. docs/method.md, "Baselines: FLINT", says where
it departs from the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from viscoin_cli.choices import Method
from viscoin_cli.nets.concept_model import ConceptOutput
from viscoin_cli.nets.flint import FLINT
from viscoin_cli.runtime import Runtime
from viscoin_cli.training.concepts import BaselineTraining, ConceptTrainConfig, paper_concepts
from viscoin_cli.training.flint_losses import FlintWeights, flint_loss

# K and Ψ's width as VisCoIN's presets (the paper keeps Φ's structure and K); iterations ≈ 51 epochs at batch 16.
_ITERATIONS = {"digits": 2000, "shapes": 2000, "celebahq": 50_000, "cub": 20_000, "cars": 26_000, "folder": 20_000}


@dataclass(frozen=True)
class FlintConfig(ConceptTrainConfig):
    """`viscoin train --method flint`: K, Φ's width, FLINT's loss weights (its defaults) and the budget."""

    method: Method = Method.flint
    hidden: int = 64
    # FLINT's β, γ, δ, η under names that do not collide with VisCoIN's options of the same letters
    output_fidelity_weight: float = FlintWeights.beta
    input_fidelity_weight: float = FlintWeights.gamma
    entropy_weight: float = FlintWeights.delta
    sparsity_weight: float = FlintWeights.eta
    lr: float = 2e-4

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        from viscoin_cli.training.viscoin import PRESETS

        return {
            "num_concepts": paper_concepts(dataset),
            "hidden": PRESETS[dataset]["hidden"],
            "iterations": _ITERATIONS[dataset],
        }

    def recipe(self, rt: Runtime) -> FlintTraining:
        return FlintTraining(self, rt)


class FlintTraining(BaselineTraining):
    """FLINT's model, data and step loss for the shared loop (real images only, no generator)."""

    terms = ("output_fidelity", "input_fidelity", "conciseness", "diversity", "sparsity")
    shown = ("output_fidelity", "input_fidelity")

    name, concept_noun = "FLINT", "attributes"

    def __init__(self, cfg: FlintConfig, rt: Runtime):
        super().__init__(cfg, rt)
        config = {"num_concepts": cfg.num_concepts, "hidden": cfg.hidden, "resolution": self.train_set.resolution}
        self.model = FLINT(self.f, config).to(rt.device)
        self.weights = FlintWeights(
            cfg.output_fidelity_weight, cfg.input_fidelity_weight, cfg.entropy_weight, cfg.sparsity_weight
        )

    def objective(self, out: ConceptOutput, reals: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return flint_loss(
            logits=out.logits.float(),
            f_logits=out.f_logits.float(),
            images=reals,
            recon=out.recon.float(),
            pooled=out.pooled.float(),
            weights=self.weights,
        )
