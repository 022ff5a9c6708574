"""CUB-200-2011: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`, `classes.txt`, `images/`.

`root` may be the CUB_200_2011 folder or its parent. `bounding_boxes.txt` ("id x y w h") is read for
`--bbox-crop`.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing, read_table
from viscoin_cli.errors import UserError


def class_name(raw: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return raw.split(".", 1)[-1].replace("_", " ")


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        root = root / "CUB_200_2011"
    paths = dict(read_table(root / "images.txt", 2))
    labels = {image_id: int(label) - 1 for image_id, label in read_table(root / "image_class_labels.txt", 2)}
    is_train = {image_id: flag.strip() == "1" for image_id, flag in read_table(root / "train_test_split.txt", 2)}
    classes = sorted(read_table(root / "classes.txt", 2), key=lambda row: int(row[0]))
    boxes_by_id = None
    if bbox_crop:
        if not (root / "bounding_boxes.txt").is_file():
            raise UserError(f"--bbox-crop needs {root / 'bounding_boxes.txt'}, which is missing")
        boxes_by_id = {}
        for image_id, values in read_table(root / "bounding_boxes.txt", 2):
            x, y, w, h = (float(v) for v in values.split())
            boxes_by_id[image_id] = (x, y, x + w, y + h)
    ids = [image_id for image_id in paths if is_train.get(image_id) == (split == "train")]
    missing = [image_id for image_id in ids if image_id not in labels]
    if missing:
        raise UserError(f"{root / 'image_class_labels.txt'}: no label for image id {missing[0]}")
    return Listing(
        root=root,
        files=[root / "images" / paths[image_id] for image_id in ids],
        labels=[labels[image_id] for image_id in ids],
        class_names=[class_name(name) for _, name in classes],
        boxes=[boxes_by_id[image_id] for image_id in ids] if boxes_by_id is not None else None,
    )
