"""FLINT's interpretation objective (Parekh et al., NeurIPS 2021, §3; official code `flint.py: train`), for the
post-hoc setting the VisCoIN paper uses (f frozen, so FLINT's prediction loss L_pred trains nothing and is left
out; docs/method.md, "Baselines: FLINT"):

    L_int = β·L_of + γ·L_if + δ·(L_conc + L_div) + η·L_1
    L_of   = CE(g(x), f(x))                        soft cross-entropy against f's probabilities (`loss_cce`)
    L_if   = mean (d(φ̄(x)) − x)²                   MSE over N·3·H·W (`criterion2`, nn.MSELoss), [-1, 1] images
    L_conc = mean_x E(|φ̄(x)|)                      conciseness: each sample uses few attributes
    L_div  = −E(mean_x |φ̄(x)|)                     diversity: the batch as a whole uses many
    L_1    = mean |φ̄(x)|                            over N·K (nn.L1Loss): keeps the entropies from being
                                                   satisfied by inflating the attributes
    E(v)   = −Σ_k softmax(v)_k · log softmax(v)_k  FLINT's entropy of a real vector

Every term is a batch mean, as in FLINT's code (the paper writes sums over the training set).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from viscoin_cli.training.losses import soft_cross_entropy


@dataclass(frozen=True)
class FlintWeights:
    """FLINT's loss weights: the paper's β, γ, δ, and η for L_1 (FLINT's code weighs L_1 on its own,
    `lmbd_spa`, which is the paper's δ·η).

    FLINT's code has no CUB-200 weights (its training loop has no `cub` branch), so the defaults are its
    CIFAR-10 ones, the colour natural-image ResNet setting, at their final values: `lmbd_expl = 0.6` (β),
    `lmbd_rec = 2.0` (γ), `lmbd_ent = 0.2` (δ), `lmbd_spa = 0.001 + 0.149` (η). FLINT switches them on
    in stages (γ from epoch 1, η partly from epoch 2 and fully from 3, β from 3, δ from 4): a schedule is
    the training loop's business, not the loss's.
    """

    beta: float = 0.6  # output fidelity L_of (`lmbd_expl`)
    gamma: float = 2.0  # input fidelity L_if (`lmbd_rec`)
    delta: float = 0.2  # conciseness + diversity entropies (`lmbd_ent`)
    eta: float = 0.15  # L1 of the attributes (`lmbd_spa`)


def entropy(vectors: torch.Tensor) -> torch.Tensor:
    """E(v) = −Σ softmax(v)·log softmax(v) for each row of [N, K] (log_softmax: no log(0) when one entry
    dominates; FLINT takes the log of the softmax)."""
    return -(F.softmax(vectors, dim=1) * F.log_softmax(vectors, dim=1)).sum(dim=1)


def flint_loss(
    *,
    logits: torch.Tensor,
    f_logits: torch.Tensor,
    images: torch.Tensor,
    recon: torch.Tensor,
    pooled: torch.Tensor,
    weights: FlintWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and every term (unweighted) for logging.

    `logits` are g's [N, C], `f_logits` f's on the same images (the teacher: detached here), `images` and
    `recon` [N, 3, H, W] in [-1, 1], `pooled` the attribute vector φ̄ [N, K] the head and the decoder read.
    """
    if recon.shape != images.shape:
        raise ValueError(f"FLINT's reconstruction is {tuple(recon.shape)}, the images {tuple(images.shape)}")
    magnitudes = pooled.abs()  # a no-op for FLINT's non-negative attributes; FLINT's code takes it
    terms = {
        "output_fidelity": soft_cross_entropy(logits, f_logits.detach()),
        "input_fidelity": (recon - images).square().mean(),
        "conciseness": entropy(magnitudes).mean(),
        "diversity": -entropy(magnitudes.mean(dim=0, keepdim=True)).squeeze(0),
        "sparsity": magnitudes.mean(),
    }
    total = (
        weights.beta * terms["output_fidelity"]
        + weights.gamma * terms["input_fidelity"]
        + weights.delta * (terms["conciseness"] + terms["diversity"])
        + weights.eta * terms["sparsity"]
    )
    return total, terms
