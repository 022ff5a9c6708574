"""CUB-200-2011: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`, `classes.txt`, `images/`.

`root` may be the CUB_200_2011 folder or its parent. `bounding_boxes.txt` ("id x y w h", 0-based pixels)
is read only for `--bbox-crop`.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing, parsing, read_table, require_folder
from viscoin_cli.errors import UserError

LAYOUT = "CUB-200-2011"


def class_name(raw: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return raw.split(".", 1)[-1].replace("_", " ")


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        root = root / "CUB_200_2011"
    paths = dict(read_table(root / "images.txt", 2, LAYOUT))
    labels_path, split_path = root / "image_class_labels.txt", root / "train_test_split.txt"
    with parsing(labels_path):
        labels = {image_id: int(label) - 1 for image_id, label in read_table(labels_path, 2, LAYOUT)}
    is_train = {image_id: flag.strip() == "1" for image_id, flag in read_table(split_path, 2, LAYOUT)}
    with parsing(root / "classes.txt"):
        classes = sorted(read_table(root / "classes.txt", 2, LAYOUT), key=lambda row: int(row[0]))
    image_dir = require_folder(root / "images", LAYOUT)
    ids = [image_id for image_id in paths if is_train.get(image_id) == (split == "train")]
    missing = [image_id for image_id in ids if image_id not in labels]
    if missing:
        raise UserError(f"{labels_path}: no label for image id {missing[0]}")
    boxes = None
    if bbox_crop:
        boxes_path = root / "bounding_boxes.txt"
        if not boxes_path.is_file():
            raise UserError(f"--bbox-crop needs {boxes_path}, which is missing")
        with parsing(boxes_path):
            by_id = {}
            for image_id, values in read_table(boxes_path, 2, LAYOUT):
                x, y, w, h = (float(v) for v in values.split())
                by_id[image_id] = (x, y, x + w, y + h)
            boxes = [by_id[image_id] for image_id in ids]
    return Listing(
        root=root,
        files=[image_dir / paths[image_id] for image_id in ids],
        labels=[labels[image_id] for image_id in ids],
        class_names=[class_name(name) for _, name in classes],
        boxes=boxes,
    )
