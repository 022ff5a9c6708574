"""The embedded shapes dataset: fixed images, attributes that describe what is drawn, the class rule, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from viscoin_cli.data import load_dataset
from viscoin_cli.data import shapes as S


@pytest.fixture(scope="module")
def train():
    return S.ShapesDataset("train", 32, augment=False)


def as_unit(dataset) -> torch.Tensor:
    """Every image of `dataset` as [N, 3, R, R] in [0, 1]."""
    return (torch.stack([dataset[i][0] for i in range(len(dataset))]) + 1) / 2


def object_mask(images: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """[N, R, R]: the object's pixels, told from the gray background (and stripes) by their saturation."""
    return images.amax(1) - images.amin(1) > threshold


def value(dataset, name: str, value_name: str) -> torch.Tensor:
    return dataset.attributes[name] == dataset.attribute_values[name].index(value_name)


def test_generation_is_deterministic_and_splits_differ(train):
    S.CACHE.pop(("test", 32), None)
    first = S.ShapesDataset("test", 32, augment=False)
    S.CACHE.pop(("test", 32))
    second = S.ShapesDataset("test", 32, augment=False)
    assert first.images is not second.images and torch.equal(first.images, second.images)
    assert first.labels == second.labels
    assert all(torch.equal(first.attributes[k], second.attributes[k]) for k in S.ATTRIBUTES)
    assert not torch.equal(train.images[:1000], first.images)


def test_sizes_are_fixed_and_classes_balanced(train):
    test = S.ShapesDataset("test", 32, augment=False)
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.shape == (4000, 3, 32, 32) and len(train.class_names) == 8
    assert torch.bincount(torch.tensor(train.labels)).tolist() == [500] * 8
    assert torch.bincount(torch.tensor(test.labels)).tolist() == [125] * 8
    assert set(train.attributes) == set(train.attribute_values) == set(S.ATTRIBUTES)
    assert all(column.shape == (4000,) and column.dtype == torch.long for column in train.attributes.values())


def test_class_is_shape_times_colour_group(train):
    for i, label in enumerate(train.labels):
        shape = train.attribute_values["shape"][train.attributes["shape"][i]]
        colour = train.attribute_values["colour"][train.attributes["colour"][i]]
        group = "warm" if colour in ("red", "yellow") else "cool"
        assert train.class_names[label] == f"{shape}-{group}"


def test_colour_is_the_objects_mean_colour(train):
    images = as_unit(train)
    inside = object_mask(images, 0.35).unsqueeze(1)  # well inside the object: no anti-aliased edge
    mean = (images * inside).sum((2, 3)) / inside.sum((2, 3))  # [N, 3]
    palette = torch.tensor([S.RGB[name] for name in train.attribute_values["colour"]])
    assert torch.equal(torch.cdist(mean, palette).argmin(1), train.attributes["colour"])


def test_background_is_the_corners_brightness(train):
    corners = as_unit(train)[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].mean(1)  # [N, 4]
    assert torch.equal(corners.median(1).values > 0.5, value(train, "background", "light"))


def test_position_is_the_objects_horizontal_centre(train):
    mask = object_mask(as_unit(train)).float()
    x = (mask * torch.arange(32.0)).sum((1, 2)) / mask.sum((1, 2))
    assert torch.equal(x + 0.5 > 16, value(train, "position", "right"))


def test_size_is_the_objects_area(train):
    area = object_mask(as_unit(train)).sum((1, 2))
    large = value(train, "size", "large")
    for shape in S.SHAPES:  # shapes and stripes change the area: compare like with like
        for pattern in ("solid", "striped"):
            group = value(train, "shape", shape) & value(train, "pattern", pattern)
            assert area[group & ~large].max() < area[group & large].min(), (shape, pattern)


def test_augment_translates_without_touching_labels_or_flipping():
    plain = S.ShapesDataset("test", 32, augment=False)
    moved = S.ShapesDataset("test", 32, augment=True)
    torch.manual_seed(0)
    images = as_unit(moved)
    assert [moved[i][1] for i in range(len(moved))] == plain.labels
    assert images.shape == (1000, 3, 32, 32) and not torch.equal(images, as_unit(plain))
    mask = object_mask(images).float()
    x = (mask * torch.arange(32.0)).sum((1, 2)) / mask.sum((1, 2))
    assert torch.equal(x + 0.5 > 16, value(moved, "position", "right"))  # no flip: still on its side


def test_val_split_carries_its_images_attributes(train):
    val = load_dataset("shapes", "val", val_fraction=0.1)
    rest = load_dataset("shapes", "train", val_fraction=0.1)
    assert (len(val), len(rest)) == (400, 3600)
    for subset in (val, rest):
        rows = torch.tensor(subset.positions)
        assert subset.attribute_values == train.attribute_values
        assert all(torch.equal(subset.attributes[k], train.attributes[k][rows]) for k in S.ATTRIBUTES)
    assert all(torch.equal(val[i][0], train[val.positions[i]][0]) for i in range(0, 400, 37))


def test_pretrain_classifier_runs_on_shapes(tmp_path):
    out = tmp_path / "f"
    args = ["--dataset", "shapes", "--resolution", "16", "--width", "4", "--batch-size", "128", "--device", "cpu"]
    result = run_cli("pretrain-classifier", *args, "--epochs", "1", "--quiet", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "options.json").read_text())["dataset"] == "shapes"
    assert "test_accuracy" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_pool_split_is_fresh_balanced_draws():  # the pool (16 px, as the GAN test below: one draw, cached)
    pool = load_dataset("shapes", "pool", resolution=16)
    train = load_dataset("shapes", "train", resolution=16)
    assert len(pool) == 50_000 and torch.bincount(torch.tensor(pool.labels)).tolist() == [6250] * 8
    assert not torch.equal(pool.images[:4000], train.images)
    assert set(pool.attributes) == set(S.ATTRIBUTES)


def test_pool_is_shapes_only():
    from viscoin_cli.errors import UserError

    with pytest.raises(UserError, match="shapes dataset"):
        load_dataset("digits", "pool")


def test_finetune_gan_trains_on_the_pool(tmp_path):
    out = tmp_path / "g"
    args = ["--dataset", "shapes", "--pool", "--aug", "noaug", "--resolution", "16", "--batch-size", "8"]
    args += ["--cbase", "128", "--cmax", "8", "--map", "1", "--tick-kimg", "0.032", "--grid-size", "4"]
    result = run_cli("finetune-gan", *args, "--device", "cpu", "--kimg", "0.032", "--out", out)
    assert result.exit_code == 0, result.output
    assert "on shapes (50000 images)" in result.output
    assert json.loads((out / "options.json").read_text())["pool"] is True


def test_finetune_gan_refuses_the_pool_elsewhere_before_making_a_folder(tmp_path):
    result = run_cli("finetune-gan", "--dataset", "digits", "--pool", "--out", tmp_path / "g")
    assert "--pool applies to the shapes dataset" in assert_one_line_error(result)
    assert not (tmp_path / "g").exists()
