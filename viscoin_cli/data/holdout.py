"""A validation split held out of a training split, so that choosing among a run's epochs never looks at
the test split.

The hold-out is stratified (the same fraction of every class) and fixed by the labels, the fraction and
`VAL_SEED`, not by the run's `--seed`: it is a property of the dataset, so runs with different seeds pick
their `best` on the same images and never train on each other's validation images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from viscoin_cli.data.images import ImageDataset
from viscoin_cli.errors import UserError

VAL_SEED = 0


def check_fraction(fraction: Any) -> float:
    """`fraction` as a float in [0, 1): some of every class must stay to train on (nan and inf refused)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise UserError(f"--val-fraction {fraction!r}: expected a fraction in [0, 1) (0 holds out nothing)")
    return float(fraction)


def _rank(seed: int, position: int) -> bytes:
    # a hash, not a random generator: no numpy or Python release can change which images are held out
    return hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()


def holdout_split(labels: Sequence[int], fraction: float, seed: int = VAL_SEED) -> tuple[list[int], list[int]]:
    """(train positions, validation positions) in `labels`: sorted, disjoint, together all of them.

    Each class of n images gives round(fraction·n) of them, at least 1 when fraction > 0 and n ≥ 2, and at
    most n - 1, so that every class is still trained on. Which ones is a seeded pseudo-random choice: the
    class's positions ranked by a hash of (seed, position).
    """
    fraction = check_fraction(fraction)
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(position)
    held: list[int] = []
    for positions in by_class.values():
        n = len(positions)
        count = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n >= 2 else 0
        held += sorted(positions, key=lambda position: _rank(seed, position))[:count]
    held_set = set(held)
    return [p for p in range(len(labels)) if p not in held_set], sorted(held)


class HoldoutSubset(ImageDataset):
    """Some images of a training split, by position: the split minus its hold-out ("train") or the
    hold-out itself ("val"). Items, class names and facts are the underlying split's."""

    def __init__(self, base: ImageDataset, positions: Sequence[int], split: str):
        self.base, self.positions = base, list(positions)
        self.name, self.split, self.root = base.name, split, base.root
        self.class_names, self.resolution, self.augment = list(base.class_names), base.resolution, base.augment
        self.channels, self.skipped = base.channels, base.skipped
        self.labels = [base.labels[p] for p in self.positions]
        if getattr(base, "attributes", None):  # per-image attribute labels (shapes, cub) follow their images
            rows = torch.tensor(self.positions, dtype=torch.long)
            self.attributes = {name: column[rows] for name, column in base.attributes.items()}
            self.attribute_values = {name: list(values) for name, values in base.attribute_values.items()}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base[self.positions[index]]


def split_off(train: ImageDataset, split: str, fraction: float, seed: int = VAL_SEED) -> ImageDataset:
    """`train` without its validation hold-out (`split` "train"), or only the hold-out ("val")."""
    kept, held = holdout_split(train.labels, fraction, seed)
    if split == "val" and not held:
        raise UserError(
            f"--val-fraction {fraction}: no validation image in the training split of {train.name} "
            "(a class needs at least 2 images to give one)"
        )
    if split == "train" and not held:
        return train
    return HoldoutSubset(train, kept if split == "train" else held, split)
