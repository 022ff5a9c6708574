"""Editing concepts and seeing what the model makes of the result.

An edit scales some concept maps, Φ'_k = λ_k·Φ_k (λ = 0 removes a concept, 2 doubles it), leaves γ alone
and renders x̃' = decoder(Φ', γ). What an edit does to a prediction is read as faithfulness reads it
(metrics/faithfulness.py): g and f applied to the rendered images, x̃' against the plain reconstruction
x̃. So "zeroing concept 12 drops g's probability by 0.3" means the rendered image without concept 12 is
less convincing to g, not only that a term left the head's sum. `explain`, `visualize --set`, the
counterfactual search and the explorer's sliders all edit through here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from viscoin_cli.interpret.encode import Encoded


@dataclass
class Rendered:
    """Edited renders and both predictors' class probabilities on them."""

    images: torch.Tensor  # [N, C, H, W] in [-1, 1], CPU
    g_probabilities: torch.Tensor  # [N, classes]
    f_probabilities: torch.Tensor  # [N, classes]

    @property
    def g_predicted(self) -> torch.Tensor:
        return self.g_probabilities.argmax(1)

    @property
    def f_predicted(self) -> torch.Tensor:
        return self.f_probabilities.argmax(1)


def scale_table(num_samples: int, num_concepts: int, scales: Mapping[int, float]) -> torch.Tensor:
    """[N, K] of ones with column k set to scales[k]: the same edit for every sample."""
    table = torch.ones(num_samples, num_concepts)
    for concept, lam in scales.items():
        table[:, concept] = lam
    return table


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def render_scaled_maps(
    model,
    concept_maps: torch.Tensor,
    support: torch.Tensor,
    scales: torch.Tensor,
    batch_size: int = 64,
    predict: bool = True,
) -> Rendered:
    """Render each sample with its concept maps scaled by its row of `scales` [N, K] and predict on it.

    concept_maps [N, K, h, w] and support [N, S] as `Encoded` holds them (never modified); the work runs in
    chunks of `batch_size` on the model's device, the results come back in fp32 on the CPU. `predict=False`
    renders only (the probabilities are then empty [N, 0]).
    """
    device = model_device(model)
    images, g_probs, f_probs = [], [], []
    for first in range(0, len(concept_maps), batch_size):
        maps = concept_maps[first : first + batch_size].to(device)
        lam = scales[first : first + batch_size].to(device=device, dtype=maps.dtype)
        rendered = model.render(maps * lam[:, :, None, None], support[first : first + batch_size].to(device))
        rendered = rendered.float().clamp(-1, 1)
        images.append(rendered.cpu())
        if predict:
            out = model.encode(rendered)  # g's logits and f's from one pass of f
            g_probs.append(F.softmax(out.logits.float(), dim=1).cpu())
            f_probs.append(F.softmax(out.f_logits.float(), dim=1).cpu())
    if not predict:
        nothing = torch.zeros(len(concept_maps), 0)
        return Rendered(torch.cat(images), nothing, nothing)
    return Rendered(torch.cat(images), torch.cat(g_probs), torch.cat(f_probs))


def render_edit(model, encoded: Encoded, scales: Mapping[int, float], batch_size: int = 64) -> Rendered:
    """Every encoded sample rendered with the same concepts scaled (`{concept: λ}`)."""
    table = scale_table(len(encoded), encoded.pooled.shape[1], scales)
    return render_scaled_maps(model, encoded.concept_maps, encoded.support, table, batch_size)


def render_sweeps(
    model, encoded: Encoded, concepts: torch.Tensor, lambdas: Sequence[float], batch_size: int = 64
) -> Rendered:
    """For each sample i and each of its concepts concepts[i, j] [N, M], the sample rendered with that one
    concept scaled by each λ: results flattened in (sample, concept, λ) order, N·M·L rows."""
    count, per_sample = concepts.shape
    lams = torch.tensor(list(lambdas), dtype=torch.float32)
    num_concepts = encoded.pooled.shape[1]
    table = torch.ones(count, per_sample, len(lams), num_concepts)
    rows = torch.arange(count)[:, None, None]
    slots = torch.arange(per_sample)[None, :, None]
    table[rows, slots, torch.arange(len(lams))[None, None, :], concepts[:, :, None]] = lams
    repeats = per_sample * len(lams)
    maps = encoded.concept_maps.repeat_interleave(repeats, dim=0)
    support = encoded.support.repeat_interleave(repeats, dim=0)
    return render_scaled_maps(model, maps, support, table.flatten(0, 2), batch_size)


@dataclass
class Counterfactual:
    """The concepts whose removal flips g's prediction on the render, and that render."""

    concepts: list[int]  # in the order the greedy search removed them
    flipped: bool  # False: removing every candidate did not flip it (concepts lists them all)
    original: int  # g's class on the plain reconstruction x̃
    predicted: int  # g's class on the edited render
    g_probability: float  # g's probability of `original` on the edited render
    f_predicted: int
    image: torch.Tensor  # [C, H, W] the edited render


@torch.no_grad()
def counterfactual(
    model, encoded: Encoded, candidates: Sequence[int], max_concepts: int, batch_size: int = 64
) -> Counterfactual:
    """The smallest set of `candidates` whose removal flips g's prediction on the render, found greedily.

    `encoded` holds one sample. The class to flip is g's on the plain reconstruction. Each step renders the
    sample with the chosen set plus each remaining candidate removed (one batch) and keeps the candidate
    that leaves g the least probability of that class; it stops as soon as the class changes, or after
    `max_concepts` removals.
    """
    if len(encoded) != 1:
        raise ValueError("counterfactual explains one sample at a time")
    num_concepts = encoded.pooled.shape[1]
    plain = render_scaled_maps(model, encoded.concept_maps, encoded.support, torch.ones(1, num_concepts))
    original = int(plain.g_predicted[0])
    chosen: list[int] = []
    remaining = list(dict.fromkeys(int(c) for c in candidates))
    best = plain
    for _ in range(min(max_concepts, len(remaining))):
        table = torch.ones(len(remaining), num_concepts)
        table[:, chosen] = 0
        table[torch.arange(len(remaining)), remaining] = 0
        maps = encoded.concept_maps.expand(len(remaining), *encoded.concept_maps.shape[1:])
        support = encoded.support.expand(len(remaining), *encoded.support.shape[1:])
        trials = render_scaled_maps(model, maps, support, table, batch_size)
        pick = int(trials.g_probabilities[:, original].argmin())
        chosen.append(remaining.pop(pick))
        best = Rendered(
            trials.images[pick : pick + 1],
            trials.g_probabilities[pick : pick + 1],
            trials.f_probabilities[pick : pick + 1],
        )
        if int(best.g_predicted[0]) != original:
            break
    return Counterfactual(
        concepts=chosen,
        flipped=int(best.g_predicted[0]) != original,
        original=original,
        predicted=int(best.g_predicted[0]),
        g_probability=float(best.g_probabilities[0, original]),
        f_predicted=int(best.f_predicted[0]),
        image=best.images[0],
    )
