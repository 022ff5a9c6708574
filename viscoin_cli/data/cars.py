"""Stanford Cars: `cars_train/`, `cars_test/` and the devkit's `cars_meta.mat`, `cars_train_annos.mat`,
`cars_test_annos_withlabels.mat` (read with scipy). The .mat files may sit in `root`, `root/devkit`, or
torchvision's `root/stanford_cars/...` layout. Boxes are 1-based inclusive pixel coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from viscoin_cli.data.images import Listing, parsing, require_folder
from viscoin_cli.errors import UserError

ANNOTATIONS = {"train": "cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"}
LAYOUT = "Stanford Cars devkit"


def _bases(root: Path) -> list[Path]:
    return [root, root / "stanford_cars"]


def _find(root: Path, name: str) -> Path:
    for base in _bases(root):
        for folder in (base, base / "devkit"):
            if (folder / name).is_file():
                return folder / name
    raise UserError(f"{root / name} is missing (also looked in devkit/ and stanford_cars/): not a {LAYOUT} folder")


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except Exception as err:
        raise UserError(f"{path}: not a readable .mat file ({err})") from None


def _records(path: Path) -> np.ndarray:
    records = _load_mat(path).get("annotations")
    if records is None:
        raise UserError(f"{path}: no 'annotations' struct")
    records = np.asarray(records).reshape(-1)  # squeeze_me turns a single record into a 0-d array
    fields = set(records.dtype.names or ())
    if "class" not in fields:
        raise UserError(f"{path}: annotations without a 'class' field (use the 'withlabels' file)")
    needed = {"fname", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"} - fields
    if needed:
        raise UserError(f"{path}: annotations lack the fields {', '.join(sorted(needed))}")
    return records


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    meta_path = _find(root, "cars_meta.mat")
    meta = _load_mat(meta_path)
    if "class_names" not in meta:
        raise UserError(f"{meta_path}: no 'class_names' field")
    annotations_path = _find(root, ANNOTATIONS[split])
    records = _records(annotations_path)
    folder = f"cars_{split}"
    image_dir = next((base / folder for base in _bases(root) if (base / folder).is_dir()), root / folder)
    require_folder(image_dir, LAYOUT)
    files, labels, boxes = [], [], []
    with parsing(annotations_path):
        for record in records:
            files.append(image_dir / str(record["fname"]))
            labels.append(int(record["class"]) - 1)
            x1, y1, x2, y2 = (float(record[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
            boxes.append((x1 - 1, y1 - 1, x2, y2))  # 1-based inclusive -> 0-based, right/bottom exclusive
    return Listing(
        root=image_dir.parent,
        files=files,
        labels=labels,
        class_names=[str(name) for name in np.asarray(meta["class_names"]).reshape(-1)],
        boxes=boxes if bbox_crop else None,
    )
