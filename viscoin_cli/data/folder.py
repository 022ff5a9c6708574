"""A plain folder: `root/train/<class>/...` and `root/test/<class>/...`, any format Pillow can open.

Class names are the sorted sub-folders of train/; a test class that train/ lacks is an error. Files are
found recursively inside a class folder; hidden files and folders (".name") are ignored.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing
from viscoin_cli.errors import UserError


def _image_suffixes() -> set[str]:
    """Extensions of the formats Pillow can open (some registered ones, like .pdf, are write-only)."""
    from PIL import Image

    return {suffix.lower() for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN}


def _classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"{folder} is missing: a folder dataset needs train/<class>/ and test/<class>/")
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path, suffixes: set[str]) -> list[Path]:
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in suffixes
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]


def list_split(root: Path, split: str) -> Listing:
    class_names = _classes(root / "train")
    if not class_names:
        raise UserError(f"{root / 'train'} has no class sub-folders: expected train/<class>/<image files>")
    unknown = sorted(set(_classes(root / split)) - set(class_names))
    if unknown:
        raise UserError(f"{root / split / unknown[0]}: class {unknown[0]!r} has no training images in {root / 'train'}")
    suffixes = _image_suffixes()
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = _images(root / split / name, suffixes) if (root / split / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    return Listing(root=root, files=files, labels=labels, class_names=class_names)
