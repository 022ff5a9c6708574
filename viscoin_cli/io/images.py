"""Image grids: the one writer every command uses for PNG output."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] -> [N, H, W, C] uint8 (C = 1 or 3), values outside [-1, 1] clipped."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1|3, H, W], got {tuple(images.shape)}")
    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def grid_array(images: torch.Tensor, columns: int | None = None, padding: int = 2, fill: int = 255) -> np.ndarray:
    """Tile [N, C, H, W] images row by row into one [rows*(H+p)+p, cols*(W+p)+p, C] uint8 array."""
    pixels = to_uint8(images)
    count, height, width, channels = pixels.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), fill, np.uint8
    )
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid


# The formats a grid is written in, by file suffix: lossless PNG, or JPEG for a smaller file.
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def save_grid(images: torch.Tensor, path: str | os.PathLike, columns: int | None = None, padding: int = 2) -> Path:
    """Write images as one grid (`columns` per row; default: as square as possible), atomically, in the
    format its suffix names (see GRID_FORMATS)."""
    from viscoin_cli.io.checkpoint import atomic_write

    path = Path(path)
    image_format = GRID_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: a grid is written as {', '.join(GRID_FORMATS)}")
    grid = grid_array(images, columns, padding)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    options = {"quality": 95} if image_format == "JPEG" else {}
    return atomic_write(path, lambda tmp: picture.save(tmp, format=image_format, **options))
