"""The image-grid writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from viscoin_cli.io.images import grid_array, save_grid, to_uint8


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
