"""CelebA-HQ with CelebAMask-HQ's attributes: `CelebA-HQ-img/<idx>.jpg`, `CelebAMask-HQ-attribute-anno.txt`.

Binary age: class 1 "young" when `Young` is 1, else class 0 "old".

Split rule: when `CelebA-HQ-to-CelebA-mapping.txt` is present, CelebA's official partition decides (an image
whose original CelebA index is >= 182637 is test, every other image is train); without it, a fixed
stratified 80/20 split (scikit-learn, random_state=0), so the split never depends on the user's seed.
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing, parsing, require_folder
from viscoin_cli.errors import UserError

ATTRIBUTES = "CelebAMask-HQ-attribute-anno.txt"
MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
IMAGES = "CelebA-HQ-img"
LAYOUT = "CelebAMask-HQ"
CELEBA_FIRST_TEST = 182637  # first image of CelebA's official test partition (0-based index)
CLASS_NAMES = ["old", "young"]
TEST_FRACTION = 0.2


def _read_attributes(path: Path) -> tuple[list[str], list[int]]:
    """File names and young/old labels, in file order."""
    if not path.is_file():
        raise UserError(f"{path} is missing: not a {LAYOUT} folder in the expected layout")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 3 or "Young" not in lines[1]:
        raise UserError(f"{path}: expected a count line, the attribute names (with Young), then one row per image")
    column = lines[1].index("Young") + 1  # rows are "<file> v1 ... v40"
    names, labels = [], []
    for number, row in enumerate(lines[2:], 3):
        if len(row) != len(lines[1]) + 1:
            raise UserError(f"{path}:{number}: expected {len(lines[1]) + 1} columns, found {len(row)}")
        names.append(row[0])
        labels.append(1 if row[column] == "1" else 0)
    return names, labels


def _official_test(path: Path, names: list[str]) -> list[bool]:
    """Whether each image belongs to CelebA's test partition, from the HQ-to-CelebA index mapping."""
    original = {}
    with parsing(path):
        for row in (line.split() for line in path.read_text().splitlines()[1:] if line.strip()):
            original[f"{int(row[0])}.jpg"] = int(row[1])
    missing = [name for name in names if name not in original]
    if missing:
        raise UserError(f"{path}: no entry for {missing[0]} (the mapping must cover every image)")
    return [original[name] >= CELEBA_FIRST_TEST for name in names]


def _stratified_test(labels: list[int]) -> list[bool]:
    from sklearn.model_selection import train_test_split

    indices = list(range(len(labels)))
    try:
        _, test = train_test_split(indices, test_size=TEST_FRACTION, stratify=labels, random_state=0)
    except ValueError as err:  # e.g. a class with a single image cannot be stratified
        raise UserError(f"cannot split {len(labels)} CelebA-HQ images 80/20 by age: {err}") from None
    chosen = set(test)
    return [i in chosen for i in indices]


def list_split(root: Path, split: str) -> Listing:
    names, labels = _read_attributes(root / ATTRIBUTES)
    image_dir = require_folder(root / IMAGES, LAYOUT)
    in_test = _official_test(root / MAPPING, names) if (root / MAPPING).is_file() else _stratified_test(labels)
    keep = [i for i in range(len(names)) if in_test[i] == (split == "test")]
    return Listing(
        root=root,
        files=[image_dir / names[i] for i in keep],
        labels=[labels[i] for i in keep],
        class_names=CLASS_NAMES,
    )
