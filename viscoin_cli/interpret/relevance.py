"""Concept relevance (paper §3.5).

Local relevance of concept k for sample x, with ĉ = argmax g(x) and W the head's [C, K] weights:
    r_{k,x} = φ̄_k(x)·W_{ĉ,k} / max_l |φ̄_l(x)·W_{ĉ,l}|   ∈ [−1, 1]
Global relevance of k for class c: the mean of r_{k,x} over the samples x predicted as c (choice: local
relevance is defined relative to the predicted class, so averaging it over samples predicted otherwise
would mix in other classes' evidence).
"""

from __future__ import annotations

import torch


def contributions(pooled: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """φ̄_k(x)·W_{c,k} for each sample's class c: [N, K]."""
    return pooled * weight[classes]


def local_relevance(pooled: torch.Tensor, weight: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """r_{k,x} for pooled activations [N, K], head weights [C, K] and predicted classes [N] -> [N, K]."""
    contrib = contributions(pooled, weight, predicted)
    scale = contrib.abs().amax(dim=1, keepdim=True)
    return contrib / scale.clamp_min(torch.finfo(contrib.dtype).tiny)


def global_relevance(local: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """r_{k,c}: mean local relevance over the samples predicted as c -> [C, K] (0 for unpredicted classes)."""
    sums = torch.zeros(num_classes, local.shape[1], dtype=local.dtype, device=local.device)
    sums.index_add_(0, predicted, local)
    counts = torch.bincount(predicted, minlength=num_classes).to(local.dtype)
    return sums / counts.clamp_min(1)[:, None]
