"""An embedded synthetic dataset whose generating factors are known: coloured shapes on a gray background.

Each image shows one object, drawn with six categorical attributes (`ATTRIBUTES`): shape (circle, square,
triangle, cross), colour (red, green, blue, yellow, with a small hue/brightness jitter), pattern (solid, or
horizontal stripes of the background colour), size (≈40% or ≈62% of the image), position (centre in the left
or right half, with vertical jitter) and background (dark or light gray, with slight noise). The class is a
rule over two of them, shape × colour group (warm: red, yellow; cool: green, blue), so 8 classes
("circle-warm", "circle-cool", ...); pattern, size, position, background and which colour of the group are
nuisance, drawn uniformly and independently of the class. Concept methods can then be scored against the
factors (`dataset.attributes`).

Sizes are fixed (train 4000, test 1000, every class exactly 1/8 of a split) and so are the images: each is
drawn from its own generator seeded by (SEED, split, index), using only uniform draws (whose streams numpy
keeps stable), at 4× the resolution with Pillow, then box-averaged down for anti-aliasing. Nothing is
downloaded or written; a process generates a split once (`CACHE`), in about a second at 32 px. A third
split, "pool" (50 000 images, seeded apart from train and test), exists for the generator: with that many
fresh draws its discriminator cannot memorise the reals, so it trains without augmentation (`finetune-gan
--pool`); the classifier and the concept models keep the 4000-image train split.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from viscoin_cli.data.images import ImageDataset

SEED = 20_260_613
SPLIT_SIZES = {"train": 4000, "test": 1000, "pool": 50_000}  # pool: fresh draws for the GAN (`finetune-gan --pool`)
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
GROUPS = ("warm", "cool")
GROUP_COLOURS = {"warm": ("red", "yellow"), "cool": ("green", "blue")}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "pattern": ("solid", "striped"),
    "size": ("small", "large"),
    "position": ("left", "right"),
    "background": ("dark", "light"),
}
CLASS_NAMES = tuple(f"{shape}-{group}" for shape in SHAPES for group in GROUPS)  # label = 2·shape + group
RGB = {  # fill colours in [0, 1], saturated so they stay apart from the grays and each other at 32 px
    "red": (0.88, 0.14, 0.12),
    "green": (0.16, 0.74, 0.22),
    "blue": (0.18, 0.36, 0.95),
    "yellow": (0.96, 0.86, 0.12),
}
GRAY = {"dark": 0.2, "light": 0.78}
DIAMETER = {"small": 0.40, "large": 0.62}  # of the image side; large is below 65% so that both halves fit it
SIZE_JITTER = 0.03  # relative
MARGIN = 0.05  # of the image side, kept free around the object: the corners stay background
MIN_OFFSET = 0.10  # of the image side: the object's centre is at least this far from the vertical midline
NOISE = 0.03  # background noise amplitude (uniform, in [0, 1] units)
SUPERSAMPLE = 4
STRIPE_PERIOD = 3 / 16  # of the image side (6 px at 32 px); a stripe of background colour takes a third of it
CACHE: dict[tuple[str, int], tuple[torch.Tensor, list[int], dict[str, torch.Tensor]]] = {}


def _pick(u: float, count: int) -> int:
    return min(int(u * count), count - 1)


def _class_labels(split: str) -> np.ndarray:
    """Each class equally often, in a fixed shuffled order (a sort by uniform keys: no shuffle algorithm)."""
    n = SPLIT_SIZES[split]
    keys = np.random.default_rng([SEED, list(SPLIT_SIZES).index(split)]).random(n)
    return (np.arange(n) % len(CLASS_NAMES))[np.argsort(keys, kind="stable")]


def _draw(label: int, rng: np.random.Generator, resolution: int) -> tuple[np.ndarray, dict[str, int]]:
    """One image (uint8 [3, R, R]) of class `label` and its attribute value indices."""
    u = rng.random(12)
    shape, group = divmod(label, len(GROUPS))
    colour = GROUP_COLOURS[GROUPS[group]][_pick(u[0], 2)]
    values = {
        "shape": shape,
        "colour": COLOURS.index(colour),
        "pattern": _pick(u[1], 2),
        "size": _pick(u[2], 2),
        "position": _pick(u[3], 2),
        "background": _pick(u[4], 2),
    }
    big = resolution * SUPERSAMPLE
    diameter = DIAMETER[ATTRIBUTES["size"][values["size"]]] * (1 + SIZE_JITTER * (2 * u[5] - 1)) * big
    room = big / 2 - diameter / 2 - MARGIN * big  # how far the centre may move from the middle
    offset = MIN_OFFSET * big + u[6] * max(0.0, room - MIN_OFFSET * big)
    cx = big / 2 + (offset if values["position"] else -offset)
    cy = big / 2 + (2 * u[7] - 1) * room
    r = diameter / 2

    canvas = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(canvas)
    if SHAPES[shape] == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif SHAPES[shape] == "square":
        s = 0.88 * r  # the circle's area, about: the shapes differ in form more than in size
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=255)
    elif SHAPES[shape] == "triangle":
        pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    else:  # cross: a plus sign with arms a third of its span thick
        t = r / 3
        pen.rectangle((cx - r, cy - t, cx + r, cy + t), fill=255)
        pen.rectangle((cx - t, cy - r, cx + t, cy + r), fill=255)
    if values["pattern"]:  # horizontal stripes cut out of the object, on the pixel grid: crisp once reduced
        period = max(3, round(resolution * STRIPE_PERIOD))  # output pixels; the phase follows the object
        for row in range(round(cy / SUPERSAMPLE) % period - period, resolution, period):
            pen.rectangle((0, row * SUPERSAMPLE, big, (row + period // 3) * SUPERSAMPLE - 1), fill=0)
    alpha = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)[None] / 255  # box filter: anti-aliasing

    hue, saturation, value = colorsys.rgb_to_hsv(*RGB[colour])  # jittered: ±0.02 hue, -10% saturation, -15% value
    hue, saturation, value = (
        (hue + 0.04 * (u[8] - 0.5)) % 1,
        saturation * (0.9 + 0.1 * u[9]),
        value * (0.85 + 0.15 * u[10]),
    )
    fill = colorsys.hsv_to_rgb(hue, saturation, value)
    gray = GRAY[ATTRIBUTES["background"][values["background"]]] + 0.06 * (u[11] - 0.5)
    noise = NOISE * (2 * rng.random((3, resolution, resolution)) - 1)
    image = (1 - alpha) * (gray + noise) + alpha * np.asarray(fill)[:, None, None]
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), values


def generate(split: str, resolution: int) -> tuple[torch.Tensor, list[int], dict[str, torch.Tensor]]:
    """(uint8 images [N, 3, R, R], labels, attribute name -> [N] long) of a split, generated once per process."""
    key = (split, resolution)
    if key not in CACHE:
        labels = _class_labels(split)
        split_code = list(SPLIT_SIZES).index(split)
        images = np.empty((len(labels), 3, resolution, resolution), dtype=np.uint8)
        rows = {name: np.empty(len(labels), dtype=np.int64) for name in ATTRIBUTES}
        for index, label in enumerate(labels):
            images[index], values = _draw(int(label), np.random.default_rng([SEED, split_code, index]), resolution)
            for name, value in values.items():
                rows[name][index] = value
        attributes = {name: torch.from_numpy(column) for name, column in rows.items()}
        CACHE[key] = torch.from_numpy(images), [int(label) for label in labels], attributes
    return CACHE[key]


class ShapesDataset(ImageDataset):
    """A split of the shapes dataset; `attributes` and `attribute_values` give each image's factors."""

    def __init__(self, split: str, resolution: int, augment: bool):
        self.name, self.split, self.root = "shapes", split, None
        self.class_names = list(CLASS_NAMES)
        self.resolution, self.augment = resolution, augment
        self.images, labels, attributes = generate(split, resolution)
        self.labels = list(labels)
        self.attributes = dict(attributes)
        self.attribute_values = {name: list(values) for name, values in ATTRIBUTES.items()}
        self.shift = max(1, resolution // 16)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].to(torch.float32).mul_(2 / 255).sub_(1)  # a fresh tensor, not a cache view
        if self.augment:
            # A random translation by up to R/16, which keeps the object's centre in its half. No horizontal
            # flip: position (left/right) is an attribute, and a flip would contradict its label.
            r, s = self.resolution, self.shift
            padded = F.pad(image[None], (s,) * 4, mode="replicate")[0]  # edges are background
            top, left = torch.randint(0, 2 * s + 1, (2,)).tolist()
            image = padded[:, top : top + r, left : left + r].clone()
        return image, self.labels[index]
