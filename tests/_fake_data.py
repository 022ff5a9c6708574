"""Writers of tiny datasets in the official layouts (CUB-200-2011, Stanford Cars, CelebAMask-HQ), for tests.

Each writer takes the dataset folder and sizes, writes small solid-colour images (one colour per class) and
the annotation files the loaders in `viscoin_cli.data` read, and returns the folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]


def write_image(path: Path, colour=(128, 128, 128), size=(24, 20), noise: bool = True) -> Path:
    """A small RGB image: a solid colour with a gradient so flips and crops change it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colour, np.uint8)
    if noise:
        pixels[:, : size[0] // 2] //= 2  # left half darker: a horizontal flip is visible
    Image.fromarray(pixels).save(path)
    return path


CUB_ATTRIBUTES = ["has_wing_color::red", "has_wing_color::green", "has_wing_color::blue", "has_size::small_(5_-_9_in)"]


def cub_attribute_present(image_id: int, attribute_id: int, classes: int) -> bool:
    """What `write_cub(attributes=True)` marks: wing colour k is present when the image's class colour has
    channel k at full strength (several or none may be), size small for odd image ids."""
    if attribute_id <= 3:
        return COLOURS[(image_id - 1) % classes % len(COLOURS)][attribute_id - 1] == 255
    return image_id % 2 == 1


def write_cub(root: Path, classes: int = 2, train: int = 4, test: int = 2, attributes: bool = False) -> Path:
    """CUB_200_2011: images/<class>/*.jpg with images.txt, image_class_labels.txt, train_test_split.txt, ...

    `train` and `test` count images over all classes; image i (1-based) has class (i - 1) % classes, and the
    first `train` images are the training split. `attributes` adds the bird attribute files as the archive
    lays them out: attributes.txt beside the folder, attributes/image_attribute_labels.txt in it (labels:
    `cub_attribute_present`; image 1's rows carry the extra column some rows of the real file have).
    """
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
    names += [f"{i + 1:03d}.Bird_{i + 1}" for i in range(len(names), classes)]
    names = names[:classes]
    rows, labels, split, boxes = [], [], [], []
    for image_id in range(1, train + test + 1):
        label = (image_id - 1) % classes
        rel = f"{names[label]}/img_{image_id}.jpg"
        write_image(root / "images" / rel, COLOURS[label % len(COLOURS)])
        rows.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {1 if image_id <= train else 0}")
        boxes.append(f"{image_id} 2.0 3.0 10.0 8.0")
    (root / "images.txt").write_text("\n".join(rows) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(names)))
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    if attributes:
        (root.parent / "attributes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CUB_ATTRIBUTES, 1)))
        rows = []
        for image_id in range(1, train + test + 1):
            for attribute_id in range(1, len(CUB_ATTRIBUTES) + 1):
                present = int(cub_attribute_present(image_id, attribute_id, classes))
                extra = " 0" if image_id == 1 else ""
                rows.append(f"{image_id} {attribute_id} {present}{extra} 3 12.5")
        (root / "attributes").mkdir(exist_ok=True)
        (root / "attributes" / "image_attribute_labels.txt").write_text("\n".join(rows) + "\n")
    return root


def cars_annotations(entries) -> dict:
    """A devkit annotations .mat structure: (x1, y1, x2, y2, class (1-based), fname) per image."""
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    records = np.zeros((1, len(entries)), dtype=dtype)
    for i, entry in enumerate(entries):
        records[0, i] = entry
    return {"annotations": records}


def write_cars(root: Path, classes: int = 2, train: int = 4, test: int = 2) -> Path:
    """Stanford Cars: cars_train/, cars_test/, devkit/*.mat and cars_test_annos_withlabels.mat.

    Training images are PNGs (lossless: the box edges stay sharp) whose box region has the class colour on
    black; test images are JPEGs with the box covering the whole image. Image i has class i % classes.
    """
    names = ["AM General Hummer", "Audi R8", "BMW M3", "Chevrolet Corvette"]
    names = (names + [f"Car {i + 1}" for i in range(len(names), classes)])[:classes]
    train_rows, test_rows = [], []
    (root / "cars_train").mkdir(parents=True, exist_ok=True)
    for i in range(train):
        name = f"{i + 1:05d}.png"
        image = np.zeros((20, 24, 3), np.uint8)
        image[5:15, 6:18] = COLOURS[i % classes % len(COLOURS)]
        Image.fromarray(image).save(root / "cars_train" / name)
        train_rows.append((7, 6, 18, 15, i % classes + 1, name))
    for i in range(test):
        name = f"{i + 1:05d}.jpg"
        write_image(root / "cars_test" / name, COLOURS[i % classes % len(COLOURS)])
        test_rows.append((1, 1, 24, 20, i % classes + 1, name))
    (root / "devkit").mkdir(exist_ok=True)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", cars_annotations(train_rows))
    scipy.io.savemat(root / "cars_test_annos_withlabels.mat", cars_annotations(test_rows))
    return root


def write_celebahq(root: Path, images: int = 10) -> Path:
    """CelebAMask-HQ: CelebA-HQ-img/<i>.jpg and CelebAMask-HQ-attribute-anno.txt; odd images are Young."""
    names = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Young", "Smiling"]
    rows = []
    for i in range(images):
        write_image(root / "CelebA-HQ-img" / f"{i}.jpg", COLOURS[i % 2])
        young = 1 if i % 2 else -1
        rows.append(f"{i}.jpg 1 -1 {young} 1")
    text = f"{images}\n{' '.join(names)}\n" + "\n".join(rows) + "\n"
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(text)
    return root
