"""Dictionary health: is the concept dictionary used, non-redundant, and spread over the classes?

Read off the test split's encodings (no rendering), so it takes seconds:
- dead: concepts whose pooled activation φ̄_k never exceeds EPSILON (every model's φ̄ is post-ReLU, ≥ 0):
  the dictionary is smaller than K says.
- duplicates: pairs whose φ̄ correlate above a threshold over the test samples: two names for one concept.
  A constant concept (zero variance, dead ones included) has no correlation and is never a duplicate.
- per_class: for each class c, the fewest concepts whose positive global relevance r_{k,c} sums to `share`
  of the class's total positive relevance: how many concepts an explanation of c really needs.
- active_fraction: per concept, the share of test samples where φ̄_k > EPSILON.
Concept stability across models (`viscoin compare --stability`) matches concepts on the same correlations.
"""

from __future__ import annotations

from typing import Any

import torch

EPSILON = 1e-6  # φ̄_k ≤ EPSILON counts as inactive (float noise above an exact 0 is not a use)
DUPLICATE_THRESHOLD = 0.95
RELEVANCE_SHARE = 0.8
STABLE_CORRELATION = 0.5  # a matched pair counts as "the same concept" from this correlation on


def correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r between the columns of [N, Ka] and [N, Kb] -> [Ka, Kb] in float64; 0 (never NaN) for a
    column of zero variance, which carries no information to correlate."""
    a, flat_a = _centred(a)
    b, flat_b = _centred(b)
    norms = a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :]
    r = (a.T @ b) / norms.clamp_min(torch.finfo(torch.float64).tiny)
    r[flat_a] = 0.0
    r[:, flat_b] = 0.0
    return r.clamp(-1.0, 1.0)


def _centred(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns minus their mean (float64), and which columns are flat: a constant column leaves only rounding
    noise after centring, far below 1e-12 of its magnitude."""
    x = x.double()
    scale = (1 + x.abs().amax(0)) * len(x) ** 0.5
    centred = x - x.mean(0)
    return centred, centred.norm(dim=0) <= 1e-12 * scale


def constant_concepts(pooled: torch.Tensor) -> torch.Tensor:
    """[K] bool: concepts whose φ̄ never varies over the samples."""
    return _centred(pooled)[1]


def duplicate_pairs(pooled: torch.Tensor, threshold: float = DUPLICATE_THRESHOLD) -> list[list[Any]]:
    """[k1, k2, r] for k1 < k2 with r > threshold, most correlated first."""
    r = correlations(pooled, pooled)
    upper = torch.triu(torch.ones_like(r, dtype=torch.bool), diagonal=1)
    k1, k2 = torch.nonzero(upper & (r > threshold), as_tuple=True)
    pairs = [[int(i), int(j), float(r[i, j])] for i, j in zip(k1, k2, strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))


def concepts_for_share(relevance: torch.Tensor, share: float = RELEVANCE_SHARE) -> list[int | None]:
    """Per class (row of [C, K] global relevance): the fewest top concepts whose positive relevance reaches
    `share` of the class's positive total; None for a class with none (never predicted)."""
    positive = relevance.double().clamp_min(0)
    totals = positive.sum(1)
    cumulative = positive.sort(dim=1, descending=True).values.cumsum(1)
    reached = cumulative >= share * totals[:, None] * (1 - 1e-12)  # tolerance: a sum equal to the bound counts
    counts = reached.double().argmax(1) + 1
    return [int(n) if total > 0 else None for n, total in zip(counts.tolist(), totals.tolist(), strict=True)]


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "median": None, "max": None}
    tensor = torch.tensor(values, dtype=torch.float64)
    return {
        "mean": tensor.mean().item(),
        "min": tensor.min().item(),
        "median": tensor.median().item(),
        "max": tensor.max().item(),
    }


def health(
    pooled: torch.Tensor,
    relevance: torch.Tensor,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    share: float = RELEVANCE_SHARE,
) -> dict[str, Any]:
    """The `health` metric from pooled activations φ̄ [N, K] and global relevance r_{k,c} [C, K] (the JSON)."""
    dead = (pooled.amax(0) <= EPSILON).nonzero().flatten().tolist()
    constant = constant_concepts(pooled).nonzero().flatten().tolist()
    pairs = duplicate_pairs(pooled, duplicate_threshold)
    counts = concepts_for_share(relevance, share)
    active = (pooled > EPSILON).double().mean(0).tolist()
    return {
        "concepts": pooled.shape[1],
        "samples": pooled.shape[0],
        "epsilon": EPSILON,
        "dead": {"count": len(dead), "fraction": len(dead) / pooled.shape[1], "indices": dead},
        "constant": {"count": len(constant), "indices": constant},
        "duplicates": {"count": len(pairs), "threshold": duplicate_threshold, "pairs": pairs},
        "per_class": {
            "share": share,
            **_summary([n for n in counts if n is not None]),
            "classes": sum(n is not None for n in counts),
            "counts": counts,
        },
        "active_fraction": {**_summary(active), "per_concept": active},
    }


def match_concepts(a: torch.Tensor, b: torch.Tensor) -> list[tuple[int, int, float]]:
    """Hungarian matching of the concepts of two models by the correlation r of their φ̄ on the same samples
    ([N, Ka] and [N, Kb]): min(Ka, Kb) pairs (i, j, r) maximising the summed r, by i.

    r, not |r|: φ̄ ≥ 0 and the head reads it with a sign, so an anti-correlated concept is a different one."""
    from scipy.optimize import linear_sum_assignment

    r = correlations(a, b)
    rows, cols = linear_sum_assignment(r.numpy(), maximize=True)
    return [(int(i), int(j), float(r[i, j])) for i, j in zip(rows, cols, strict=True)]


def stability(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """How much two models' dictionaries agree: mean matched r, the share of matches with r ≥ 0.5, the matches."""
    matches = match_concepts(a, b)
    values = [r for _, _, r in matches]
    return {
        "matched": len(matches),
        "mean_matched_correlation": sum(values) / len(values) if values else None,
        f"matched_above_{STABLE_CORRELATION:g}": sum(r >= STABLE_CORRELATION for r in values) / len(values)
        if values
        else None,
        "matches": [[i, j, r] for i, j, r in matches],
    }
