"""Concept visualisation grids (paper §3.5, App. E): a λ sweep per sample, and optional difference views.

One row per sample; columns: the input, x̃_λ for each λ (λ = 1 is the plain reconstruction), then with
`diff` three views per λ ≠ 1 that show what scaling the concept changes:
    added    max(x̃_λ − x̃_1, 0)   (what appears)
    removed  max(x̃_1 − x̃_λ, 0)   (what fades: "its reverse")
    energy   ‖x̃_λ − x̃_1‖² summed over channels, per pixel, in gray
Each view is mapped into [-1, 1] for display, black = no change and white = the largest change of its
row, so the columns of one sample share a scale and a larger λ visibly changes more.
With activation maximisation instead (`method="am"`, interpret/am.py, FLINT's way of showing a concept)
the columns are the input, AM's starting image and AM's result, then with `diff` the same three views of
result − start.
With an edit of several concepts at once (`edit={12: 3, 40: 0}`, interpret/edit.py) the columns are the
input, the reconstruction x̃ (every λ = 1), the edited render x̃', then with `diff` the views of x̃' − x̃;
each row also says what g and f predict on x̃ and on x̃' (read on the renders, as faithfulness reads it).
`ConceptGrids` picks the samples, renders and writes a grid, and says in JSON what each row shows. Grids are
upscaled (nearest neighbour, to about 128 px per tile) and labelled: a title with the model and the concept,
a header per column and, per row, where the sample comes from, g's predicted class and its probability;
`raw` writes the bare grid instead (one pixel per pixel, no text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from viscoin_cli.data.images import ImageDataset
from viscoin_cli.interpret.am import AMResult, AMSettings, maximize_concepts
from viscoin_cli.interpret.amplify import amplify, top_activating
from viscoin_cli.interpret.edit import render_edit, render_scaled_maps
from viscoin_cli.interpret.encode import Encoded, stack_images
from viscoin_cli.interpret.relevance import relevance_tables, top_concepts
from viscoin_cli.io.images import save_grid, upscale_factor

PADDING = 2  # pixels between grid tiles (save_grid's default)
AM_COLUMNS = ("input", "am start", "am")  # the sample, where AM started (init_scale · sample), AM's result
# Headers drawn over AM columns (Pillow's built-in font has no λ: "lambda" is spelled out for λ columns).
AM_HEADERS = {"am start": "start", "am": "AM", "added am": "added", "removed am": "removed", "energy am": "energy"}


EDIT_COLUMNS = ("input", "reconstruction", "edited")  # the sample, x̃ (all λ = 1), x̃' (the edit rendered)
CHANGE_COLUMNS = ("added", "removed", "energy")  # --diff views of edited − reconstruction


def edit_name(edit: Mapping[int, float]) -> str:
    """{12: 3.0, 40: 0.0} -> "12=3, 40=0": how titles, headers and output lines name an edit (no λ glyph in
    Pillow's built-in font)."""
    return ", ".join(f"{concept}={lam:g}" for concept, lam in edit.items())


def edit_column_names(diff: bool) -> list[str]:
    """Names of an edit grid's columns, in order."""
    return [*EDIT_COLUMNS, *(CHANGE_COLUMNS if diff else ())]


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


def column_header(name: str) -> str:
    """The header drawn over a column of this name: "lambda=3" -> "lambda = 3", "added lambda=3" -> "added" over
    "lambda = 3" (two lines), "am" -> "AM"."""
    return AM_HEADERS.get(name, name.replace(" lambda=", "\nlambda=").replace("lambda=", "lambda = "))


def am_column_names(diff: bool) -> list[str]:
    """Names of an AM grid's columns, in order."""
    return [*AM_COLUMNS, *(["added am", "removed am", "energy am"] if diff else [])]


def difference_views(renders: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """[N, L, C, H, W] renders (one of them at λ = 1) -> [N, 3·(L−1), C, H, W] added / removed / energy views."""
    lambdas = list(lambdas)
    others = [j for j, lam in enumerate(lambdas) if lam != 1]
    return change_views(renders[:, lambdas.index(1)], renders[:, others])


def change_views(base: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] base and [N, M, C, H, W] changed images -> [N, 3·M, C, H, W] added / removed / energy views
    of each change, scaled per row (white = the row's largest change)."""
    delta = changed - base[:, None]  # [N, M, C, H, W] in [-2, 2]
    if not delta.shape[1]:
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


def am_tiles(inputs: torch.Tensor, result: AMResult, diff: bool) -> torch.Tensor:
    """An AM grid's images in row-major order: input, start, result, then the views of result − start."""
    parts = [inputs[:, None].float(), result.start[:, None], result.images[:, None]]
    if diff:
        parts.append(change_views(result.start, result.images[:, None]))
    return torch.cat(parts, dim=1).flatten(0, 1)


def edit_tiles(inputs: torch.Tensor, plain: torch.Tensor, edited: torch.Tensor, diff: bool) -> torch.Tensor:
    """An edit grid's images in row-major order: input, reconstruction, edited, then the views of their change."""
    parts = [inputs[:, None].to(plain.dtype), plain[:, None], edited[:, None]]
    if diff:
        parts.append(change_views(plain, edited[:, None]))
    return torch.cat(parts, dim=1).flatten(0, 1)


def prediction_change(before: torch.Tensor, after: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """One predictor's class probabilities [classes] on the reconstruction and on the edited render: its class
    and probability on each, what the edit left of the class it predicted before, and whether that class changed."""
    was, now = int(before.argmax()), int(after.argmax())
    return {
        "before": {"class": was, "name": class_names[was], "probability": float(before[was])},
        "after": {"class": now, "name": class_names[now], "probability": float(after[now])},
        "before_class_after": float(after[was]),
        "flipped": now != was,
    }


def change_text(change: dict[str, Any]) -> str:
    """ "7 (0.98) -> 1 (0.64)": a prediction change as row labels and output lines show it."""
    was, now = change["before"], change["after"]
    return f"{was['name']} ({was['probability']:.2f}) -> {now['name']} ({now['probability']:.2f})"


def best_pairs(relevance: torch.Tensor, count: int) -> list[tuple[int, int]]:
    """The `count` (class, concept) pairs of highest global relevance [C, K]; ties in (class, concept) order."""
    _, flat = top_concepts(relevance.flatten(), count)
    return [divmod(int(i), relevance.shape[1]) for i in flat]


def relevant_pairs(relevance: torch.Tensor, threshold: float, count: int, seed: int) -> list[tuple[int, int]]:
    """`count` (class, concept) pairs drawn at random (seeded, no repeats) among those with global relevance
    r_{k,c} > threshold, in (class, concept) order; all of them when there are fewer."""
    flat = (relevance.flatten() > threshold).nonzero().flatten()
    if len(flat) > count:
        chosen = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:count]
        flat = flat[chosen.sort().values]
    return [divmod(int(i), relevance.shape[1]) for i in flat]


def render_scaled(model, encoded: Encoded, concepts: torch.Tensor, lam: float, batch_size: int) -> torch.Tensor:
    """x̃_λ [N, C, H, W] in [-1, 1] (CPU) of each encoded sample with its own concept `concepts[i]` scaled by λ:
    many (sample, concept) pairs in one batch, where `amplify` scales one concept for all samples."""
    scales = torch.ones(len(encoded), encoded.pooled.shape[1])
    scales[torch.arange(len(encoded)), concepts.cpu()] = lam
    return render_scaled_maps(model, encoded.concept_maps, encoded.support, scales, batch_size, predict=False).images


@dataclass
class ConceptGrids:
    """Grids of one model, all with the same λ columns (and difference views when `diff`), or AM's columns
    when `am` holds AM's settings."""

    model: Any
    class_names: list[str]
    lambdas: list[float]
    diff: bool
    batch_size: int
    am: AMSettings | None = None
    scale: int | None = None  # tile upscaling; None: upscale_factor of the resolution (about 128 px)
    raw: bool = False  # the bare grid: no upscaling, no text
    model_name: str = ""  # the title's first words (the model file's name)
    edit: dict[int, float] | None = None  # {concept: λ}: one edit of several concepts instead of a λ sweep

    def of_images(
        self, encoded: Encoded, pictures: torch.Tensor, paths: Sequence[Path], concept: int, out: Path
    ) -> dict[str, Any]:
        """The grid of image files (encoded, and loaded as `pictures`): one row per file."""
        head = {"class": None, "class_name": None, "class_relevance": None, "indices": None}
        sources = [{"image": str(path)} for path in paths]
        return self.write(encoded, pictures, concept, out, sources, head, self._title(concept))

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
        top = int(relevance[:, concept].argmax())
        if self.edit is not None:
            about = f"class {self.class_names[cls]} where concept {concept} is most active"
        else:
            about = f"most relevant to class {self.class_names[top]} (r = {float(relevance[top, concept]):+.3f})"
            if top != cls:
                about += f"; rows of class {self.class_names[cls]}"
        title = self._title(concept, about)
        return self.write(encoded.subset(torch.tensor(indices)), inputs, concept, out, sources, head, title)

    def _title(self, concept: int, about: str = "") -> str:
        """The grid's title line: the model, the concept, what the rows are, and how the concept is shown."""
        how = f"activation maximisation ({self.am.steps} steps)" if self.am is not None else ""
        what = f"concept {concept}" if self.edit is None else f"edit {edit_name(self.edit)}"
        return " · ".join(part for part in (self.model_name, what, about, how) if part)

    def write(
        self,
        encoded: Encoded,
        inputs: torch.Tensor,
        concept: int,
        out: Path,
        sources: list[dict[str, Any]],
        head: dict[str, Any],
        title: str,
    ) -> dict[str, Any]:
        """Render and write one grid; what the JSON says about it (`sources`: where each row comes from)."""
        if self.edit is not None:
            return self._write_edit(encoded, inputs, concept, out, sources, head, title)
        result = None
        if self.am is not None:
            concepts = [concept] * len(inputs)
            result = maximize_concepts(self.model, inputs, concepts, self.am, batch_size=self.batch_size)
            columns = am_column_names(self.diff)
            tiles = am_tiles(inputs, result, self.diff)
        else:
            renders = amplify(self.model, encoded.concept_maps, encoded.support, concept, self.lambdas, self.batch_size)
            columns = column_names(self.lambdas, self.diff)
            tiles = sweep_tiles(inputs, renders, self.lambdas, self.diff)
        local, _ = relevance_tables(self.model, encoded)
        probabilities = encoded.logits.float().softmax(1)
        rows = []
        for row, source in enumerate(sources):
            predicted, label = int(encoded.predicted[row]), int(encoded.labels[row])
            rows.append(
                {
                    **source,
                    "label": label if label >= 0 else None,
                    "predicted": predicted,
                    "predicted_name": self.class_names[predicted],
                    "probability": float(probabilities[row, predicted]),
                    "activation": float(encoded.pooled[row, concept]),
                    "relevance": float(local[row, concept]),
                    **self._am_row(result, row),
                }
            )
        headers = [column_header(c) for c in columns]
        row_labels = [
            f"{self._source(row)}\npredicted {row['predicted_name']}\np = {row['probability']:.2f}" for row in rows
        ]
        grid = self._save(tiles, out, inputs.shape[-1], columns, headers, row_labels, title)
        return {
            "path": str(out),
            "concept": concept,
            **head,
            "method": "render" if self.am is None else "am",
            "lambdas": self.lambdas if self.am is None else None,
            "am_steps": None if self.am is None else self.am.steps,
            "columns": columns,
            "samples": rows,
            "grid": grid,
        }

    def _write_edit(
        self,
        encoded: Encoded,
        inputs: torch.Tensor,
        concept: int,
        out: Path,
        sources: list[dict[str, Any]],
        head: dict[str, Any],
        title: str,
    ) -> dict[str, Any]:
        """The edit's grid: x̃ and x̃' rendered, and g and f read on both, through interpret/edit.py (so
        `explain`, the counterfactual search and this grid agree on what an edit does)."""
        assert self.edit is not None
        plain = render_edit(self.model, encoded, {}, self.batch_size)
        edited = render_edit(self.model, encoded, self.edit, self.batch_size)
        columns = edit_column_names(self.diff)
        tiles = edit_tiles(inputs, plain.images, edited.images, self.diff)
        local, _ = relevance_tables(self.model, encoded)
        rows = []
        for row, source in enumerate(sources):
            label = int(encoded.labels[row])
            g = prediction_change(plain.g_probabilities[row], edited.g_probabilities[row], self.class_names)
            f = prediction_change(plain.f_probabilities[row], edited.f_probabilities[row], self.class_names)
            rows.append(
                {
                    **source,
                    "label": label if label >= 0 else None,
                    "g": g,
                    "f": f,
                    "flipped": g["flipped"],
                    "activation": {str(k): float(encoded.pooled[row, k]) for k in self.edit},
                    "relevance": {str(k): float(local[row, k]) for k in self.edit},
                }
            )
        headers = [f"edited\n{edit_name(self.edit)}" if c == "edited" else c for c in columns]
        row_labels = [f"{self._source(row)}\ng {change_text(row['g'])}\nf {change_text(row['f'])}" for row in rows]
        grid = self._save(tiles, out, inputs.shape[-1], columns, headers, row_labels, title)
        return {
            "path": str(out),
            "concept": concept,
            **head,
            "method": "edit",
            "edit": {str(k): lam for k, lam in self.edit.items()},
            "lambdas": None,
            "am_steps": None,
            "columns": columns,
            "samples": rows,
            "grid": grid,
        }

    def _save(
        self,
        tiles: torch.Tensor,
        out: Path,
        resolution: int,
        columns: list[str],
        headers: list[str],
        row_labels: list[str],
        title: str,
    ) -> dict[str, Any]:
        """Write the grid, upscaled and labelled unless `raw`; the JSON's facts about it."""
        scale = 1 if self.raw else self.scale or upscale_factor(resolution)
        labels = {} if self.raw else {"title": title, "column_labels": headers, "row_labels": row_labels}
        save_grid(tiles, out, columns=len(columns), padding=PADDING, scale=scale, **labels)
        with Image.open(out) as picture:
            width, height = picture.size
        return {
            "rows": len(row_labels),
            "columns": len(columns),
            "width": width,
            "height": height,
            "scale": scale,
            "labelled": not self.raw,
        }

    @staticmethod
    def _source(row: dict[str, Any]) -> str:
        """Where a row's sample comes from, as its label's first line."""
        return f"test #{row['index']}" if "index" in row else Path(row["image"]).name

    @staticmethod
    def _am_row(result: AMResult | None, row: int) -> dict[str, float]:
        """What AM did to one row: φ̄_k at its start and of its result (nothing for a λ grid)."""
        if result is None:
            return {}
        return {
            "am_start_activation": float(result.start_activation[row]),
            "am_activation": float(result.activation[row]),
        }
