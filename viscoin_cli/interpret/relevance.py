"""Concept relevance (paper §3.5).

Local relevance of concept k for sample x, with ĉ = argmax g(x) and W the head's [C, K] weights:
    r_{k,x} = φ̄_k(x)·W_{ĉ,k} / max_l |φ̄_l(x)·W_{ĉ,l}|   ∈ [−1, 1]
Global relevance of k for class c: the mean of r_{k,x} over the samples x predicted as c (choice: local
relevance is defined relative to the predicted class, so averaging it over samples predicted otherwise
would mix in other classes' evidence).
"""

from __future__ import annotations

import torch

from viscoin_cli.interpret.encode import Encoded


def contributions(pooled: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """φ̄_k(x)·W_{c,k} for each sample's class c: [N, K]."""
    return pooled * weight[classes]


def local_relevance(pooled: torch.Tensor, weight: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """r_{k,x} for pooled activations [N, K], head weights [C, K] and predicted classes [N] -> [N, K]."""
    return relative(contributions(pooled, weight, predicted))


def relative(contrib: torch.Tensor) -> torch.Tensor:
    """Contributions [N, K] to each sample's logit over the sample's largest absolute one, in [−1, 1] (0 for a
    sample with none): relevance from contributions, for concepts and for classifier directions alike."""
    scale = contrib.abs().amax(dim=1, keepdim=True)
    return contrib / scale.clamp_min(torch.finfo(contrib.dtype).tiny)


def global_relevance(local: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """r_{k,c}: mean local relevance over the samples predicted as c -> [C, K] (0 for unpredicted classes)."""
    sums = torch.zeros(num_classes, local.shape[1], dtype=local.dtype, device=local.device)
    sums.index_add_(0, predicted, local)
    counts = torch.bincount(predicted, minlength=num_classes).to(local.dtype)
    return sums / counts.clamp_min(1)[:, None]


def head_weight(model) -> torch.Tensor:
    """W, the interpretable head's [C, K] weights, detached, in fp32 on the CPU where the encodings are."""
    return model.head_weight().detach().float().cpu()


def relevance_tables(model, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """Local relevance [N, K] of each encoded sample and global relevance [C, K] over them, with `model`'s W.

    Every command that explains a model goes through here, so they all read the same W the same way.
    """
    weight = head_weight(model)
    local = local_relevance(encoded.pooled, weight, encoded.predicted)
    return local, global_relevance(local, encoded.predicted, weight.shape[0])


def top_concepts(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest scores of each row of [..., K] and their concept indices, best first.

    A stable sort, so tied concepts (often several at relevance 0) come out in index order, the same on
    every run and device.
    """
    values, indices = scores.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def class_mean(values: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of per-sample [N, K] values over the samples predicted as each class -> [C, K]."""
    return global_relevance(values, predicted, num_classes)
