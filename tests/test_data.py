"""Datasets: each real layout loads from a tiny fake tree; shapes, ranges, labels, splits, bad images."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
from _fake_data import COLOURS, cars_annotations, write_cars, write_celebahq, write_cub, write_image
from PIL import Image

from viscoin_cli.data import load_dataset
from viscoin_cli.data.holdout import holdout_split, split_off
from viscoin_cli.errors import UserError


def assert_images(dataset, resolution: int) -> None:
    image, label = dataset[0]
    assert type(image) is torch.Tensor  # a plain tensor, not a torchvision tv_tensor
    assert image.shape == (3, resolution, resolution) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert isinstance(label, int) and 0 <= label < dataset.num_classes


# --- digits --------------------------------------------------------------------------------------------


def test_digits_splits_are_fixed_and_stratified():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.class_names == [str(i) for i in range(10)]
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert load_dataset("digits", "test").labels == test.labels


def test_digits_split_and_data_are_scikit_learns():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from viscoin_cli.data.digits import SPLIT_SEED, TEST_FRACTION, TEST_INDICES, load_digits_arrays

    digits = load_digits()
    _, test = train_test_split(
        list(range(len(digits.target))), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    assert tuple(sorted(test)) == TEST_INDICES
    images, target = load_digits_arrays()
    assert np.array_equal(images, digits.images) and np.array_equal(target, digits.target)


def test_loading_digits_does_not_import_scikit_learn():
    code = "import sys; from viscoin_cli.data import load_dataset; load_dataset('digits', 'test'); "
    code += "print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_validation_split_is_stratified_fixed_disjoint_and_covers_train():
    train = load_dataset("digits", "train")
    kept, held = holdout_split(train.labels, 0.1)
    assert sorted(kept + held) == list(range(len(train))) and not set(kept) & set(held)
    per_class, held_per_class = Counter(train.labels), Counter(train.labels[i] for i in held)
    assert all(held_per_class[c] == round(0.1 * n) for c, n in per_class.items())  # 14 or 15 of each digit
    assert len(held) == 142 and held[:6] == [3, 18, 23, 24, 31, 37]  # fixed: a change here changes f's `best`
    assert holdout_split(train.labels, 0.1) == (kept, held) and holdout_split(train.labels, 0.1, seed=1) != (kept, held)
    rest, val = (load_dataset("digits", split, val_fraction=0.1) for split in ("train", "val"))
    assert (rest.split, val.split, len(rest), len(val)) == ("train", "val", 1295, 142)
    assert rest.labels == [train.labels[i] for i in kept] and val.labels == [train.labels[i] for i in held]
    assert torch.equal(val[3][0], train[held[3]][0]) and val.facts() == train.facts()
    assert load_dataset("digits", "train", val_fraction=0.0).labels == train.labels  # 0: the whole split


def test_validation_split_of_small_classes():
    # per class: round(fraction·n), at least 1 from a class of 2 or more, never a whole class
    labels = [0, 0, 1, 2, 2, 2]
    kept, held = holdout_split(labels, 0.1)
    assert Counter(labels[i] for i in held) == {0: 1, 2: 1} and Counter(labels[i] for i in kept) == {0: 1, 1: 1, 2: 2}
    assert len(holdout_split([0, 0, 0], 0.9)[1]) == 2 and holdout_split([0, 1, 2], 0.5)[1] == []
    assert holdout_split([0, 0, 1, 1], 0.0) == ([0, 1, 2, 3], [])
    singletons = SimpleNamespace(name="tiny", labels=[0, 1, 2])
    assert split_off(singletons, "train", 0.5) is singletons  # nothing to hold out: the whole split
    with pytest.raises(UserError, match="no validation image in the training split of tiny"):
        split_off(singletons, "val", 0.5)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.1"])
def test_bad_validation_fraction(fraction):
    with pytest.raises(UserError, match="--val-fraction .*: expected a fraction in"):
        holdout_split([0, 0, 1, 1], fraction)


def test_digits_images_at_a_requested_resolution():
    dataset = load_dataset("digits", "train", resolution=48)
    assert_images(dataset, 48)
    image, _ = dataset[0]
    assert torch.equal(image[0], image[1]) and image.min() == -1  # grey replicated, black background


def test_digits_augmentation_translates_without_flipping():
    torch.manual_seed(0)
    plain, augmented = load_dataset("digits", "train"), load_dataset("digits", "train", augment=True)
    draws = [augmented[5][0] for _ in range(8)]
    assert any(not torch.equal(d, plain[5][0]) for d in draws)
    assert all(d.shape == (3, 32, 32) for d in draws)
    padded = torch.nn.functional.pad(plain[5][0], (4,) * 4, value=-1.0)  # 32 px: shifts of up to 4 px
    crops = [padded[:, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
    assert all(any(torch.equal(d, crop) for crop in crops) for d in draws)  # each draw is a pure translation


def test_digits_made_per_item_at_large_resolutions_match_the_cache(monkeypatch):
    from viscoin_cli.data import digits

    cached = load_dataset("digits", "test")
    monkeypatch.setattr(digits, "CACHE_BYTES", 0)
    uncached = load_dataset("digits", "test")
    assert cached.large is not None and uncached.large is None
    assert torch.equal(cached[7][0], uncached[7][0])


def test_digits_facts():
    assert load_dataset("digits", "test").facts() == {
        "name": "digits",
        "class_names": [str(i) for i in range(10)],
        "num_classes": 10,
        "resolution": 32,
        "channels": 3,
    }


# --- cub -----------------------------------------------------------------------------------------------


@pytest.fixture
def cub_root(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def test_cub_layout(cub_root):
    train, test = load_dataset("cub", "train", root=cub_root, resolution=16), load_dataset("cub", "test", root=cub_root)
    assert (len(train), len(test)) == (4, 2)
    assert train.class_names == ["Black footed Albatross", "Laysan Albatross"]
    assert train.labels == [0, 1, 0, 1]
    assert_images(train, 16)
    red, _ = train[0]
    assert red[0].mean() > red[2].mean()  # class 0 images are red


def test_cub_accepts_the_parent_folder(cub_root):
    assert len(load_dataset("cub", "train", root=cub_root.parent, resolution=16)) == 4


def test_cub_bbox_crop_changes_the_image(cub_root):
    full = load_dataset("cub", "train", root=cub_root, resolution=16)[0][0]
    cropped = load_dataset("cub", "train", root=cub_root, resolution=16, bbox_crop=True)[0][0]
    assert not torch.allclose(full, cropped)


def test_cub_label_outside_the_classes(cub_root):
    (cub_root / "image_class_labels.txt").write_text("".join(f"{i} {3 if i == 2 else 1}\n" for i in range(1, 7)))
    with pytest.raises(UserError, match=r"img_2.jpg: class number 3 is beyond the 2 classes"):
        load_dataset("cub", "train", root=cub_root)


def test_cub_malformed_layout_file(cub_root):
    (cub_root / "image_class_labels.txt").write_text("1 one\n")
    with pytest.raises(UserError, match=r"image_class_labels.txt: malformed \(invalid literal"):
        load_dataset("cub", "train", root=cub_root)


def test_cub_missing_layout_file(cub_root):
    (cub_root / "classes.txt").unlink()
    with pytest.raises(UserError, match="classes.txt is missing"):
        load_dataset("cub", "train", root=cub_root)


def test_training_augmentation_varies(cub_root):
    dataset = load_dataset("cub", "train", root=cub_root, resolution=16, augment=True)
    torch.manual_seed(0)
    draws = [dataset[0][0] for _ in range(10)]
    assert all(d.shape == (3, 16, 16) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


# --- cars ----------------------------------------------------------------------------------------------


@pytest.fixture
def cars_root(tmp_path):
    return write_cars(tmp_path / "cars")


def test_cars_layout(cars_root):
    train, test = (
        load_dataset("cars", "train", root=cars_root, resolution=16),
        load_dataset("cars", "test", root=cars_root),
    )
    assert (len(train), len(test)) == (4, 2)
    assert train.class_names == ["AM General Hummer", "Audi R8"]
    assert train.labels == [0, 1, 0, 1] and test.labels == [0, 1]
    assert_images(train, 16)


def test_cars_bbox_crop_keeps_only_the_box(cars_root):
    full = load_dataset("cars", "train", root=cars_root, resolution=16)[0][0]
    cropped = load_dataset("cars", "train", root=cars_root, resolution=16, bbox_crop=True)[0][0]
    assert full.min() == -1  # black border around the car
    assert cropped[0].min() > 0.5  # only the red box is left


def test_cars_in_torchvision_layout(cars_root):
    moved = cars_root.parent / "tv"
    (moved / "stanford_cars").parent.mkdir()
    cars_root.rename(moved / "stanford_cars")
    assert len(load_dataset("cars", "test", root=moved, resolution=16)) == 2


def test_cars_large_jpeg_bbox_crop_after_reduced_decoding(tmp_path):
    """A 400×320 JPEG at R=16 is decoded at 1/8 scale; the box must still land on the same pixels."""
    root = tmp_path / "cars"
    image = np.zeros((320, 400, 3), np.uint8)
    image[80:240, 100:300] = (255, 0, 0)  # 0-based rows 80..239, cols 100..299
    (root / "cars_train").mkdir(parents=True)
    Image.fromarray(image).save(root / "cars_train" / "big.jpg", quality=95)
    scipy.io.savemat(root / "cars_meta.mat", {"class_names": np.array([["A", "B"]], dtype=object)})
    scipy.io.savemat(root / "cars_train_annos.mat", cars_annotations([(101, 81, 300, 240, 1, "big.jpg")]))
    full = load_dataset("cars", "train", root=root, resolution=16)[0][0]
    cropped = load_dataset("cars", "train", root=root, resolution=16, bbox_crop=True)[0][0]
    assert full[0].min() < -0.9  # the black border survives the centre crop
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
    assert (cropped - red).abs().max() < 0.1  # nothing but the red box


def test_cars_missing_devkit(cars_root):
    (cars_root / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(UserError, match="cars_meta.mat is missing"):
        load_dataset("cars", "train", root=cars_root)


# --- celebahq ------------------------------------------------------------------------------------------


@pytest.fixture
def celeba_root(tmp_path):
    return write_celebahq(tmp_path / "CelebAMask-HQ")


def test_celebahq_young_old_without_mapping(celeba_root):
    train, test = (
        load_dataset("celebahq", "train", root=celeba_root, resolution=16),
        load_dataset("celebahq", "test", root=celeba_root, resolution=16),
    )
    assert train.class_names == ["old", "young"]
    assert (len(train), len(test)) == (8, 2)
    assert sorted(test.labels) == [0, 1]  # stratified
    assert_images(train, 16)
    files = [Path(p).name for p in train.files]
    assert all(label == int(name.split(".")[0]) % 2 for name, label in zip(files, train.labels, strict=True))


def test_celebahq_missing_image_folder(celeba_root):
    (celeba_root / "CelebA-HQ-img").rename(celeba_root / "images")
    with pytest.raises(UserError, match="CelebA-HQ-img is missing"):
        load_dataset("celebahq", "train", root=celeba_root)


def test_celebahq_split_from_celeba_mapping(celeba_root):
    rows = [f"{i} {100 + i if i < 7 else 190000 + i} {i:06d}.jpg" for i in range(10)]
    (celeba_root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("idx orig_idx orig_file\n" + "\n".join(rows) + "\n")
    test = load_dataset("celebahq", "test", root=celeba_root, resolution=16)
    assert sorted(Path(p).name for p in test.files) == ["7.jpg", "8.jpg", "9.jpg"]
    assert len(load_dataset("celebahq", "train", root=celeba_root, resolution=16)) == 7


# --- folder --------------------------------------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path):
    root = tmp_path / "folder"
    for split, count in (("train", 3), ("test", 1)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(count):
                suffix = ".png" if i % 2 else ".jpg"
                write_image(root / split / name / f"{i}{suffix}", COLOURS[c])
    (root / "train" / "cat" / ".hidden.jpg").write_bytes(b"junk")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "train" / "cat" / ".ipynb_checkpoints" / "copy.jpg")  # hidden folder: ignored
    return root


def test_folder_layout(folder_root):
    train, test = (
        load_dataset("folder", "train", root=folder_root, resolution=16),
        load_dataset("folder", "test", root=folder_root, resolution=16),
    )
    assert train.class_names == ["cat", "dog"] and (len(train), len(test)) == (6, 2)
    assert train.labels == [0, 0, 0, 1, 1, 1]
    assert_images(test, 16)


def test_folder_rejects_a_test_class_missing_from_train(folder_root):
    write_image(folder_root / "test" / "bird" / "0.jpg")
    with pytest.raises(UserError, match="'bird' has no training images"):
        load_dataset("folder", "test", root=folder_root)


# --- bad input -----------------------------------------------------------------------------------------


def test_corrupt_image_is_reported_in_one_line(folder_root):
    (folder_root / "train" / "dog" / "broken.jpg").write_bytes(b"\x00not an image at all" * 10)
    with pytest.raises(UserError) as err:
        load_dataset("folder", "train", root=folder_root)
    message = str(err.value)
    assert "1 unreadable image in" in message and "broken.jpg" in message and "--skip-bad-images" in message
    assert "\n" not in message


def test_skip_bad_images_counts_them(folder_root):
    (folder_root / "train" / "dog" / "broken.jpg").write_bytes(b"garbage")
    dataset = load_dataset("folder", "train", root=folder_root, skip_bad_images=True)
    assert dataset.skipped == 1 and len(dataset) == 6


def test_truncated_image_is_caught_when_loaded(folder_root):
    good = folder_root / "train" / "dog" / "0.jpg"
    cut = folder_root / "train" / "dog" / "cut.jpg"
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(cut)
    cut.write_bytes(cut.read_bytes()[:-300])  # the header parses, the end of the pixel data is gone
    dataset = load_dataset("folder", "train", root=folder_root, resolution=16)
    index = [Path(p).name for p in dataset.files].index("cut.jpg")
    with pytest.raises(UserError, match="cut.jpg: cannot decode image"):
        dataset[index]
    assert good.exists()
    skipping = load_dataset("folder", "train", root=folder_root, resolution=16, skip_bad_images=True)
    assert skipping[index][0].shape == (3, 16, 16)  # served the next readable image instead


@pytest.mark.parametrize(
    ("name", "split", "kwargs", "message"),
    [
        ("cub", "train", {}, "--data-root is required for dataset 'cub'"),
        ("cub", "train", {"root": "/nonexistent/cub"}, "does not exist"),
        ("imagenet", "train", {}, "unknown dataset"),
        ("digits", "valid", {}, "unknown split 'valid'"),
        ("digits", "val", {}, "the val split is held out of train: it needs a --val-fraction above 0"),
        ("digits", "val", {"val_fraction": 1.0}, r"--val-fraction 1.0: expected a fraction in \[0, 1\)"),
        ("digits", "train", {"resolution": 4}, "--resolution"),
        ("digits", "train", {"resolution": 32.0}, "--resolution"),
        ("digits", "train", {"bbox_crop": True}, "--bbox-crop applies to cub and cars"),
        ("folder", "train", {"root": "."}, "train is missing"),
    ],
)
def test_bad_arguments(name, split, kwargs, message):
    with pytest.raises(UserError, match=message):
        load_dataset(name, split, **kwargs)


def test_empty_split(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="without images"):
        load_dataset("folder", "train", root=tmp_path)


def test_empty_class_folder_stops_with_the_folder_named(folder_root):
    (folder_root / "train" / "bird").mkdir()
    with pytest.raises(UserError, match=r"train/bird: class folder without images"):
        load_dataset("folder", "test", root=folder_root)


def test_empty_class_folder_is_left_out_with_skip_bad_images(folder_root, capsys):
    (folder_root / "train" / "bird").mkdir()
    dataset = load_dataset("folder", "train", root=folder_root, skip_bad_images=True)
    assert dataset.class_names == ["cat", "dog"]
    assert "left out 1 class(es) without readable training images: bird" in capsys.readouterr().err


def _deny(monkeypatch, denied: Path) -> None:
    """Listing `denied` fails as it does for a folder without read permission (root reads any folder)."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_class_folder_stops_with_the_folder_named(folder_root, monkeypatch):
    _deny(monkeypatch, folder_root / "test" / "dog")
    with pytest.raises(UserError, match=r"test/dog: cannot read this folder \(Permission denied\)"):
        load_dataset("folder", "test", root=folder_root)


def test_unreadable_class_folder_is_skipped_and_reported(folder_root, monkeypatch, capsys):
    _deny(monkeypatch, folder_root / "test" / "dog")
    dataset = load_dataset("folder", "test", root=folder_root, skip_bad_images=True)
    assert set(dataset.labels) == {0}  # only cat's test images
    assert "skipped 1 unreadable folder(s) of the test split" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_class_folder_for_real(folder_root):
    folder = folder_root / "train" / "dog"
    folder.chmod(0)
    try:
        with pytest.raises(UserError, match="cannot read this folder"):
            load_dataset("folder", "train", root=folder_root)
    finally:
        folder.chmod(0o755)


def test_dataset_works_in_worker_processes(folder_root):
    dataset = load_dataset("folder", "train", root=folder_root, resolution=16, augment=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 16, 16) and labels.tolist() == [0, 0, 0]


def test_datasets_pickle(folder_root):
    """DataLoader workers started with spawn (macOS, Windows) receive the dataset pickled."""
    for dataset in (
        load_dataset("folder", "train", root=folder_root, resolution=16),
        load_dataset("digits", "test", resolution=16),
        load_dataset("folder", "val", root=folder_root, resolution=16, val_fraction=0.5),
    ):
        copy = pickle.loads(pickle.dumps(dataset))
        assert torch.equal(copy[1][0], dataset[1][0]) and copy.labels == dataset.labels


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, viscoin_cli.data as d; print(d.DATASET_NAMES, 'torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False")


@pytest.mark.parametrize("size", [(24, 20), (20, 24), (37, 53), (300, 199), (16, 16)])
def test_image_transform_is_torchvisions_bit_for_bit(size):
    """The transforms are our own (no torchvision import); same pixels and random draws as its v2 pipeline."""
    from torchvision.transforms import v2

    from viscoin_cli.data.images import image_transform, load_size

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    for resolution, augment in ((16, False), (16, True), (17, True)):
        crop = [v2.RandomCrop(resolution), v2.RandomHorizontalFlip()] if augment else [v2.CenterCrop(resolution)]
        resize = v2.Resize(load_size(resolution, augment), antialias=True)
        scale = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3), v2.ToPureTensor()]
        reference = v2.Compose([v2.ToImage(), resize, *crop, *scale])
        for seed in range(4):
            torch.manual_seed(seed)
            expected, next_expected = reference(picture), torch.rand(1)
            torch.manual_seed(seed)
            ours, next_ours = image_transform(resolution, augment)(picture), torch.rand(1)
            assert torch.equal(ours, expected) and torch.equal(next_ours, next_expected)
