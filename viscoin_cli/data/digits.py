"""The embedded default: scikit-learn's bundled handwritten digits (1797 8×8 images, 10 classes).

Upscaled to the requested resolution and replicated to 3 channels; ink is +1, background -1. The
train/test split is fixed (stratified, random_state=0: 1437/360) whatever the user's seed, so test
numbers are comparable between runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from viscoin_cli.data.images import ImageDataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


class DigitsDataset(ImageDataset):
    def __init__(self, split: str, resolution: int, augment: bool):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        indices = list(range(len(digits.target)))
        train, test = train_test_split(
            indices, test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
        )
        chosen = sorted(train if split == "train" else test)
        small = torch.tensor(digits.images[chosen], dtype=torch.float32)[:, None] / 16 * 2 - 1  # [N, 1, 8, 8]
        large = F.interpolate(small, size=(resolution, resolution), mode="bilinear", antialias=True)
        self.images = large.clamp(-1, 1).expand(-1, 3, -1, -1).contiguous()  # [N, 3, R, R]
        self.labels = [int(digits.target[i]) for i in chosen]
        self.name, self.split, self.root = "digits", split, None
        self.class_names = [str(c) for c in range(10)]
        self.resolution, self.augment = resolution, augment
        self.pad = max(1, resolution // 8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.augment:  # random translation by up to R/8 (no flips: a mirrored digit is another symbol)
            padded = F.pad(image, (self.pad,) * 4, value=-1.0)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            image = padded[:, top : top + self.resolution, left : left + self.resolution]
        return image, self.labels[index]
