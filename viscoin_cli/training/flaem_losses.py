"""FLAEM's training objective as its official code computes it (docs/method.md, "Baselines: FLAEM").

    L = w_fid·L_fid + w_con·(L_rec + w_sp·L_sp)
    L_fid = mean_{n,c} (f(x)_{n,c} − log softmax(g(x))_{n,c})²     f's logits detached (official `aux_loss`)
    L_rec = mean over N·3·H·W of (x̃ − x)²                           F.mse_loss (official `recons_loss`)
    L_sp  = Σ_{n,k} |h(x)_{n,k}|                                   summed over batch and concepts (`h_norm_l1`)

The official total also has CE(f(x), y), which trains its backbone to the labels; here f is the frozen
classifier being explained, so that term has no trainable parameter and is left out. g thus learns from f
(L_fid) and never from labels, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FlaemWeights:
    """Defaults of the official code (github anirbansarkar-cs/Ante-hoc_Explainability_Concepts, cifar10/):

    fidelity  1e-4  `0.0001 * aux_loss` in SENN/trainers.py `GradPenaltyTrainer.train_batch`, the trainer
                    main_cifar.py builds for the default `--theta_reg_type grad3`.
    concept   1e-4  `0.0001 * h_loss` in SENN/trainers_test.py's `GradPenaltyTrainer.train_batch`; trainers.py
                    computes h_loss but leaves it out of the sum (which would leave the decoder untrained).
    sparsity  1e-4  SENN/arglist.py `--h_sparsity`, applied in `ClassificationTrainer.concept_learning_loss`.
    """

    fidelity: float = 1e-4
    concept: float = 1e-4
    sparsity: float = 1e-4


def fidelity_loss(g_logits: torch.Tensor, f_logits: torch.Tensor) -> torch.Tensor:
    """Squared difference between f's raw logits (the teacher, detached) and g's log-probabilities,
    averaged over N·C: the official `((pred1.data - pred2)**2).mean()` with pred2 = log_softmax(g)."""
    return (f_logits.detach() - F.log_softmax(g_logits, dim=1)).square().mean()


def reconstruction_loss(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every pixel and channel."""
    if recon.shape != images.shape:
        raise ValueError(f"reconstruction {list(recon.shape)} and images {list(images.shape)} differ in shape")
    return (recon - images).square().mean()


def sparsity_loss(concepts: torch.Tensor) -> torch.Tensor:
    """L1 norm of the whole batch of concepts (a sum, so its weight acts per sample and per batch size)."""
    return concepts.abs().sum()


def flaem_loss(
    *,
    images: torch.Tensor,
    recon: torch.Tensor,
    concepts: torch.Tensor,
    g_logits: torch.Tensor,
    f_logits: torch.Tensor,
    weights: FlaemWeights = FlaemWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and every term (unweighted) for logging.

    `concepts` are h(x) [N, K] (ConceptOutput.pooled), `recon` the decoder's x̃ and `g_logits` the head's
    logits before the softmax; `f_logits` are f's on the same images (no gradient needed).
    """
    terms = {
        "fidelity": fidelity_loss(g_logits, f_logits),
        "reconstruction": reconstruction_loss(recon, images),
        "sparsity": sparsity_loss(concepts),
    }
    concept_loss = terms["reconstruction"] + weights.sparsity * terms["sparsity"]
    total = weights.fidelity * terms["fidelity"] + weights.concept * concept_loss
    return total, terms
