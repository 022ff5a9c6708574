"""Stanford Cars: `cars_train/`, `cars_test/` and the devkit's `cars_meta.mat`, `cars_train_annos.mat`,
`cars_test_annos_withlabels.mat` (read with scipy). The .mat files may sit in `root`, `root/devkit`, or
torchvision's `root/stanford_cars/...` layout. Boxes are 1-based inclusive pixel coordinates.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing
from viscoin_cli.errors import UserError

ANNOTATIONS = {"train": "cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"}


def _find(root: Path, name: str) -> Path:
    for folder in (root, root / "devkit", root / "stanford_cars", root / "stanford_cars" / "devkit"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{name} is missing under {root}: not a Stanford Cars folder in the devkit layout")


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except Exception as err:
        raise UserError(f"{path}: not a readable .mat file ({err})") from None


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    meta = _load_mat(_find(root, "cars_meta.mat"))
    annotations_path = _find(root, ANNOTATIONS[split])
    records = _load_mat(annotations_path).get("annotations")
    if records is None:
        raise UserError(f"{annotations_path}: no 'annotations' struct")
    records = records.reshape(-1)
    if "class" not in (records.dtype.names or ()):
        raise UserError(f"{annotations_path}: annotations without a 'class' field (use the 'withlabels' file)")
    image_dir = next(
        (d for d in (root / f"cars_{split}", root / "stanford_cars" / f"cars_{split}") if d.is_dir()),
        root / f"cars_{split}",
    )
    files, labels, boxes = [], [], []
    for record in records:
        files.append(image_dir / str(record["fname"]))
        labels.append(int(record["class"]) - 1)
        x1, y1, x2, y2 = (float(record[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        boxes.append((x1 - 1, y1 - 1, x2, y2))  # 1-based inclusive -> 0-based half-open
    return Listing(
        root=image_dir.parent,
        files=files,
        labels=labels,
        class_names=[str(name) for name in meta["class_names"].reshape(-1)],
        boxes=boxes if bbox_crop else None,
    )
