"""CelebA-HQ with CelebAMask-HQ's attributes: `CelebA-HQ-img/<idx>.jpg`, `CelebAMask-HQ-attribute-anno.txt`.

Binary age: class 1 "young" when `Young` is 1, else class 0 "old". Split: when
`CelebA-HQ-to-CelebA-mapping.txt` is present, CelebA's official partition decides (original index >=
182637 is test, the rest train); without it, a fixed stratified 80/20 split (random_state=0).
"""

from __future__ import annotations

from pathlib import Path

from viscoin_cli.data.images import Listing
from viscoin_cli.errors import UserError

ATTRIBUTES = "CelebAMask-HQ-attribute-anno.txt"
MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
IMAGES = "CelebA-HQ-img"
CELEBA_FIRST_TEST = 182637
CLASS_NAMES = ["old", "young"]


def list_split(root: Path, split: str, bbox_crop: bool = False) -> Listing:
    attributes = root / ATTRIBUTES
    if not attributes.is_file():
        raise UserError(f"{attributes} is missing: not a CelebAMask-HQ folder")
    lines = [line.split() for line in attributes.read_text().splitlines() if line.strip()]
    if len(lines) < 3 or "Young" not in lines[1]:
        raise UserError(
            f"{attributes}: expected a count line, the attribute names (with Young), then one row per image"
        )
    column = lines[1].index("Young") + 1  # rows are "<file> v1 ... v40"
    names, labels = [], []
    for number, row in enumerate(lines[2:], 3):
        if len(row) <= column:
            raise UserError(f"{attributes}:{number}: expected {len(lines[1]) + 1} columns")
        names.append(row[0])
        labels.append(1 if row[column] == "1" else 0)
    if (root / MAPPING).is_file():
        original = {}
        for row in (line.split() for line in (root / MAPPING).read_text().splitlines()[1:] if line.strip()):
            original[f"{int(row[0])}.jpg"] = int(row[1])
        in_test = [original.get(name, 0) >= CELEBA_FIRST_TEST for name in names]
    else:
        from sklearn.model_selection import train_test_split

        _, test = train_test_split(range(len(names)), test_size=0.2, stratify=labels, random_state=0)
        test_set = set(test)
        in_test = [i in test_set for i in range(len(names))]
    keep = [i for i in range(len(names)) if in_test[i] == (split == "test")]
    return Listing(
        root=root,
        files=[root / IMAGES / names[i] for i in keep],
        labels=[labels[i] for i in keep],
        class_names=CLASS_NAMES,
    )
