"""A plain folder: `root/train/<class>/*` and `root/test/<class>/*`, any format Pillow reads.

Class names are the sorted sub-folders of train/; a test class that train/ lacks is an error.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing
from viscoin_cli.errors import UserError


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {suffix.lower() for suffix in Image.registered_extensions()}


def _classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"{folder} is missing: a folder dataset needs train/<class>/ and test/<class>/")
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    class_names = _classes(root / "train")
    split_classes = _classes(root / split)
    unknown = sorted(set(split_classes) - set(class_names))
    if unknown:
        raise UserError(f"{root / split / unknown[0]}: class {unknown[0]!r} has no training images in {root / 'train'}")
    suffixes = _image_suffixes()
    files, labels = [], []
    for label, name in enumerate(class_names):
        folder = root / split / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes:
                files.append(path)
                labels.append(label)
    return Listing(root=root, files=files, labels=labels, class_names=class_names)
