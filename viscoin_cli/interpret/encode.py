"""One pass of a trained model over a dataset split, kept on the CPU for the metrics to index into."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from viscoin_cli.runtime import Runtime


@dataclass
class Encoded:
    concept_maps: torch.Tensor  # [N, K, 3, 3]
    support: torch.Tensor  # [N, K*9]
    pooled: torch.Tensor  # [N, K]
    logits: torch.Tensor  # g's [N, C]
    f_logits: torch.Tensor  # f's [N, C]
    labels: torch.Tensor  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(1)

    def subset(self, indices: torch.Tensor) -> Encoded:
        return Encoded(*(getattr(self, name)[indices] for name in self.__dataclass_fields__))


@torch.no_grad()
def encode_dataset(
    model,
    dataset: Dataset,
    rt: Runtime,
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Encoded:
    """Concept maps, support, pooled activations and both models' logits for every sample of `dataset`.

    `on_batch(n)` is called after each batch of n images (progress display).
    """
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in Encoded.__dataclass_fields__}
    for images, labels in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        with rt.autocast():
            out = model.encode(images.to(rt.device))
        for name in ("concept_maps", "support", "pooled", "logits", "f_logits"):
            parts[name].append(getattr(out, name).float().cpu())
        parts["labels"].append(torch.as_tensor(labels))
        if on_batch is not None:
            on_batch(len(images))
    return Encoded(**{name: torch.cat(tensors) for name, tensors in parts.items()})


def stack_images(dataset: Dataset, indices: Sequence[int]) -> torch.Tensor:
    """The images of some samples of `dataset`, stacked."""
    return torch.stack([dataset[int(i)][0] for i in indices])


def encode_images(
    model, images: torch.Tensor, labels: torch.Tensor | None, rt: Runtime, batch_size: int = 64
) -> Encoded:
    """Like `encode_dataset`, for a few images in memory (label -1 where unknown)."""
    labels = torch.full((len(images),), -1, dtype=torch.long) if labels is None else labels
    return encode_dataset(model, TensorDataset(images, labels), rt, batch_size=batch_size)
