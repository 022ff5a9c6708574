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
CACHE_BYTES = 64 * 2**20  # upscaled images are kept in memory up to this size (R=32: 6 MB), else made per item


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
        self.name, self.split, self.root = "digits", split, None
        self.class_names = [str(c) for c in range(10)]
        self.labels = [int(digits.target[i]) for i in chosen]
        self.resolution, self.augment = resolution, augment
        self.pad = resolution // 8
        self.small = torch.tensor(digits.images[chosen], dtype=torch.float32)[:, None] / 8 - 1  # [N, 1, 8, 8]
        fits = self.small.shape[0] * resolution * resolution * 4 <= CACHE_BYTES
        self.large = self._upscale(self.small) if fits else None  # [N, 1, R, R]

    def _upscale(self, small: torch.Tensor) -> torch.Tensor:
        size = (self.resolution, self.resolution)
        return F.interpolate(small, size=size, mode="bilinear", antialias=True).clamp(-1, 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.large[index] if self.large is not None else self._upscale(self.small[index : index + 1])[0]
        if self.augment:  # random translation by up to R/8 (no flips: a mirrored digit is another symbol)
            padded = F.pad(image, (self.pad,) * 4, value=-1.0)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            image = padded[:, top : top + self.resolution, left : left + self.resolution]
        # a fresh tensor, not a view of the cache: safe to modify and cheap to send from a worker
        return image.expand(3, -1, -1).clone(), self.labels[index]
