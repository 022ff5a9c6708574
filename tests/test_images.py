"""The image-grid writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from viscoin_cli.io.images import fit_text, grid_array, label_font, save_grid, to_uint8, upscale_factor, wrap_text


def test_range_maps_to_0_255_and_clips():
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 2, 2)
    assert to_uint8(images)[0, :, :, 0].tolist() == [[0, 128], [255, 255]]


def test_grid_places_images_row_by_row():
    images = torch.stack([torch.full((3, 4, 5), v) for v in (-1.0, 1.0, -1.0)])
    grid = grid_array(images, columns=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1, 3)
    assert (grid[1:5, 1:6] == 0).all() and (grid[1:5, 7:12] == 255).all() and (grid[6:10, 1:6] == 0).all()
    assert (grid[6:10, 7:12] == 255).all()  # empty cell keeps the fill


def test_save_grid_writes_a_png_of_the_expected_size(tmp_path):
    path = save_grid(torch.zeros(6, 3, 8, 8), tmp_path / "sub" / "g.png", columns=3, padding=2)
    with Image.open(path) as picture:
        assert picture.size == (3 * 10 + 2, 2 * 10 + 2) and picture.mode == "RGB"
    assert [p.name for p in path.parent.iterdir()] == ["g.png"]


def test_grayscale_grid(tmp_path):
    path = save_grid(torch.zeros(1, 1, 4, 4), tmp_path / "g.png")
    with Image.open(path) as picture:
        assert picture.mode == "L"
        assert np.asarray(picture)[3, 3] == 128


def test_bad_shape():
    with pytest.raises(ValueError, match="expected images"):
        to_uint8(torch.zeros(3, 8, 8))


# --- upscaling and labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("resolution", "factor"), [(32, 4), (16, 8), (100, 2), (128, 1), (256, 1), (300, 1)])
def test_upscale_factor_is_the_smallest_reaching_128_px(resolution, factor):
    assert upscale_factor(resolution) == factor


def test_scaled_grid_repeats_each_pixel():
    images = torch.rand(3, 3, 4, 5) * 2 - 1
    grid = grid_array(images, columns=2, padding=1, scale=3)
    assert grid.shape == (2 * (12 + 1) + 1, 2 * (15 + 1) + 1, 3)
    expected = to_uint8(images[1:2])[0].repeat(3, axis=0).repeat(3, axis=1)
    assert (grid[1:13, 17:32] == expected).all()
    assert (grid_array(images, 2, 1, scale=1) == grid_array(images, 2, 1)).all()
    with pytest.raises(ValueError, match="scale"):
        grid_array(images, scale=0)


def dark(pixels: np.ndarray) -> bool:
    """Whether some pixel is drawn (darker than the white fill)."""
    return bool((pixels < 128).any())


def test_labels_add_margins_with_text_and_keep_the_grid(tmp_path):
    images = torch.ones(4, 3, 8, 8)  # white tiles: any dark pixel in a margin is text
    labels = {"title": "model · concept 3", "column_labels": ["input", "two\nlines"], "row_labels": ["a\nb", "c"]}
    path = save_grid(images, tmp_path / "g.png", columns=2, scale=16, **labels)
    plain = grid_array(images, columns=2, scale=16)
    with Image.open(path) as picture:
        pixels = np.asarray(picture)
    height, width = plain.shape[:2]
    top, left = pixels.shape[0] - height, pixels.shape[1] - width
    assert top > 0 and left > 0
    assert (pixels[top:, left:] == plain).all()  # the grid itself is untouched, at the bottom right
    assert dark(pixels[:top, left:]) and dark(pixels[top:, :left])  # headers and row labels are drawn
    assert not dark(pixels[:top, :left][-4:])  # nothing drawn in the corner right above the row labels


def test_labels_on_a_grayscale_grid(tmp_path):
    path = save_grid(torch.ones(2, 1, 8, 8), tmp_path / "g.png", columns=2, scale=16, column_labels=["a", "b"])
    with Image.open(path) as picture:
        assert picture.mode == "L" and picture.size[1] > 2 * 10 + 8 * 16 and picture.size[0] == 2 * 130 + 2


def test_long_labels_are_cut_short_never_fail(tmp_path):
    name = "Black_footed_Albatross_" * 40
    images = torch.zeros(2, 3, 4, 4)
    path = save_grid(
        images, tmp_path / "g.png", columns=1, title=name * 3, column_labels=[name], row_labels=[name, f"x\n{name}"]
    )
    with Image.open(path) as picture:
        assert picture.size[0] < 400  # the row labels' margin is capped, not as wide as the name
    font = label_font(128)
    short = fit_text(name, font, 100)
    assert short.endswith("…") and font.getlength(short) <= 100
    assert fit_text("ok", font, 100) == "ok" and fit_text(name, font, 1) == ""


def test_a_long_title_wraps_at_its_separators():
    font = label_font(128)
    lines = wrap_text("model.safetensors · concept 3 · most relevant to class 4 (r = +0.455)", font, 300)
    assert lines == ["model.safetensors · concept 3", "most relevant to class 4 (r = +0.455)"]
    assert all(font.getlength(text) <= 300 for text in lines)
    assert wrap_text("short · title", font, 300) == ["short · title"]
