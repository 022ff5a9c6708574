"""FLAEM's part of concept-model training (`viscoin train --method flaem`): concept encoder, linear head and
3-deconvolution decoder against the frozen classifier f, with FLAEM's loss and its official settings
(Adam lr 1e-3, batch 128, ~100 epochs). docs/method.md, "Baselines: FLAEM", says where it departs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from viscoin_cli.choices import Method
from viscoin_cli.nets.concept_model import ConceptOutput
from viscoin_cli.nets.flaem import FLAEM
from viscoin_cli.runtime import Runtime
from viscoin_cli.training.concepts import BaselineTraining, ConceptTrainConfig, paper_concepts
from viscoin_cli.training.flaem_losses import FlaemWeights, flaem_loss

# K as VisCoIN's preset (the paper compares at the same K); iterations ≈ 100 epochs at batch 128.
_ITERATIONS = {"digits": 1000, "shapes": 1000, "celebahq": 20_000, "cub": 5000, "cars": 6500, "folder": 5000}


@dataclass(frozen=True)
class FlaemConfig(ConceptTrainConfig):
    """`viscoin train --method flaem`: K, FLAEM's loss weights (its defaults) and the budget."""

    method: Method = Method.flaem
    fidelity_weight: float = FlaemWeights.fidelity
    concept_weight: float = FlaemWeights.concept
    sparsity_weight: float = FlaemWeights.sparsity
    lr: float = 1e-3
    real_batch: int = 128

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        return {"num_concepts": paper_concepts(dataset), "iterations": _ITERATIONS[dataset]}

    def recipe(self, rt: Runtime) -> FlaemTraining:
        return FlaemTraining(self, rt)


class FlaemTraining(BaselineTraining):
    """FLAEM's model, data and step loss for the shared loop (real images only, no generator)."""

    terms = ("fidelity", "reconstruction", "sparsity")
    shown = ("fidelity", "reconstruction")

    name, concept_noun = "FLAEM", "concepts"

    def __init__(self, cfg: FlaemConfig, rt: Runtime):
        super().__init__(cfg, rt)
        config = {"num_concepts": cfg.num_concepts, "resolution": self.train_set.resolution}
        self.model = FLAEM(self.f, config).to(rt.device)
        self.weights = FlaemWeights(cfg.fidelity_weight, cfg.concept_weight, cfg.sparsity_weight)
        self.world_size = rt.world_size

    def objective(self, out: ConceptOutput, reals: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms = flaem_loss(
            images=reals,
            recon=out.recon.float(),
            concepts=out.pooled.float(),
            g_logits=out.logits.float(),
            f_logits=out.f_logits.float(),
            weights=self.weights,
        )
        if self.world_size > 1:
            # L_sp sums over the batch and DDP averages the processes' gradients: W times a process's share
            # of the sum makes that average the global batch's, as one process computes it
            extra = (self.world_size - 1) * terms["sparsity"]
            loss = loss + self.weights.concept * self.weights.sparsity * extra
            terms = {**terms, "sparsity": terms["sparsity"] + extra}
        return loss, terms
