"""Why one image got its prediction: what `viscoin explain` computes for each image.

For an image x with g's predicted class ĉ: g's and f's top predictions; the top-k concepts by local
relevance r_{k,x} (interpret/relevance.py) with their activation φ̄_k and contribution φ̄_k·W[ĉ,k] to ĉ's
logit; where each sits (interpret/heatmaps.py); its λ strip x̃_λ for λ in STRIP (λ = 1 is the plain
reconstruction x̃); and what removing it (λ = 0) and doubling it (λ = 2) does to g's and f's probability of
ĉ, read on the renders against x̃ as faithfulness reads it (interpret/edit.py). Optionally the greedy
counterfactual: the fewest top concepts whose removal flips g's class on the render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from viscoin_cli.interpret.edit import counterfactual, render_edit, render_sweeps
from viscoin_cli.interpret.encode import encode_images
from viscoin_cli.interpret.heatmaps import concept_heatmaps, heat_overlay
from viscoin_cli.interpret.relevance import contributions, head_weight, relevance_tables, top_concepts
from viscoin_cli.runtime import Runtime

STRIP = (0.0, 1.0, 2.0, 4.0)  # the λ of a concept's strip; 0 and 2 are also the "zeroed" and "doubled" edits
EDITS = (0.0, 2.0, 4.0)  # the strip's renders besides λ = 1, which is x̃ for every concept
ZEROED, DOUBLED = EDITS.index(0.0), EDITS.index(2.0)  # where the zeroed and doubled renders sit among them
TOP_PREDICTIONS = 3  # classes listed per predictor
COUNTERFACTUAL_POOL = 16  # the counterfactual removes concepts among the most relevant this many (r > 0)


@dataclass
class Explanation:
    """One image explained: the JSON document and the pictures its card shows (CPU tensors in [-1, 1])."""

    document: dict[str, Any]
    input: torch.Tensor  # [C, H, W]
    reconstruction: torch.Tensor  # [C, H, W]
    map_overlays: torch.Tensor  # [k, 3, H, W]
    gradient_overlays: torch.Tensor  # [k, 3, H, W]
    strips: torch.Tensor  # [k, len(STRIP), C, H, W]
    counterfactual: torch.Tensor | None = None  # [C, H, W]


def top_predictions(probabilities: torch.Tensor, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The most probable classes of one row of probabilities, best first."""
    values, classes = top_concepts(probabilities, min(TOP_PREDICTIONS, len(probabilities)))
    return [
        {"class": int(c), "name": class_names[int(c)], "probability": float(p)}
        for p, c in zip(values.tolist(), classes.tolist(), strict=True)
    ]


def effect(rendered_g: float, rendered_f: float, base_g: float, base_f: float) -> dict[str, float]:
    """g's and f's probability of the predicted class on an edited render, and the change from x̃."""
    return {
        "g_probability": rendered_g,
        "g_change": rendered_g - base_g,
        "f_probability": rendered_f,
        "f_change": rendered_f - base_f,
    }


@torch.no_grad()
def explain_images(
    model,
    pictures: torch.Tensor,
    heads: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    rt: Runtime,
    top_k: int,
    with_counterfactual: bool = False,
    batch_size: int = 64,
) -> list[Explanation]:
    """Explain a batch of images [N, C, H, W] in [-1, 1]; `heads` say what each image is (its JSON head)."""
    encoded = encode_images(model, pictures, None, rt, batch_size)
    local, _ = relevance_tables(model, encoded)
    _, top = top_concepts(local, top_k)  # [N, k]
    contribution = contributions(encoded.pooled, head_weight(model), encoded.predicted)
    heat = concept_heatmaps(model, pictures, top)
    plain = render_edit(model, encoded, {}, batch_size)
    sweeps = render_sweeps(model, encoded, top, EDITS, batch_size)  # (image, concept, λ) rows
    edited_g = sweeps.g_probabilities.unflatten(0, (len(pictures), top_k, len(EDITS)))
    edited_f = sweeps.f_probabilities.unflatten(0, (len(pictures), top_k, len(EDITS)))
    edited_images = sweeps.images.unflatten(0, (len(pictures), top_k, len(EDITS)))
    g_probabilities = encoded.logits.softmax(1)
    f_probabilities = encoded.f_logits.softmax(1)
    explanations = []
    for row, head in enumerate(heads):
        c = int(encoded.predicted[row])
        base_g, base_f = float(plain.g_probabilities[row, c]), float(plain.f_probabilities[row, c])
        concepts = []
        for slot, concept in enumerate(top[row].tolist()):
            concepts.append(
                {
                    "rank": slot + 1,
                    "concept": concept,
                    "relevance": float(local[row, concept]),
                    "activation": float(encoded.pooled[row, concept]),
                    "contribution": float(contribution[row, concept]),
                    "zeroed": effect(
                        float(edited_g[row, slot, ZEROED, c]), float(edited_f[row, slot, ZEROED, c]), base_g, base_f
                    ),
                    "doubled": effect(
                        float(edited_g[row, slot, DOUBLED, c]), float(edited_f[row, slot, DOUBLED, c]), base_g, base_f
                    ),
                }
            )
        document = {
            **head,
            "predicted": c,
            "predicted_name": class_names[c],
            "g": top_predictions(g_probabilities[row], class_names),
            "f": top_predictions(f_probabilities[row], class_names),
            "reconstruction": {"g_probability": base_g, "f_probability": base_f},
            "concepts": concepts,
        }
        # the strip in λ order: x̃ (the plain render) at λ = 1, the edits elsewhere
        strip = [plain.images[row] if lam == 1 else edited_images[row, :, EDITS.index(lam)] for lam in STRIP]
        strips = torch.stack([s.expand_as(edited_images[row, :, 0]) for s in strip], dim=1)
        explanation = Explanation(
            document=document,
            input=pictures[row].float().cpu(),
            reconstruction=plain.images[row],
            map_overlays=heat_overlay(pictures[row].expand(top_k, -1, -1, -1), heat.maps[row]),
            gradient_overlays=heat_overlay(pictures[row].expand(top_k, -1, -1, -1), heat.gradients[row]),
            strips=strips,
        )
        if with_counterfactual:
            add_counterfactual(model, encoded.subset(torch.tensor([row])), local[row], explanation, class_names)
        explanations.append(explanation)
    return explanations


def add_counterfactual(
    model, encoded, relevance: torch.Tensor, explanation: Explanation, class_names: Sequence[str]
) -> None:
    """The greedy counterfactual of one encoded image over its most relevant concepts (r > 0)."""
    values, order = top_concepts(relevance, min(COUNTERFACTUAL_POOL, len(relevance)))
    candidates = [int(c) for v, c in zip(values.tolist(), order.tolist(), strict=True) if v > 0]
    found = counterfactual(model, encoded, candidates, len(candidates))
    explanation.counterfactual = found.image
    explanation.document["counterfactual"] = {
        "concepts": found.concepts,
        "flipped": found.flipped,
        "from": found.original,
        "from_name": class_names[found.original],
        "to": found.predicted,
        "to_name": class_names[found.predicted],
        "g_probability_of_from": found.g_probability,
        "f_predicted": found.f_predicted,
        "f_predicted_name": class_names[found.f_predicted],
        "candidates": len(candidates),
    }
