"""Ground truth for the directions methods: which known attribute value each direction finds.

On a dataset with attribute labels (shapes, CUB with its attribute files), beside the concept models'
`evaluate ground-truth` (metrics/ground_truth.py), for `compare --directions` and `report --directions`:

- classifier directions (`directions classifier`): each direction's image score over the test split is scored
  like a concept's pooled activation: per attribute value, the direction of highest AUC, the mean best AUC,
  how many values are captured (AUC ≥ the threshold); as directions.json records it at training time;
- generator directions (`directions gan`): they have no activation on real images, so only the render side
  applies, the shift test: does moving along the direction draw the value, as a probe trained on G's
  dataset reads G(w ± ε·d) against G(w)?

Either way `by_direction` names each direction's own best value, the table's ground-truth column.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from viscoin_cli.errors import UserError
from viscoin_cli.metrics.ground_truth import CAPTURE_THRESHOLD, SHIFT_SAMPLES


def directions_ground_truth(
    path: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    seed: int = 0,
    threshold: float = CAPTURE_THRESHOLD,
    max_images: int = 1000,
    samples: int = SHIFT_SAMPLES,
) -> dict[str, Any]:
    """The ground truth of a `directions` checkpoint on the dataset it records (its test split, at most
    `max_images` images; `samples` latents for the shift test). A one-line error when that dataset records
    no attribute labels."""
    from viscoin_cli.data import load_dataset
    from viscoin_cli.interpret.direction_table import directions_method
    from viscoin_cli.io.checkpoint import read_meta
    from viscoin_cli.metrics.ground_truth import labelled

    method = directions_method(path)
    meta = read_meta(path, kind="directions")
    facts = meta.dataset or {}
    if "name" not in facts or "resolution" not in facts:
        raise UserError(f"{meta.path}: the checkpoint does not record its dataset")
    name, resolution = str(facts["name"]), int(facts["resolution"])
    test_set = load_dataset(name, "test", root=data_root, resolution=resolution)
    labels = labelled(test_set)
    if labels is None:
        raise UserError(f"the {name} data records no attribute labels: no ground truth for its directions")
    if method == "classifier":
        from viscoin_cli.interpret.direction_concepts import direction_scores
        from viscoin_cli.interpret.direction_pairs import direction_ground_truth, load_direction_pairs
        from viscoin_cli.nets.classifier import load_classifier
        from viscoin_cli.nets.concept_model import verified_parent

        pairs, _ = load_direction_pairs(path)
        f, _ = load_classifier(verified_parent(meta, "classifier", classifier), device)
        scores = direction_scores(f.eval(), pairs, test_set, device, batch_size, max_images)
        scored = labelled(test_set, torch.arange(len(scores)))
        return {"method": method, **direction_ground_truth(scores, scored, threshold)}

    from viscoin_cli.metrics.ground_truth import fit_probe, shift_test
    from viscoin_cli.nets.latent_directions import load_gan_directions

    found = load_gan_directions(path, device, generator)
    train_set = load_dataset(name, "train", root=data_root, resolution=resolution)
    probe, report = fit_probe(train_set, test_set, seed=seed, batch_size=batch_size, device=device)
    result = shift_test(
        found.generator,
        found.model.directions,
        probe,
        labels[1],
        shift=found.shift_scale,
        samples=samples,
        seed=seed,
        batch_size=batch_size,
    )
    return {"method": method, **result, "probe": report}
