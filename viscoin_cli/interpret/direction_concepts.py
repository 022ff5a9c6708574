"""Which VisCoIN (or FLINT, FLAEM) concept each classifier direction pair corresponds to.

Both read the same classifier f: a direction pair through its decoding direction at one of f's taps, a concept
model through its concept maps built from f's taps. Over the test split, each direction's read-out (its image
score: the factor, or its largest factor over a feature map's positions) is correlated with every concept's
pooled activation φ̄_k; a direction is paired with the concept of highest Pearson correlation. The result is
a plain JSON-ready dict, for `compare` and `report` to show.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from viscoin_cli.errors import UserError
from viscoin_cli.interpret.direction_pairs import DirectionPairs, image_scores, load_direction_pairs, read
from viscoin_cli.interpret.encode import stack_images
from viscoin_cli.metrics.health import correlations


def best_concepts(r: torch.Tensor, top: int = 3) -> list[dict[str, Any]]:
    """Per direction (row of [K_dir, K_concepts] correlations r): the best concept and the `top` best, JSON-ready."""
    rows = []
    values, indices = r.sort(dim=1, descending=True, stable=True)
    for j in range(len(r)):
        ranked = [
            {"concept": int(indices[j, rank]), "correlation": round(float(values[j, rank]), 6)}
            for rank in range(min(top, r.shape[1]))
        ]
        rows.append({"direction": j, **ranked[0], "top": ranked})
    return rows


def _image_batches(dataset, count: int, batch_size: int, device: torch.device | str):
    """The first `count` images of `dataset`, a batch at a time on `device` (a bounded pass)."""
    for start in range(0, count, batch_size):
        yield stack_images(dataset, range(start, min(start + batch_size, count))).to(device)


def _direction_scores(classifier, pairs: DirectionPairs, images: torch.Tensor) -> torch.Tensor:
    activation = classifier.forward_taps(images)[pairs.layer].float()
    return image_scores(read(activation, pairs.decoding.to(images.device))).cpu()


@torch.no_grad()
def direction_scores(
    classifier,
    pairs: DirectionPairs,
    dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    max_images: int = 1000,
) -> torch.Tensor:
    """Each direction's image score [N, K_dir] over the first `max_images` images of `dataset`."""
    batches = _image_batches(dataset, min(len(dataset), max_images), batch_size, device)
    return torch.cat([_direction_scores(classifier, pairs, images) for images in batches])


@torch.no_grad()
def direction_and_concept_activations(
    model, pairs: DirectionPairs, dataset, device: torch.device | str = "cpu", batch_size: int = 64, max_images=1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direction image scores [N, K_dir] and concept pooled activations [N, K_concepts] over the first
    `max_images` images of `dataset` (one pass, in batches)."""
    reads, concepts = [], []
    for images in _image_batches(dataset, min(len(dataset), max_images), batch_size, device):
        reads.append(_direction_scores(model.f, pairs, images))
        concepts.append(model.encode(images).pooled.float().cpu())
    return torch.cat(reads), torch.cat(concepts)


def pair_with_concepts(
    directions_path: str | os.PathLike,
    model_path: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    max_images: int = 1000,
    top: int = 3,
) -> dict[str, Any]:
    """Pair each direction of a `directions` checkpoint with the concept model's most correlated concept over
    the test split. Both must explain the same f (checked by its sha256)."""
    from viscoin_cli.data import load_dataset
    from viscoin_cli.nets.concept_model import load_concept_model

    pairs, meta = load_direction_pairs(directions_path)
    model, model_meta = load_concept_model(model_path, device, classifier=classifier, generator=generator)
    own = meta.parents.get("classifier", {}).get("sha256")
    if own is None or own != model_meta.parents.get("classifier", {}).get("sha256"):
        raise UserError(f"{meta.path} and {model_meta.path} do not explain the same classifier (sha256 differs)")
    facts = model_meta.dataset or {}
    if "name" not in facts or "resolution" not in facts:
        raise UserError(f"{model_meta.path}: the checkpoint does not record its dataset")
    test_set = load_dataset(facts["name"], "test", root=data_root, resolution=int(facts["resolution"]))
    reads, concepts = direction_and_concept_activations(model, pairs, test_set, device, batch_size, max_images)
    rows = best_concepts(correlations(reads, concepts).float(), top)
    best = torch.tensor([row["correlation"] for row in rows])
    return {
        "directions": str(meta.path),
        "model": str(model_meta.path),
        "method": model_meta.kind,
        "layer": pairs.layer,
        "images": len(reads),
        "mean_best_correlation": float(best.mean()),
        "distinct_concepts": len({row["concept"] for row in rows}),
        "pairs": rows,
    }
