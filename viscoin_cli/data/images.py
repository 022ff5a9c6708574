"""The dataset classes and transforms shared by every layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from viscoin_cli.errors import UserError

MAX_LISTED = 5  # bad files named in an error message


@dataclass
class Listing:
    """What a layout module finds for one split: files, labels, class names, optional boxes."""

    root: Path
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    boxes: list[tuple[float, float, float, float]] | None = None  # (left, top, right, bottom) pixels


class ImageDataset(Dataset):
    """Common interface: `dataset[i] -> (image [3, R, R] float32 in [-1, 1], label int)`."""

    name: str
    split: str
    class_names: list[str]
    resolution: int
    labels: list[int]
    root: str | None
    channels = 3
    skipped = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def facts(self) -> dict[str, Any]:
        """What a checkpoint records about the data it was trained on."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "channels": self.channels,
        }


def image_transform(resolution: int, augment: bool, flip: bool = True) -> v2.Compose:
    """PIL image -> [3, R, R] in [-1, 1]: shorter side to R and centre crop, or (augment) shorter side to
    8/7·R, random crop and horizontal flip."""
    steps: list[Any] = [v2.ToImage()]
    if augment:
        steps += [v2.Resize(round(resolution * 8 / 7), antialias=True), v2.RandomCrop(resolution)]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps += [v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


def find_bad_images(files: list[Path]) -> list[Path]:
    """Files that are missing or whose header Pillow cannot parse (cheap: nothing is decoded)."""
    bad = []
    for path in files:
        try:
            with Image.open(path) as picture:
                picture.verify()
        except Exception:  # Pillow raises many types for broken files (OSError, SyntaxError, ValueError, ...)
            bad.append(path)
    return bad


class ImageFileDataset(ImageDataset):
    """Images read from files with Pillow (every layout but digits)."""

    def __init__(
        self,
        *,
        name: str,
        split: str,
        root: Path,
        files: list[Path],
        labels: list[int],
        class_names: list[str],
        boxes: list[tuple[float, float, float, float]] | None,
        resolution: int,
        augment: bool,
        skip_bad_images: bool,
    ):
        self.name, self.split, self.root = name, split, str(root)
        self.class_names, self.resolution = list(class_names), resolution
        bad = set(find_bad_images(files))
        if bad and not skip_bad_images:
            shown = sorted(bad)[:MAX_LISTED]
            names = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in shown)
            more = f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
            raise UserError(
                f"{len(bad)} unreadable images in {root}: {names}{more} (pass --skip-bad-images to skip them)"
            )
        keep = [i for i, path in enumerate(files) if path not in bad]
        self.files = [files[i] for i in keep]
        self.labels = [int(labels[i]) for i in keep]
        self.boxes = [boxes[i] for i in keep] if boxes is not None else None
        self.skipped = len(bad)
        self.skip_bad_images = skip_bad_images
        if not self.files:
            raise UserError(f"the {split} split of {name} in {root} is empty")
        self.transform = image_transform(resolution, augment)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.files)):
            position = (index + offset) % len(self.files)
            try:
                picture = self._load(position)
            except Exception as err:  # damage the header check could not see (e.g. a truncated JPEG)
                if not self.skip_bad_images:
                    raise UserError(
                        f"{self.files[position]}: cannot decode image ({err}) (pass --skip-bad-images to skip it)"
                    ) from None
                continue  # skipping: serve the next readable image in its place
            return self.transform(picture), self.labels[position]
        raise UserError(f"no image of the {self.split} split of {self.name} in {self.root} can be decoded")

    def _load(self, index: int) -> Image.Image:
        with Image.open(self.files[index]) as picture:
            picture = picture.convert("RGB")
        if self.boxes is not None:
            left, top, right, bottom = self.boxes[index]
            width, height = picture.size
            box = (max(0, int(left)), max(0, int(top)), min(width, int(right)), min(height, int(bottom)))
            if box[2] > box[0] and box[3] > box[1]:
                picture = picture.crop(box)
        return picture


def read_table(path: Path, columns: int) -> list[list[str]]:
    """Whitespace-separated rows of a layout's text file, with a one-line error when missing or malformed."""
    if not path.is_file():
        raise UserError(f"{path} is missing: not a {path.parent.name} dataset folder in the expected layout")
    rows = [line.split(maxsplit=columns - 1) for line in path.read_text().splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):
        if len(row) < columns:
            raise UserError(f"{path}:{number}: expected {columns} columns")
    return rows
