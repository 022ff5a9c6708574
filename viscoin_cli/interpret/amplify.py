"""Seeing a concept: render samples with one concept map scaled by λ (paper §3.5, Fig. 1).

x̃_λ = G(Ω(Φ', γ)) with Φ'_k = λ·Φ_k and every other map untouched; λ = 1 is the plain reconstruction,
λ = 0 removes the concept. Used by `visualize`, the report's λ strips and the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from viscoin_cli.interpret.encode import Encoded


@torch.no_grad()
def amplify(
    model,
    concept_maps: torch.Tensor,
    support: torch.Tensor,
    concept: int,
    lambdas: Sequence[float],
    batch_size: int = 64,
) -> torch.Tensor:
    """Renders [N, len(lambdas), C, H, W] in [-1, 1] (on the CPU) of each sample with Φ_concept scaled by λ."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(concept_maps), batch_size):
        maps = concept_maps[start : start + batch_size].to(device)
        gamma = support[start : start + batch_size].to(device)
        columns = []
        for lam in lambdas:
            edited = maps.clone()
            edited[:, concept] = maps[:, concept] * lam
            columns.append(model.render(edited, gamma).float().clamp(-1, 1).cpu())
        rows.append(torch.stack(columns, dim=1))
    return torch.cat(rows)


def top_activating(encoded: Encoded, concept: int, count: int, cls: int | None = None) -> torch.Tensor:
    """Indices of the `count` samples (predicted as `cls`, if given) where φ̄_concept is largest."""
    pool = torch.arange(len(encoded)) if cls is None else (encoded.predicted == cls).nonzero().flatten()
    if len(pool) == 0:  # nothing predicted as cls: fall back on the samples labelled cls
        pool = (encoded.labels == cls).nonzero().flatten()
    order = encoded.pooled[pool, concept].argsort(descending=True)
    return pool[order[:count]]
