"""VisCoIN's training objective (METHOD.md, paper Eq. 2-5), term by term.

    L = α·L_of + L_rec + L_reg
    L_of  = CE(g(x), f(x))                         soft cross-entropy against the frozen f's probabilities
    L_rec = ‖x − x̃‖²₂ + ‖x − x̃‖₁ + β·LPIPS(x, x̃) + γ_rc·CE(f(x̃), f(x))
    L_reg = δ·‖Φ(x)‖₁ + L_orth + ‖Ω(Φ(x), γ(x)) − w̄‖²₂

The norms are means over elements (pixels, concept-map entries, W+ coordinates) (choice: the paper
gives no normalisation; means keep the weights of the table comparable across K, resolution and num_ws).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.nets.concepts import orthogonality_loss


@dataclass(frozen=True)
class LossWeights:
    alpha: float = 0.5  # output fidelity
    beta: float = 3.0  # LPIPS (0 when LPIPS is off)
    gamma_rc: float = 0.1  # reconstruction-classification
    delta: float = 0.2  # sparsity


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """−Σ_c softmax(teacher)_c · log softmax(logits)_c, averaged over the batch."""
    return -(F.softmax(teacher_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def viscoin_loss(
    *,
    images: torch.Tensor,
    recon: torch.Tensor,
    f_logits: torch.Tensor,
    f_logits_recon: torch.Tensor,
    g_logits: torch.Tensor,
    concept_maps: torch.Tensor,
    ws: torch.Tensor,
    w_avg: torch.Tensor,
    concept_conv: nn.Conv2d,
    lpips: nn.Module | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and every term (unweighted) for logging.

    `f_logits` are f's on the inputs (the teacher, no gradient needed); `f_logits_recon` are f's on x̃ and
    must be computed with gradient, so that γ_rc·CE(f(x̃), f(x)) trains Ψ and Ω through the frozen f and G.
    """
    teacher = f_logits.detach()
    terms = {
        "fidelity": soft_cross_entropy(g_logits, teacher),
        "rec_l2": (images - recon).square().mean(),
        "rec_l1": (images - recon).abs().mean(),
        "rec_lpips": lpips(images, recon).mean() if lpips is not None else recon.new_zeros(()),
        "rec_class": soft_cross_entropy(f_logits_recon, teacher),
        "sparsity": concept_maps.abs().mean(),
        "orthogonality": orthogonality_loss(concept_conv),
        "w_reg": (ws - w_avg).square().mean(),
    }
    total = (
        weights.alpha * terms["fidelity"]
        + terms["rec_l2"]
        + terms["rec_l1"]
        + weights.beta * terms["rec_lpips"]
        + weights.gamma_rc * terms["rec_class"]
        + weights.delta * terms["sparsity"]
        + terms["orthogonality"]
        + terms["w_reg"]
    )
    return total, terms
