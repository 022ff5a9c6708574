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
    """Renders [N, len(lambdas), C, H, W] in [-1, 1] (on the CPU) of each sample with Φ_concept scaled by λ.

    Every (sample, λ) pair of a chunk goes through G in one batch of at most `batch_size` renders: one
    forward per chunk rather than one per λ, which is what a short sweep on a CPU waits on.
    """
    device = next(model.parameters()).device
    count = len(lambdas)
    per_chunk = max(1, batch_size // count)
    scales = torch.tensor(list(lambdas), dtype=concept_maps.dtype, device=device)
    rows = []
    for start in range(0, len(concept_maps), per_chunk):
        maps = concept_maps[start : start + per_chunk].to(device)
        gamma = support[start : start + per_chunk].to(device)
        edited = maps[:, None].repeat(1, count, 1, 1, 1)  # [n, L, K, 3, 3]
        edited[:, :, concept] = maps[:, None, concept] * scales[None, :, None, None]
        images = model.render(edited.flatten(0, 1), gamma.repeat_interleave(count, dim=0))
        rows.append(images.float().clamp(-1, 1).cpu().unflatten(0, (len(maps), count)))
    return torch.cat(rows)


def top_activating(encoded: Encoded, concept: int, count: int, cls: int | None = None) -> torch.Tensor:
    """Indices of the `count` samples (predicted as `cls`, if given) where φ̄_concept is largest."""
    pool = torch.arange(len(encoded)) if cls is None else (encoded.predicted == cls).nonzero().flatten()
    if len(pool) == 0:  # nothing predicted as cls: fall back on the samples labelled cls
        pool = (encoded.labels == cls).nonzero().flatten()
    order = encoded.pooled[pool, concept].argsort(descending=True)
    return pool[order[:count]]
