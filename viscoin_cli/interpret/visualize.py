"""Concept visualisation grids (paper §3.5, App. E): a λ sweep per sample, and optional difference views.

One row per sample; columns: the input, x̃_λ for each λ (λ = 1 is the plain reconstruction), then with
`diff` three views per λ ≠ 1 that show what scaling the concept changes:
    added    max(x̃_λ − x̃_1, 0)   (what appears)
    removed  max(x̃_1 − x̃_λ, 0)   (what fades: "its reverse")
    energy   ‖x̃_λ − x̃_1‖² summed over channels, per pixel, in gray
Each view is mapped into [-1, 1] for display, black = no change and white = the largest change of its
row, so the columns of one sample share a scale and a larger λ visibly changes more.
`ConceptGrids` picks the samples, renders and writes a grid, and says in JSON what each row shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from viscoin_cli.data.images import ImageDataset
from viscoin_cli.interpret.amplify import amplify, top_activating
from viscoin_cli.interpret.encode import Encoded, stack_images
from viscoin_cli.interpret.relevance import relevance_tables, top_concepts
from viscoin_cli.io.images import save_grid

PADDING = 2  # pixels between grid tiles (save_grid's default)


def lambda_name(lam: float) -> str:
    return f"lambda={lam:g}"


def column_names(lambdas: Sequence[float], diff: bool) -> list[str]:
    """Names of the grid's columns, in order (the JSON output lists them)."""
    names = ["input", *(lambda_name(lam) for lam in lambdas)]
    if diff:
        for lam in lambdas:
            if lam != 1:
                names += [f"added {lambda_name(lam)}", f"removed {lambda_name(lam)}", f"energy {lambda_name(lam)}"]
    return names


def difference_views(renders: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """[N, L, C, H, W] renders (one of them at λ = 1) -> [N, 3·(L−1), C, H, W] added / removed / energy views."""
    lambdas = list(lambdas)
    base = renders[:, lambdas.index(1)]
    others = [j for j, lam in enumerate(lambdas) if lam != 1]
    delta = renders[:, others] - base[:, None]  # [N, M, C, H, W] in [-2, 2]
    if not others:
        return delta
    tiny = torch.finfo(delta.dtype).tiny
    span = delta.abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(tiny)  # largest change of the row
    added = delta.clamp_min(0) / span * 2 - 1
    removed = (-delta).clamp_min(0) / span * 2 - 1
    energy = delta.pow(2).sum(dim=2, keepdim=True)
    energy = energy / energy.amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(tiny) * 2 - 1
    views = torch.stack([added, removed, energy.expand_as(added)], dim=2)  # [N, M, 3, C, H, W]
    return views.flatten(1, 2)


def sweep_tiles(inputs: torch.Tensor, renders: torch.Tensor, lambdas: Sequence[float], diff: bool) -> torch.Tensor:
    """The grid's images in row-major order, [N·columns, C, H, W]: input, renders, then difference views."""
    parts = [inputs[:, None].to(renders.dtype), renders]
    if diff:
        parts.append(difference_views(renders, lambdas))
    return torch.cat(parts, dim=1).flatten(0, 1)


def best_pairs(relevance: torch.Tensor, count: int) -> list[tuple[int, int]]:
    """The `count` (class, concept) pairs of highest global relevance [C, K]; ties in (class, concept) order."""
    _, flat = top_concepts(relevance.flatten(), count)
    return [divmod(int(i), relevance.shape[1]) for i in flat]


@dataclass
class ConceptGrids:
    """Grids of one model, all with the same λ columns (and difference views when `diff`)."""

    model: Any
    class_names: list[str]
    lambdas: list[float]
    diff: bool
    batch_size: int

    def of_images(
        self, encoded: Encoded, pictures: torch.Tensor, paths: Sequence[Path], concept: int, out: Path
    ) -> dict[str, Any]:
        """The grid of image files (encoded, and loaded as `pictures`): one row per file."""
        head = {"class": None, "class_name": None, "class_relevance": None, "indices": None}
        return self.write(encoded, pictures, concept, out, [{"image": str(path)} for path in paths], head)

    def of_class(
        self,
        encoded: Encoded,
        test_set: ImageDataset,
        relevance: torch.Tensor,
        cls: int,
        concept: int,
        samples: int,
        out: Path,
    ) -> dict[str, Any]:
        """The grid of the `samples` test images (of the whole split's `encoded`) predicted as `cls` where the
        concept is most active; `relevance` is the split's global relevance."""
        indices = top_activating(encoded, concept, samples, cls=cls).tolist()
        head = {
            "class": cls,
            "class_name": self.class_names[cls],
            "class_relevance": float(relevance[cls, concept]),
            "indices": indices,
        }
        inputs = stack_images(test_set, indices)
        sources = [{"index": index} for index in indices]
        return self.write(encoded.subset(torch.tensor(indices)), inputs, concept, out, sources, head)

    def write(
        self,
        encoded: Encoded,
        inputs: torch.Tensor,
        concept: int,
        out: Path,
        sources: list[dict[str, Any]],
        head: dict[str, Any],
    ) -> dict[str, Any]:
        """Render and write one grid; what the JSON says about it (`sources`: where each row comes from)."""
        renders = amplify(self.model, encoded.concept_maps, encoded.support, concept, self.lambdas, self.batch_size)
        columns = column_names(self.lambdas, self.diff)
        tiles = sweep_tiles(inputs, renders, self.lambdas, self.diff)
        save_grid(tiles, out, columns=len(columns), padding=PADDING)
        local, _ = relevance_tables(self.model, encoded)
        rows = []
        for row, source in enumerate(sources):
            predicted, label = int(encoded.predicted[row]), int(encoded.labels[row])
            rows.append(
                {
                    **source,
                    "label": label if label >= 0 else None,
                    "predicted": predicted,
                    "predicted_name": self.class_names[predicted],
                    "activation": float(encoded.pooled[row, concept]),
                    "relevance": float(local[row, concept]),
                }
            )
        size = inputs.shape[-1]
        return {
            "path": str(out),
            "concept": concept,
            **head,
            "lambdas": self.lambdas,
            "columns": columns,
            "samples": rows,
            "grid": {
                "rows": len(rows),
                "columns": len(columns),
                "width": len(columns) * (size + PADDING) + PADDING,
                "height": len(rows) * (size + PADDING) + PADDING,
            },
        }
