"""What `viscoin relevance` says about a model (paper §3.5), as JSON-ready documents.

Local documents: per image, its prediction and the concepts it rests on most. Global documents: per class,
the concepts most relevant to it over the test images predicted as it. The JSON output, the tables and the
CSV all read these documents, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from viscoin_cli.data.images import ImageDataset
from viscoin_cli.interpret.encode import Encoded, encode_images, stack_images
from viscoin_cli.interpret.relevance import class_mean, relevance_tables, top_concepts
from viscoin_cli.runtime import Runtime

CSV_COLUMNS = ("kind", "subject", "class", "class_name", "rank", "concept", "relevance", "activation")


def ranked(scores: torch.Tensor, activations: torch.Tensor, k: int) -> list[dict[str, Any]]:
    """The k most relevant concepts of one row of scores, best first, with their activations."""
    values, order = top_concepts(scores, k)
    return [
        {"rank": rank, "concept": int(c), "relevance": float(v), "activation": float(activations[c])}
        for rank, (v, c) in enumerate(zip(values.tolist(), order.tolist(), strict=True), 1)
    ]


@dataclass
class Explainer:
    """A model on its runtime, explained `top_k` concepts at a time, with its classes' names."""

    model: Any
    rt: Runtime
    class_names: list[str]
    top_k: int
    batch_size: int

    def local(self, encoded: Encoded, heads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One document per encoded image: its `head` (what the image is), its prediction, its top concepts."""
        local, _ = relevance_tables(self.model, encoded)
        probabilities = encoded.logits.softmax(1)
        documents = []
        for row, head in enumerate(heads):
            predicted = int(encoded.predicted[row])
            documents.append(
                {
                    **head,
                    "predicted": predicted,
                    "predicted_name": self.class_names[predicted],
                    "probability": float(probabilities[row, predicted]),
                    "concepts": ranked(local[row], encoded.pooled[row], self.top_k),
                }
            )
        return documents

    def images(self, pictures: torch.Tensor, paths: Sequence[Path]) -> list[dict[str, Any]]:
        """Local documents of image files (already loaded as `pictures`)."""
        encoded = encode_images(self.model, pictures, None, self.rt, self.batch_size)
        return self.local(encoded, [{"image": str(path)} for path in paths])

    def samples(self, test_set: ImageDataset, indices: list[int], full: Encoded | None) -> list[dict[str, Any]]:
        """Local documents of test samples, read off the whole split's encoding when there is one."""
        labels = [test_set.labels[i] for i in indices]
        if full is not None:
            encoded = full.subset(torch.tensor(indices))
        else:
            pixels = stack_images(test_set, indices)
            encoded = encode_images(self.model, pixels, torch.tensor(labels), self.rt, self.batch_size)
        names = self.class_names
        heads = [{"index": i, "label": y, "label_name": names[y]} for i, y in zip(indices, labels, strict=True)]
        return self.local(encoded, heads)

    def classes(self, full: Encoded, classes: Sequence[int]) -> list[dict[str, Any]]:
        """One global document per class, over the test images (`full`) predicted as it."""
        _, relevance = relevance_tables(self.model, full)
        num_classes = len(self.class_names)
        mean_activation = class_mean(full.pooled, full.predicted, num_classes)
        counts = torch.bincount(full.predicted, minlength=num_classes)
        return [
            {
                "class": c,
                "class_name": self.class_names[c],
                "samples": int(counts[c]),
                # no test image predicted as c: no relevance to rank (rather than K zeros in index order)
                "concepts": ranked(relevance[c], mean_activation[c], self.top_k) if counts[c] else [],
            }
            for c in classes
        ]


def csv_rows(local_docs: list[dict[str, Any]], global_docs: list[dict[str, Any]]) -> Iterator[list[Any]]:
    """One row per listed (subject, concept), under CSV_COLUMNS: local rows carry the predicted class, global
    rows the class."""

    def values(concept: dict[str, Any]) -> list[Any]:
        return [concept["rank"], concept["concept"], concept["relevance"], concept["activation"]]

    for doc in local_docs:
        kind = "image" if "image" in doc else "index"
        for concept in doc["concepts"]:
            yield [kind, doc[kind], doc["predicted"], doc["predicted_name"], *values(concept)]
    for doc in global_docs:
        for concept in doc["concepts"]:
            yield ["class", doc["class"], doc["class"], doc["class_name"], *values(concept)]
