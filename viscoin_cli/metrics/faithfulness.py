"""Faithfulness (paper §4.1, App. B.3): do the concepts called relevant actually carry the prediction?

For a sample x with predicted class ĉ (from g), zero every concept map whose local relevance r_{k,x}
exceeds τ and render again: FF_x = p_ĉ(x̃) − p_ĉ(x̃'), with x̃ rendered from Φ and x̃' from the zeroed Φ'
(γ untouched). p is the class probability of the predictor being explained: g (default) or f, both
applied to the rendered images. The random baseline zeroes as many concepts, chosen uniformly at random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from viscoin_cli.interpret.encode import Encoded
from viscoin_cli.interpret.relevance import head_weight, local_relevance

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.4)


def concepts_above(relevance: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask [N, K] of the concepts whose local relevance exceeds the threshold."""
    return relevance > threshold


def random_like(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many True per row as `mask` has, at uniformly random positions."""
    ranks = torch.rand(mask.shape, generator=generator).argsort(1).argsort(1)
    return ranks < mask.sum(1, keepdim=True)


def median(values: torch.Tensor) -> float:
    """The usual median: the middle value, or the mean of the two middle values for an even count
    (`torch.median` returns the lower of the two)."""
    ordered = values.flatten().double().sort().values
    middle = len(ordered) // 2
    return ordered[middle].item() if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]).item() / 2


def probability_of(
    model, concept_maps: torch.Tensor, support: torch.Tensor, classes: torch.Tensor, predictor: str
) -> torch.Tensor:
    """p_c(x̃) of the predictor (g or f) on the image rendered from (Φ, γ), for each sample's class c."""
    rendered = model.render(concept_maps, support)
    logits = model.encode(rendered).logits if predictor == "g" else model.f(rendered)
    return F.softmax(logits.float(), dim=1).cpu()[torch.arange(len(classes)), classes]


@torch.no_grad()
def faithfulness(
    model,
    encoded: Encoded,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    predictor: str = "g",
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Median (the usual one, see `median`) and mean FF per threshold, beside the random baseline, over the
    samples in `encoded`.

    `on_batch(n)` is called after each batch of n samples (progress display).
    """
    if predictor not in ("g", "f"):
        raise ValueError(f"predictor must be g or f, not {predictor!r}")
    generator = torch.Generator().manual_seed(seed)
    weight = head_weight(model)
    values: dict[float, dict[str, list[torch.Tensor]]] = {t: {"ff": [], "random": [], "zeroed": []} for t in thresholds}
    for start in range(0, len(encoded), batch_size):
        batch = encoded.subset(torch.arange(start, min(start + batch_size, len(encoded))))
        predicted = batch.predicted
        relevance = local_relevance(batch.pooled, weight, predicted)
        maps, support = batch.concept_maps.to(device), batch.support.to(device)
        full = probability_of(model, maps, support, predicted, predictor)
        for threshold in thresholds:
            mask = concepts_above(relevance, threshold)
            keep = (~mask).to(device=device, dtype=maps.dtype)[:, :, None, None]
            keep_random = (~random_like(mask, generator)).to(device=device, dtype=maps.dtype)[:, :, None, None]
            values[threshold]["ff"].append(full - probability_of(model, maps * keep, support, predicted, predictor))
            values[threshold]["random"].append(
                full - probability_of(model, maps * keep_random, support, predicted, predictor)
            )
            values[threshold]["zeroed"].append(mask.sum(1).float())
        if on_batch is not None:
            on_batch(len(batch))
    return summarize(values, "zeroed", "mean_concepts_zeroed")


def summarize(values: dict[float, dict[str, list[torch.Tensor]]], count: str, label: str) -> dict[str, dict]:
    """Per τ: the median and mean drop beside the random baseline's, and the mean of `count` (what was removed
    per image, reported as `label`), from the per-batch lists "ff", "random" and `count`."""
    result = {}
    for threshold, lists in values.items():
        ff, rand, removed = (torch.cat(lists[key]) for key in ("ff", "random", count))
        result[f"{threshold:g}"] = {
            "median": median(ff),
            "random_median": median(rand),
            "mean": ff.mean().item(),
            "random_mean": rand.mean().item(),
            label: removed.mean().item(),
            "samples": len(ff),
        }
    return result
