"""Which generator direction moves which concept: VisCoIN's concepts paired with the unsupervised directions
found in the same generator's W space (`viscoin directions gan`).

For a batch of fresh latents w and each direction d_k, the images G(w + ε·σ_W·d_k) and G(w − ε·σ_W·d_k) go
through the concept model's encoder (f's taps → Ψ → pooled concept activations φ̄). The effect of direction k
on concept c is the batch mean of φ̄_c(plus) − φ̄_c(minus), divided by the spread (standard deviation) of φ̄_c
over the unshifted images, so that concepts of different magnitudes compare: an effect of 1 means the shift
from −ε to +ε moves the concept by one typical variation of it. Each concept is paired with the direction of
largest |effect|. A concept that does not vary at all on the generator's images (a dead one) pairs with
nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.nets.latent_directions import LatentDirections
from viscoin_cli.runtime import seed_for

DEAD_SPREAD = 1e-8  # a concept whose activation varies less than this over the samples is dead
_PAIRING_STREAM = 1 << 42  # the latents' seed stream (no training run draws from it)


@torch.no_grad()
def direction_effects(
    encode: Callable[[torch.Tensor], torch.Tensor],
    G: nn.Module,
    directions: LatentDirections,
    *,
    shift: float,
    samples: int = 128,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(effect [directions, concepts], spread [concepts]): the mean change of `encode`'s pooled activations
    from −shift to +shift along each direction (unnormalised), and their standard deviation unshifted."""
    device = directions.raw.device
    generator = torch.Generator(device).manual_seed(seed_for(seed, _PAIRING_STREAM))
    ws = G.mapping(torch.randn(samples, G.z_dim, generator=generator, device=device), None)

    def concepts(latents: torch.Tensor) -> torch.Tensor:
        parts = [encode(G.synthesis(chunk, noise_mode="const")).float() for chunk in latents.split(batch_size)]
        return torch.cat(parts)

    spread = concepts(ws).std(dim=0, unbiased=False)
    effect = torch.zeros(directions.num_directions, len(spread), device=spread.device)
    eps = torch.full((samples,), float(shift), device=device)
    for k in range(directions.num_directions):
        which = torch.full((samples,), k, dtype=torch.long, device=device)
        effect[k] = (concepts(directions.shift(ws, which, eps)) - concepts(directions.shift(ws, which, -eps))).mean(0)
    return effect.cpu(), spread.cpu()


def pair_concepts(effect: torch.Tensor, spread: torch.Tensor) -> dict[str, Any]:
    """The normalised effect matrix, each live concept's strongest direction (by |effect|, strongest pairs
    first) and each direction's most changed concept, as JSON values.

    `score` is the signed normalised effect (positive: moving along +d_k raises the concept); `share` is the
    pair's part of the concept's total |effect| over all directions (1: only this direction moves it).
    """
    dead = spread < DEAD_SPREAD
    normalised = torch.where(dead, torch.zeros_like(effect), effect / spread.clamp(min=DEAD_SPREAD))
    magnitude = normalised.abs()
    pairs = []
    for concept in torch.nonzero(~dead).flatten().tolist():
        direction = int(magnitude[:, concept].argmax())
        total = float(magnitude[:, concept].sum())
        score = float(normalised[direction, concept])
        share = abs(score) / total if total > 0 else 0.0
        pairs.append({"concept": concept, "direction": direction, "score": score, "share": share})
    pairs.sort(key=lambda pair: (-abs(pair["score"]), pair["concept"]))
    by_direction = []
    for direction in range(len(normalised)):
        concept = int(magnitude[direction].argmax())
        by_direction.append(
            {"direction": direction, "concept": concept, "score": float(normalised[direction, concept])}
        )
    return {
        "effect": normalised.tolist(),
        "concept_spread": spread.tolist(),
        "dead_concepts": torch.nonzero(dead).flatten().tolist(),
        "pairs": pairs,
        "by_direction": by_direction,
    }


def pair_directions_with_concepts(
    model_path: str | os.PathLike,
    directions_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    shift: float | None = None,
    samples: int = 128,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Pair a concept model's concepts with the directions of a `directions gan` checkpoint on the same G.

    `shift` is ε in σ_W units [default: the directions' training range S]. A model that records its generator
    (VisCoIN) must record the very generator the directions were found in (sha256), else a one-line error.
    """
    from viscoin_cli.nets.concept_model import load_concept_model
    from viscoin_cli.nets.latent_directions import load_gan_directions

    if not 1 <= samples <= 100_000:
        raise UserError(f"samples {samples}: expected 1..100000")
    found = load_gan_directions(directions_path, device)
    model, meta = load_concept_model(model_path, device)
    mine, theirs = found.meta.parents["generator"]["sha256"], meta.parents.get("generator", {}).get("sha256")
    if theirs is not None and theirs != mine:
        raise UserError(f"{meta.path} was trained with another generator than the directions in {found.meta.path}")
    eps = found.shift_scale if shift is None else float(shift)
    if not 0 < eps <= 100:
        raise UserError(f"shift {eps:g}: expected a number in (0, 100] (in σ_W)")
    effect, spread = direction_effects(
        lambda images: model.encode(images).pooled,
        found.generator,
        found.model.directions,
        shift=eps,
        samples=samples,
        batch_size=batch_size,
        seed=seed,
    )
    return {
        "model": str(meta.path),
        "directions": str(found.meta.path),
        "generator_sha256": mine,
        "samples": samples,
        "shift": eps,
        "w_scale": float(found.model.directions.scale),
        "num_directions": effect.shape[0],
        "num_concepts": effect.shape[1],
        **pair_concepts(effect, spread),
    }
