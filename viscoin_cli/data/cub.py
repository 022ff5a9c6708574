"""CUB-200-2011: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`, `classes.txt`, `images/`.

`root` may be the CUB_200_2011 folder or its parent. `bounding_boxes.txt` ("id x y w h", 0-based pixels)
is read only for `--bbox-crop`.

Bird attributes, when their files are there, become the split's attribute labels for `evaluate ground-truth`:
`attributes/image_attribute_labels.txt` ("image_id attribute_id is_present certainty_id time", 312 rows per
image; a few rows of the released file carry an extra column, so only the first three are read) and
`attributes.txt` ("attribute_id group::value", e.g. "1 has_bill_shape::curved_(up_or_down)"; the archive puts
it beside the CUB_200_2011 folder, so the parent is searched too). Each group (bill_shape, wing_color, ... 28 of
them) is one multi-label attribute: an image may show several of its values or none, as the annotators marked
them present (`is_present`, whatever their certainty).
"""

from __future__ import annotations

from pathlib import Path

import torch

from viscoin_cli.data.images import Listing, parsing, read_table, require_folder
from viscoin_cli.errors import UserError

LAYOUT = "CUB-200-2011"
ATTRIBUTE_LABELS = Path("attributes") / "image_attribute_labels.txt"
# Parsed label files, keyed by (path, size, mtime): the train and test splits read the same 3.7M-row file.
_PRESENT_CACHE: dict[tuple[str, int, int], tuple[dict[str, int], dict[int, int], torch.Tensor]] = {}


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
    attributes, attribute_values = read_attributes(root, ids)
    return Listing(
        root=root,
        files=[image_dir / paths[image_id] for image_id in ids],
        labels=[labels[image_id] for image_id in ids],
        class_names=[class_name(name) for _, name in classes],
        boxes=boxes,
        attributes=attributes,
        attribute_values=attribute_values,
    )


def attribute_names_file(root: Path) -> Path | None:
    """attributes.txt: in the CUB_200_2011 folder, its attributes/ folder, or beside it (where the archive puts it)."""
    for candidate in (root / "attributes.txt", root / "attributes" / "attributes.txt", root.parent / "attributes.txt"):
        if candidate.is_file():
            return candidate
    return None


def read_attributes(root: Path, ids: list[str]) -> tuple[dict[str, torch.Tensor] | None, dict[str, list[str]] | None]:
    """Per attribute group, [len(ids), values] uint8 presence labels of the images `ids`, and each group's value
    names; (None, None) when the dataset folder has no attribute files."""
    labels_path, names_path = root / ATTRIBUTE_LABELS, attribute_names_file(root)
    if not labels_path.is_file() or names_path is None:
        return None, None
    groups: dict[str, list[str]] = {}
    column_of: dict[int, tuple[str, int]] = {}  # attribute id -> (group, value index)
    with parsing(names_path):
        for attribute_id, name in sorted(read_table(names_path, 2, LAYOUT), key=lambda row: int(row[0])):
            group, separator, value = name.strip().partition("::")
            if not separator:
                raise UserError(f"{names_path}: malformed ({name.strip()!r} is not 'group::value')")
            group = group.removeprefix("has_")
            column_of[int(attribute_id)] = (group, len(groups.setdefault(group, [])))
            groups[group].append(value)
    row_of, attribute_column, present = _present_matrix(labels_path)
    missing = [image_id for image_id in ids if image_id not in row_of]
    if missing:
        raise UserError(f"{labels_path}: no attribute labels for image id {missing[0]}")
    unknown = sorted(set(attribute_column) - set(column_of))
    if unknown:
        raise UserError(f"{labels_path}: attribute id {unknown[0]} is not in {names_path}")
    chosen = present[torch.tensor([row_of[image_id] for image_id in ids], dtype=torch.long)]
    attributes = {group: torch.zeros(len(ids), len(names), dtype=torch.uint8) for group, names in groups.items()}
    for attribute_id, column in attribute_column.items():
        group, index = column_of[attribute_id]
        attributes[group][:, index] = chosen[:, column]
    return attributes, groups


def _present_matrix(path: Path) -> tuple[dict[str, int], dict[int, int], torch.Tensor]:
    """image_attribute_labels.txt as (image id -> row, attribute id -> column, [images, attributes] uint8
    is_present), read once per file; one pass over the lines without holding them (the real file has 3.7M)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _PRESENT_CACHE:
        row_of: dict[str, int] = {}
        column_of: dict[int, int] = {}
        cells: list[tuple[int, int]] = []
        with open(path) as lines, parsing(path):
            for number, line in enumerate(lines, 1):
                fields = line.split(None, 3)
                if not fields:
                    continue
                if len(fields) < 3:
                    raise UserError(f"{path}:{number}: expected at least 3 columns, found {len(fields)}")
                image_id, attribute_id, is_present = fields[0], int(fields[1]), fields[2]
                row = row_of.setdefault(image_id, len(row_of))
                column = column_of.setdefault(attribute_id, len(column_of))
                if is_present == "1":
                    cells.append((row, column))
                elif is_present != "0":
                    raise UserError(f"{path}:{number}: is_present must be 0 or 1, found {is_present!r}")
        present = torch.zeros(len(row_of), len(column_of), dtype=torch.uint8)
        if cells:
            index = torch.tensor(cells, dtype=torch.long)
            present[index[:, 0], index[:, 1]] = 1
        _PRESENT_CACHE.clear()  # one dataset at a time: never grow with every file ever read
        _PRESENT_CACHE[key] = (row_of, column_of, present)
    return _PRESENT_CACHE[key]
