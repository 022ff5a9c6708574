"""Datasets behind one registry: [-1, 1] images at a requested resolution, integer labels, class names.

This module stays free of torch/PIL imports (the CLI reads the names to build `--help`); `load_dataset`
imports the layout modules when called.
"""

from __future__ import annotations

import operator
import os
from typing import TYPE_CHECKING

from viscoin_cli.errors import UserError

if TYPE_CHECKING:
    from viscoin_cli.data.images import ImageDataset

DATASET_NAMES: tuple[str, ...] = ("digits", "shapes", "cub", "cars", "celebahq", "folder")
DEFAULT_RESOLUTION: dict[str, int] = {
    "digits": 32,
    "shapes": 32,
    "cub": 256,
    "cars": 256,
    "celebahq": 256,
    "folder": 256,
}
EMBEDDED = ("digits", "shapes")  # built in and held in memory: no --data-root, no loader processes
SPLITS = ("train", "val", "test", "pool")  # val: held out of train (`viscoin_cli.data.holdout`); pool: shapes'
LISTED_SPLITS = ("test", "pool")  # loaded whole, never split by --val-fraction
BOX_DATASETS = ("cub", "cars")  # layouts that ship bounding boxes


def check_bbox_crop(name: str, bbox_crop: bool) -> None:
    """--bbox-crop needs a layout with bounding boxes; trainers ask before they make a run folder."""
    if bbox_crop and name not in BOX_DATASETS:
        raise UserError(f"--bbox-crop applies to {' and '.join(BOX_DATASETS)}, not {name}")


def check_pool(name: str) -> None:
    """The pool split (`finetune-gan --pool`) is fresh draws of the shapes generator; no other dataset has one."""
    if name != "shapes":
        raise UserError(f"--pool applies to the shapes dataset (fresh draws of its generator), not {name}")


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    resolution: int | None = None,
    augment: bool = False,
    skip_bad_images: bool = False,
    bbox_crop: bool = False,
    val_fraction: float = 0.0,
) -> ImageDataset:
    """One split of a dataset, as [3, R, R] float images in [-1, 1] and int labels.

    `augment` adds the training augmentation (random crop + horizontal flip; digits, shapes: random translation).
    Unreadable images are a one-line error listing them, or skipped (and counted) with `skip_bad_images`.
    `val_fraction` holds out that fraction of each class of the training split for model selection: "train"
    is then the rest and "val" the held-out images (`viscoin_cli.data.holdout`); 0 leaves "train" whole.
    """
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "pool":
        check_pool(name)
    if split == "val" and val_fraction == 0:
        raise UserError("the val split is held out of train: it needs a --val-fraction above 0")
    resolution = _check_resolution(DEFAULT_RESOLUTION[name] if resolution is None else resolution)
    check_bbox_crop(name, bbox_crop)
    whole = _load_split(
        name, split if split in LISTED_SPLITS else "train", root, resolution, augment, skip_bad_images, bbox_crop
    )
    if split in LISTED_SPLITS or (split == "train" and val_fraction == 0):
        return whole
    from viscoin_cli.data.holdout import split_off

    return split_off(whole, split, val_fraction)


def _load_split(
    name: str,
    split: str,
    root: str | os.PathLike | None,
    resolution: int,
    augment: bool,
    skip_bad_images: bool,
    bbox_crop: bool,
) -> ImageDataset:
    """The whole train or test split as the dataset's layout lists it."""
    if name == "digits":
        from viscoin_cli.data.digits import DigitsDataset

        return DigitsDataset(split, resolution, augment)
    if name == "shapes":
        from viscoin_cli.data.shapes import ShapesDataset

        return ShapesDataset(split, resolution, augment)

    from pathlib import Path

    from viscoin_cli.data import cars, celebahq, cub, folder
    from viscoin_cli.data.images import ImageFileDataset

    if root is None or str(root) == "":
        raise UserError(f"--data-root is required for dataset {name!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist (or is not a folder)")
    layout = {"cub": cub, "cars": cars, "celebahq": celebahq, "folder": folder}[name]
    options: dict[str, bool] = {"bbox_crop": bbox_crop} if name in BOX_DATASETS else {}  # box layouts only
    if name == "folder":  # its class folders themselves may be unreadable or empty
        options["skip_bad_images"] = skip_bad_images
    listing = layout.list_split(root, split, **options)
    return ImageFileDataset(
        name=name,
        split=split,
        root=listing.root,
        files=listing.files,
        labels=listing.labels,
        class_names=listing.class_names,
        boxes=listing.boxes,
        resolution=resolution,
        augment=augment,
        skip_bad_images=skip_bad_images,
        attributes=listing.attributes,
        attribute_values=listing.attribute_values,
    )


def _check_resolution(resolution: object) -> int:
    """An int of at least 8 (numpy integers accepted; floats and bools are not)."""
    try:
        value = operator.index(resolution) if not isinstance(resolution, bool) else None
    except TypeError:
        value = None
    if value is None or value < 8:
        raise UserError(f"--resolution {resolution!r}: expected an integer of at least 8")
    return int(value)
