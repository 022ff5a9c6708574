"""The dataset classes, transforms, bad-image scan and layout-file parsing shared by every layout."""

from __future__ import annotations

import math
import platform
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from viscoin_cli.errors import UserError

MAX_LISTED = 5  # bad files named in an error message
SCAN_THREADS = 8  # the header scan waits on the disk (or a network share), not the CPU
# Pillow warns (a multi-line Python warning) about images above MAX_IMAGE_PIXELS and refuses those above twice
# that. The warning is ours to give, in one line per scan (see `warn_large_images`); the refusal
# stays and makes such a file unreadable.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in 0-based pixels, right/bottom exclusive


@dataclass
class Listing:
    """What a layout module finds for one split: files, labels, class names, optional boxes and optional
    per-image attribute labels (name -> [N] value indices or [N, V] 0/1, with each attribute's value names)."""

    root: Path
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    boxes: list[Box] | None = None
    attributes: dict[str, torch.Tensor] | None = None
    attribute_values: dict[str, list[str]] | None = None


class ImageDataset(Dataset):
    """Common interface: `dataset[i] -> (image [3, R, R] float32 in [-1, 1], label int)`."""

    name: str
    split: str
    class_names: list[str]
    resolution: int
    labels: list[int]
    root: str | None
    augment: bool = False
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


def load_size(resolution: int, augment: bool) -> int:
    """The shorter side an image is resized to before cropping: 8/7·R leaves room for random crops."""
    return round(resolution * 8 / 7) if augment else resolution


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) with the shorter side scaled to `shorter`, the longer one rounded down (torchvision's rule)."""
    if width <= height:
        return int(shorter * height / width), shorter
    return shorter, int(shorter * width / height)


def _native_uint8_resize() -> bool:
    """Whether PyTorch has a vectorised uint8 bilinear kernel here (torchvision resizes uint8 directly then)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def resize_shorter(picture: Image.Image, shorter: int) -> torch.Tensor:
    """8-bit PIL image (RGB or L) -> uint8 tensor [C, H', W'], antialiased bilinear, shorter side `shorter`.

    Bit for bit what torchvision's v2 `ToImage` + `Resize(shorter, antialias=True)` give: the uint8 pixels are
    resized as uint8 where PyTorch has a native uint8 kernel, else as float32 and rounded back.
    """
    pixels = torch.from_numpy(np.array(picture, dtype=np.uint8, copy=True))  # [H, W, C] (or [H, W])
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    size = resized_size(height, width, shorter)
    if size == (height, width):
        return pixels.permute(2, 0, 1)
    # [1, C, H, W] in channels-last memory, as interpolate wants it to keep that layout for its output
    image = pixels.as_strided((1, channels, height, width), (pixels.numel(), 1, width * channels, channels))
    if _native_uint8_resize():
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return image.round_().to(torch.uint8)[0]


class ImageTransform:
    """PIL image -> plain tensor [3, R, R] in [-1, 1]: shorter side to R and centre crop, or (augment)
    shorter side to 8/7·R, random crop and (with `flip`) a random horizontal flip.

    The same steps, random draws and numbers as torchvision's v2 pipeline ToImage, Resize(antialias=True),
    CenterCrop | RandomCrop + RandomHorizontalFlip, ToDtype(float32, scale=True), Normalize(0.5, 0.5),
    without importing torchvision.
    """

    def __init__(self, resolution: int, augment: bool, flip: bool = True):
        self.resolution, self.augment, self.flip = resolution, augment, flip
        self.load_size = load_size(resolution, augment)

    def __call__(self, picture: Image.Image) -> torch.Tensor:
        picture = picture if picture.mode == "RGB" else picture.convert("RGB")  # callers pass RGB already
        image = resize_shorter(picture, self.load_size)  # uint8 [3, H, W]
        r = self.resolution
        height, width = image.shape[-2:]
        if self.augment:
            top = int(torch.randint(0, height - r + 1, size=())) if height > r else 0
            left = int(torch.randint(0, width - r + 1, size=())) if width > r else 0
        else:
            top, left = round((height - r) / 2.0), round((width - r) / 2.0)  # halves to even, as torchvision
        image = image[:, top : top + r, left : left + r]
        if self.augment and self.flip and torch.rand(1) < 0.5:
            image = image.flip(-1)
        return image.to(torch.float32).mul_(1.0 / 255).sub_(0.5).div_(0.5)


def image_transform(resolution: int, augment: bool, flip: bool = True) -> ImageTransform:
    """PIL image -> plain tensor [3, R, R] in [-1, 1] (see `ImageTransform`)."""
    return ImageTransform(resolution, augment, flip)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header, or None when Pillow cannot parse it (or the file is missing)."""
    try:
        with Image.open(path) as picture:
            size = picture.size
            picture.verify()  # header and structure only: no pixel decoding
    except Exception:  # Pillow raises many types for broken files (OSError, SyntaxError, ValueError, ...)
        return None
    return size


def warn_large_images(sizes: list[tuple[Path, tuple[int, int]]]) -> None:
    """One stderr line for the images Pillow would warn about (decoding each takes hundreds of MB)."""
    large = [(path, size) for path, size in sizes if size[0] * size[1] > Image.MAX_IMAGE_PIXELS]
    if large:
        path, (width, height) = large[0]
        noun = "image is" if len(large) == 1 else "images are"
        sys.stderr.write(
            f"warning: {len(large)} {noun} above {Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (e.g. {path}, "
            f"{width}×{height}): each takes ~{width * height * 3 / 2**20:.0f} MB of memory to decode\n"
        )


def find_bad_images(files: list[Path]) -> list[Path]:
    """Files that are missing or whose header Pillow cannot parse, in listing order (very large images are
    reported in one warning line)."""
    if not files:
        return []
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, len(files))) as pool:
        sizes = list(pool.map(_image_size, files))
    warn_large_images([(path, size) for path, size in zip(files, sizes, strict=True) if size is not None])
    return [path for path, size in zip(files, sizes, strict=True) if size is None]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _crop_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Whole pixels covering `box`, clamped to the image; None when nothing of it is inside."""
    left, top = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    right, bottom = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return (left, top, right, bottom) if right > left and bottom > top else None


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
        boxes: list[Box] | None,
        resolution: int,
        augment: bool,
        skip_bad_images: bool,
        attributes: dict[str, torch.Tensor] | None = None,
        attribute_values: dict[str, list[str]] | None = None,
    ):
        self.name, self.split, self.root = name, split, str(root)
        self.class_names, self.resolution, self.augment = list(class_names), resolution, augment
        out_of_range = [
            (path, label) for path, label in zip(files, labels, strict=True) if not 0 <= label < len(class_names)
        ]
        if out_of_range:
            path, label = out_of_range[0]
            raise UserError(
                f"{path}: class number {label + 1} is beyond the {len(class_names)} classes of {name} in {root}"
            )
        bad = find_bad_images(files)
        if bad and not skip_bad_images:
            names = ", ".join(_shown(path, root) for path in bad[:MAX_LISTED])
            more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            noun = "image" if len(bad) == 1 else "images"
            raise UserError(
                f"{len(bad)} unreadable {noun} in {root}: {names}{more} (pass --skip-bad-images to skip them)"
            )
        bad_set = set(bad)
        keep = [i for i, path in enumerate(files) if path not in bad_set]
        self.files = [files[i] for i in keep]
        self.labels = [int(labels[i]) for i in keep]
        self.boxes = [boxes[i] for i in keep] if boxes is not None else None
        if attributes and attribute_values:  # the ground-truth metric's labels follow the images kept
            rows = torch.tensor(keep, dtype=torch.long)
            self.attributes = {name: torch.as_tensor(column)[rows] for name, column in attributes.items()}
            self.attribute_values = {name: list(names) for name, names in attribute_values.items()}
        self.skipped = len(bad)
        self.skip_bad_images = skip_bad_images
        if not self.files:
            skipped = f" ({len(bad)} unreadable images skipped)" if bad else ""
            raise UserError(f"the {split} split of {name} in {root} is empty{skipped}")
        self.load_size = load_size(resolution, augment)
        self.transform = image_transform(resolution, augment)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.files)):
            position = (index + offset) % len(self.files)
            try:
                picture = self._load(position)
            except Exception as err:  # damage the header check could not see (e.g. a truncated JPEG)
                if not self.skip_bad_images:
                    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise UserError(
                        f"{self.files[position]}: cannot decode image ({reason}) (pass --skip-bad-images to skip it)"
                    ) from None
                continue  # skipping: serve the next readable image in its place
            return self.transform(picture), self.labels[position]
        raise UserError(f"no image of the {self.split} split of {self.name} in {self.root} can be decoded")

    def _load(self, index: int) -> Image.Image:
        """Decodes one file as RGB (`as_rgb`), cropped to its box. Large JPEGs are decoded at a reduced scale (libjpeg's
        DCT scaling) when the region still covers the load size: a 1024 px face at R=256 decodes ~8× faster."""
        with Image.open(self.files[index]) as picture:
            width, height = picture.size
            box = _crop_box(self.boxes[index], width, height) if self.boxes is not None else None
            left, top, right, bottom = box or (0, 0, width, height)
            shorter = min(right - left, bottom - top)
            if shorter >= 2 * self.load_size:  # draft() is a no-op for formats other than JPEG
                target = (math.ceil(width * self.load_size / shorter), math.ceil(height * self.load_size / shorter))
                picture.draft(None, target)
            picture = as_rgb(picture)
        if box is not None:
            sx, sy = picture.width / width, picture.height / height
            scaled = _crop_box((left * sx, top * sy, right * sx, bottom * sy), picture.width, picture.height)
            picture = picture.crop(scaled) if scaled is not None else picture
        return picture


def read_table(path: Path, columns: int, layout: str) -> list[list[str]]:
    """Whitespace-separated rows of a layout's text file (the last column keeps its spaces), with a one-line
    error when the file is missing or a row is short."""
    if not path.is_file():
        raise UserError(f"{path} is missing: not a {layout} folder in the expected layout")
    rows = [line.split(maxsplit=columns - 1) for line in path.read_text().splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):
        if len(row) < columns:
            raise UserError(f"{path}:{number}: expected {columns} columns, found {len(row)}")
    return rows


def require_folder(path: Path, layout: str) -> Path:
    """`path`, or a one-line error naming it when the layout's image folder is absent."""
    if not path.is_dir():
        raise UserError(f"{path} is missing: not a {layout} folder in the expected layout")
    return path


@contextmanager
def parsing(path: Path) -> Iterator[None]:
    """Turns a malformed value met while reading `path` (a bad number, a missing id) into a one-line error."""
    try:
        yield
    except (ValueError, IndexError, KeyError, TypeError) as err:
        detail = f"no entry for {err}" if isinstance(err, KeyError) else str(err).strip().splitlines()[0]
        raise UserError(f"{path}: malformed ({detail})") from None


class UnreadableImage(Exception):
    """A file that is not an image Pillow can decode; `str()` is the reason, in a few words."""


def as_rgb(picture: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, the one conversion every dataset and user image goes through.

    16-bit and 32-bit integer gray (I;16, I) is scaled by 1/257 rather than clipped at 255; float gray (F) in
    [0, 1] is scaled to [0, 255]; an alpha channel (RGBA, LA, PA, a palette with transparency) is composited
    over black, which is where a premultiplied transparent pixel sits, so the colour left under transparent
    pixels by the program that saved the file does not reach the model; CMYK, YCbCr, LAB, HSV, palettes and
    1-bit images use Pillow's conversion. The result is always a new, decoded image (an RGB file's too), so it
    outlives the file it was read from.
    """
    mode = picture.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(picture, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257
        elif mode == "F" and values.max(initial=0) <= 1:
            values = values * 255
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if "A" in picture.getbands() or "a" in picture.getbands() or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return picture.convert("RGB")


def read_rgb(path: Path) -> Image.Image:
    """The decoded file as RGB (`as_rgb`), or UnreadableImage with the reason."""
    try:
        with Image.open(path) as picture:
            picture.load()
            return as_rgb(picture)
    except FileNotFoundError:
        raise UnreadableImage("no such file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder") from None
    except Image.DecompressionBombError:
        raise UnreadableImage(f"above Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx") from None
    except Exception:  # Pillow raises many types for broken files
        raise UnreadableImage("not a readable image") from None


def image_tensor(picture: Image.Image, transform: ImageTransform, channels: int) -> torch.Tensor:
    """An RGB picture through a split's transform, with the model's channel count."""
    image = transform(picture)
    return image[:1] if channels == 1 else image


def load_image_files(paths: list[Path], resolution: int, channels: int = 3) -> torch.Tensor:
    """User images -> [N, channels, R, R] in [-1, 1], resized and centre-cropped like a test split.

    Any mode Pillow reads is brought to RGB as the datasets do (`as_rgb`). Every missing or unreadable file
    is named in one error.
    """
    transform = image_transform(resolution, augment=False)
    images: list[torch.Tensor] = []
    bad: list[str] = []
    warn_large_images([(path, size) for path in paths if (size := _image_size(path)) is not None])
    for path in paths:
        try:
            images.append(image_tensor(read_rgb(path), transform, channels))
        except UnreadableImage as reason:
            bad.append(f"{path} ({reason})")
    if bad:
        names = ", ".join(bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise UserError(f"cannot read {len(bad)} image{'s' if len(bad) > 1 else ''}: {names}{more}")
    return torch.stack(images)
