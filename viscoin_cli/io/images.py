"""Image grids: the one writer every command uses for PNG output."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

TILE_TARGET = 128  # labelled grids upscale small tiles to about this many pixels
MAX_SCALE = 16  # the largest upscaling factor a user may ask for
INK = 0  # text colour (black on the white fill)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in [-1, 1] -> [N, H, W, C] uint8 (C = 1 or 3), values outside [-1, 1] clipped."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1|3, H, W], got {tuple(images.shape)}")
    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def upscale_factor(resolution: int, target: int = TILE_TARGET) -> int:
    """The smallest integer k ≥ 1 with k·resolution ≥ target: 32 px -> 4, 256 px -> 1."""
    return max(1, math.ceil(target / resolution))


def grid_array(
    images: torch.Tensor, columns: int | None = None, padding: int = 2, fill: int = 255, scale: int = 1
) -> np.ndarray:
    """Tile [N, C, H, W] images row by row into one [rows*(sH+p)+p, cols*(sW+p)+p, C] uint8 array, each image
    upscaled `scale` times by nearest neighbour (each pixel repeated)."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    pixels = to_uint8(images)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
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


def grid_format(path: Path) -> str:
    """The format a picture at `path` is written in, by its suffix (a ValueError for any other suffix)."""
    image_format = GRID_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: a grid is written as {', '.join(GRID_FORMATS)}")
    return image_format


def fit_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> str:
    """`text`, cut short with "…" so that it is at most `width` pixels wide in `font` ("" if even "…" is not)."""
    if font.getlength(text) <= width:
        return text
    for end in range(len(text) - 1, -1, -1):
        short = text[:end].rstrip() + "…"
        if font.getlength(short) <= width:
            return short
    return ""


def wrap_text(
    text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float, separator: str = " · "
) -> list[str]:
    """`text` broken into lines at most `width` pixels wide, at `separator`s (a part too long is cut short)."""
    lines: list[str] = []
    for part in text.split(separator):
        joined = f"{lines[-1]}{separator}{part}" if lines else part
        if lines and font.getlength(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(fit_text(part, font, width))
    return lines


def label_font(tile_width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font, sized to the tiles: 16 px text for 128 px tiles, never under 10 px."""
    return ImageFont.load_default(size=min(16, max(10, tile_width // 8)))


def label_grid(
    grid: np.ndarray,
    tile: tuple[int, int],
    padding: int,
    title: str | None = None,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    fill: int = 255,
) -> np.ndarray:
    """A grid [H, W, C] of `tile` = (height, width) tiles with a title (wrapped at " · "), a header over each
    column and a label left of each row drawn in margins around it; headers and labels break lines at "\\n",
    and text too long is cut short."""
    font = label_font(tile[1])
    line = round(font.size * 1.25) if isinstance(font, ImageFont.FreeTypeFont) else 12
    gap = max(2, line // 4)
    rows = [label.split("\n") for label in row_labels or []]
    headers = [label.split("\n") for label in column_labels or []]
    cap = max(tile[1], 10 * line)  # the widest a row label may be
    left = 0
    if rows:
        left = round(min(cap, max(font.getlength(text) for lines in rows for text in lines))) + 2 * gap
    height, width, channels = grid.shape
    titles = wrap_text(title, font, left + width - 2 * gap) if title else []
    top_title = len(titles) * line + 2 * gap if titles else 0
    top = top_title + (max(map(len, headers)) * line + gap if headers else 0)
    canvas = np.full((top + height, left + width, channels), fill, np.uint8)
    canvas[top:, left:] = grid
    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    draw = ImageDraw.Draw(picture)
    ink = INK if channels == 1 else (INK,) * 3
    for number, text in enumerate(titles):
        draw.text((gap, gap + number * line), text, font=font, fill=ink)
    for column, lines in enumerate(headers):
        centre = left + padding + column * (tile[1] + padding) + tile[1] / 2
        for number, text in enumerate(lines):
            text = fit_text(text, font, tile[1] + padding)
            draw.text((round(centre - font.getlength(text) / 2), top_title + number * line), text, font=font, fill=ink)
    most = max(1, tile[0] // line)  # the lines a row has room for
    for row, lines in enumerate(rows):
        lines = lines[:most]
        y = top + padding + row * (tile[0] + padding) + (tile[0] - len(lines) * line) / 2
        for number, text in enumerate(lines):
            draw.text((gap, round(y + number * line)), fit_text(text, font, cap), font=font, fill=ink)
    labelled = np.asarray(picture)
    return labelled[..., None] if channels == 1 else labelled


def labelled_grid(
    images: torch.Tensor,
    columns: int | None = None,
    padding: int = 2,
    *,
    scale: int = 1,
    title: str | None = None,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """grid_array, with a title, column headers and row labels drawn around it when given (see label_grid)."""
    grid = grid_array(images, columns, padding, scale=scale)
    if title or column_labels or row_labels:
        tile = (images.shape[-2] * scale, images.shape[-1] * scale)
        grid = label_grid(grid, tile, padding, title, column_labels, row_labels)
    return grid


def stack_grids(grids: Sequence[np.ndarray], gap: int = 8, fill: int = 255) -> np.ndarray:
    """Grids [H_i, W_i, C] one above the other, left-aligned, `gap` pixels apart (a card of several blocks)."""
    channels = max(grid.shape[-1] for grid in grids)
    width = max(grid.shape[1] for grid in grids)
    height = sum(grid.shape[0] for grid in grids) + gap * (len(grids) - 1)
    canvas = np.full((height, width, channels), fill, np.uint8)
    top = 0
    for grid in grids:
        canvas[top : top + grid.shape[0], : grid.shape[1]] = grid  # a gray grid broadcasts to colour
        top += grid.shape[0] + gap
    return canvas


def save_array(grid: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a [H, W, 1|3] uint8 picture atomically, in the format its suffix names (see GRID_FORMATS)."""
    from viscoin_cli.io.checkpoint import atomic_write

    path = Path(path)
    image_format = grid_format(path)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    options = {"quality": 95} if image_format == "JPEG" else {}
    return atomic_write(path, lambda tmp: picture.save(tmp, format=image_format, **options))


def save_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    columns: int | None = None,
    padding: int = 2,
    *,
    scale: int = 1,
    title: str | None = None,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write images as one grid (`columns` per row; default: as square as possible), atomically, in the
    format its suffix names (see GRID_FORMATS); each image upscaled `scale` times (nearest neighbour), with a
    title, column headers and row labels drawn around the grid when given (see label_grid)."""
    grid_format(Path(path))  # a wrong suffix fails before the grid is drawn
    grid = labelled_grid(
        images, columns, padding, scale=scale, title=title, column_labels=column_labels, row_labels=row_labels
    )
    return save_array(grid, path)
