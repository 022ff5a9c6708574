"""A plain folder: `root/train/<class>/...` and `root/test/<class>/...`, any format Pillow can open.

Class names are the sorted sub-folders of train/; a test class that train/ lacks is an error. Files are
found recursively inside a class folder; hidden files and folders (".name") are ignored. A folder that
cannot be read, or a training class folder without images, stops the command with the folder named; with
--skip-bad-images such a class is left out (and said so on stderr): half the data must never vanish silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from viscoin_cli.data.images import MAX_LISTED, Listing
from viscoin_cli.errors import UserError


def _image_suffixes() -> set[str]:
    """Extensions of the formats Pillow can open (some registered ones, like .pdf, are write-only)."""
    from PIL import Image

    return {suffix.lower() for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN}


def _classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise UserError(f"{folder} is missing: a folder dataset needs train/<class>/ and test/<class>/")
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


class _Unreadable(Exception):
    def __init__(self, folder: str, reason: str):
        super().__init__(folder, reason)
        self.folder, self.reason = folder, reason


def _walk_images(folder: Path, suffixes: set[str]) -> Iterator[Path]:
    """Image files under `folder`, recursively, hidden ones skipped; raises _Unreadable for a folder that
    cannot be listed (rglob would silently yield nothing from it)."""

    def refuse(err: OSError) -> None:
        raise _Unreadable(str(err.filename), err.strerror or type(err).__name__)

    for parent, folders, names in os.walk(folder, onerror=refuse, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            path = Path(parent) / name
            if not name.startswith(".") and path.suffix.lower() in suffixes and path.is_file():
                yield path


def _unreadable(err: _Unreadable) -> UserError:
    return UserError(f"{err.folder}: cannot read this folder ({err.reason}) (pass --skip-bad-images to skip it)")


def _class_images(folder: Path, suffixes: set[str], skip: bool) -> list[Path] | None:
    """Every image of one class folder; None when it cannot be read and `skip` (else a UserError)."""
    try:
        return list(_walk_images(folder, suffixes))
    except _Unreadable as err:
        if not skip:
            raise _unreadable(err) from None
        return None


def _has_images(folder: Path, suffixes: set[str], skip: bool) -> bool:
    """Whether `folder` holds an image (stops at the first); an unreadable one holds none when `skip`."""
    try:
        return next(_walk_images(folder, suffixes), None) is not None
    except _Unreadable as err:
        if not skip:
            raise _unreadable(err) from None
        return False


def list_split(root: Path, split: str, skip_bad_images: bool = False) -> Listing:
    all_classes = _classes(root / "train")
    if not all_classes:
        raise UserError(f"{root / 'train'} has no class sub-folders: expected train/<class>/<image files>")
    unknown = sorted(set(_classes(root / split)) - set(all_classes))
    if unknown:
        raise UserError(f"{root / split / unknown[0]}: class {unknown[0]!r} has no training images in {root / 'train'}")
    suffixes = _image_suffixes()
    class_names = _trained_classes(root, all_classes, suffixes, skip_bad_images, say=split == "train")
    files, labels, skipped = [], [], []
    for label, name in enumerate(class_names):
        folder = root / split / name
        found = _class_images(folder, suffixes, skip_bad_images) if folder.is_dir() else []
        if found is None:
            skipped.append(str(folder))
        files += found or []
        labels += [label] * len(found or [])
    if skipped:
        sys.stderr.write(f"warning: skipped {len(skipped)} unreadable folder(s) of the {split} split: {skipped[0]}\n")
    return Listing(root=root, files=files, labels=labels, class_names=class_names)


def _trained_classes(root: Path, names: list[str], suffixes: set[str], skip: bool, say: bool) -> list[str]:
    """The classes with training images. A class folder of train/ without any is an error (a model would
    learn a class it never saw), or left out with `skip`, said on stderr when `say` (once per command)."""
    empty = [name for name in names if not _has_images(root / "train" / name, suffixes, skip)]
    if empty and not skip:
        raise UserError(
            f"{root / 'train' / empty[0]}: class folder without images (pass --skip-bad-images to leave the class out)"
        )
    if empty and say:
        shown = ", ".join(empty[:MAX_LISTED])
        sys.stderr.write(f"warning: left out {len(empty)} class(es) without readable training images: {shown}\n")
    return [name for name in names if name not in empty]


def list_image_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (by extension, recursively, hidden ones skipped), in sorted order; a
    folder that cannot be listed is a one-line error."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    try:
        return list(_walk_images(folder, _image_suffixes()))
    except _Unreadable as err:
        raise UserError(f"{err.folder}: cannot read this folder ({err.reason})") from None
