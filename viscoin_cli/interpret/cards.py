"""The pictures `viscoin explain` writes: one PNG card per image, and an HTML index of the cards.

A card has two blocks, drawn with the one grid writer (io/images.py). The top block: the input, the
reconstruction x̃ and (with a counterfactual) the render without the counterfactual's concepts, labelled
with g's and f's top predictions. Below it one row per top concept: its map and gradient heatmaps over the
image, then its λ strip; the row label gives its relevance, activation, contribution to the logit and what
zeroing or doubling it does to g's and f's probability of the predicted class.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from viscoin_cli.interpret.explanation import STRIP, Explanation
from viscoin_cli.io.images import labelled_grid, save_array, stack_grids

PADDING = 2


def colour(images: torch.Tensor) -> torch.Tensor:
    """[N, 1|3, H, W] -> [N, 3, H, W] (gray images replicated) so that one card holds both kinds."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def source_name(document: dict[str, Any]) -> str:
    """What the card is of: "test #12 (label 3)" or the image file's name."""
    if "index" in document:
        return f"{document.get('split', 'test')} #{document['index']} (label {document['label_name']})"
    return Path(document["image"]).name


def prediction_lines(document: dict[str, Any]) -> str:
    """The top block's row label: g's and f's two most probable classes."""
    lines = []
    for predictor in ("g", "f"):
        for number, entry in enumerate(document[predictor][:2]):
            lead = f"{predictor}:" if number == 0 else "  "
            lines.append(f"{lead} {entry['name']} ({entry['probability']:.2f})")
    return "\n".join(lines)


def signed(value: float) -> str:
    """+0.31, -0.05, and +0.00 for anything that rounds to zero (never "-0.00")."""
    return f"{round(value, 2) + 0.0:+.2f}"


def concept_lines(concept: dict[str, Any]) -> str:
    """A concept row's label: what it is to the prediction and what editing it does."""
    zeroed, doubled = concept["zeroed"], concept["doubled"]
    return "\n".join(
        (
            f"concept {concept['concept']}",
            f"r {signed(concept['relevance'])}  a {concept['activation']:.2f}",
            f"logit {signed(concept['contribution'])}",
            f"zeroed g {signed(zeroed['g_change'])} f {signed(zeroed['f_change'])}",
            f"doubled g {signed(doubled['g_change'])} f {signed(doubled['f_change'])}",
        )
    )


def card_title(explanation: Explanation, model_name: str) -> str:
    doc = explanation.document
    g, f = doc["g"][0], doc["f"][0]
    parts = [
        model_name,
        source_name(doc),
        f"g predicts {g['name']} (p {g['probability']:.2f})",
        f"f predicts {f['name']} (p {f['probability']:.2f})",
    ]
    counterfactual = doc.get("counterfactual")
    if counterfactual is not None:
        removed = ", ".join(map(str, counterfactual["concepts"])) or "none"
        outcome = f"flips g to {counterfactual['to_name']}" if counterfactual["flipped"] else "does not flip g"
        parts.append(f"removing concepts {removed} {outcome}")
    return " · ".join(part for part in parts if part)


def write_card(explanation: Explanation, path: Path, scale: int, model_name: str = "") -> Path:
    """The card of one explanation as a PNG at `path` (atomically)."""
    doc = explanation.document
    top_tiles = [explanation.input, explanation.reconstruction]
    top_headers = ["input", "reconstruction"]
    if explanation.counterfactual is not None:
        top_tiles.append(explanation.counterfactual)
        removed = ", ".join(map(str, doc["counterfactual"]["concepts"]))
        top_headers.append(f"without {removed}" if removed else "nothing to remove")
    top = labelled_grid(
        colour(torch.stack(top_tiles)),
        columns=len(top_tiles),
        padding=PADDING,
        scale=scale,
        title=card_title(explanation, model_name),
        column_labels=top_headers,
        row_labels=[prediction_lines(doc)],
    )
    rows = [
        torch.cat(
            [
                explanation.map_overlays[i : i + 1],
                explanation.gradient_overlays[i : i + 1],
                colour(explanation.strips[i]),
            ]
        )
        for i in range(len(doc["concepts"]))
    ]
    blocks = [top]
    if rows:
        headers = ["concept map", "gradient", *(f"lambda = {lam:g}" for lam in STRIP)]
        blocks.append(
            labelled_grid(
                torch.cat(rows),
                columns=2 + len(STRIP),
                padding=PADDING,
                scale=scale,
                column_labels=headers,
                row_labels=[concept_lines(concept) for concept in doc["concepts"]],
            )
        )
    return save_array(stack_grids(blocks, gap=4 * PADDING), path)


def card_file_name(document: dict[str, Any], relative: str | None = None) -> str:
    """A card's file name: test-12.png for a test sample, the image's path (folders joined by "__") plus
    .png for a file, so that a.jpg and a.png in one folder get two cards."""
    if "index" in document:
        return f"{document.get('split', 'test')}-{document['index']}.png"
    name = relative if relative is not None else Path(document["image"]).name
    return name.replace(os.sep, "__").replace("/", "__") + ".png"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def index_html(title: str, documents: Sequence[dict[str, Any]], skipped: Sequence[dict[str, str]]) -> str:
    """A page listing every card (thumbnail linked to the full card) and every skipped file; inline CSS,
    no script, no external URL, links relative to the folder."""
    entries = []
    for doc in documents:
        concepts = ", ".join(f"{c['concept']} ({c['relevance']:+.2f})" for c in doc["concepts"])
        href = _e(doc["card"])
        entries.append(
            f"<figure id='{_e(Path(doc['card']).stem)}'><a href='{href}'><img src='{href}' loading='lazy' "
            f"alt='card of {_e(source_name(doc))}'></a><figcaption><b>{_e(source_name(doc))}</b><br>"
            f"g: {_e(doc['g'][0]['name'])} ({doc['g'][0]['probability']:.2f}) · "
            f"f: {_e(doc['f'][0]['name'])} ({doc['f'][0]['probability']:.2f})<br>"
            f"<span class='concepts'>concepts: {_e(concepts)}</span></figcaption></figure>"
        )
    skipped_html = ""
    if skipped:
        items = "".join(f"<li>{_e(item['image'])}: {_e(item['error'])}</li>" for item in skipped)
        skipped_html = f"<section class='skipped'><h2>Skipped ({len(skipped)})</h2><ul>{items}</ul></section>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
main {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; width: 360px; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }}
figure img {{ width: 100%; image-rendering: pixelated; }}
.concepts {{ color: #555; }}
.skipped {{ background: #fff4e5; padding: 0.5em 1em; border-radius: 6px; margin-bottom: 1em; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p>{len(documents)} image{"s" if len(documents) != 1 else ""} explained. Each card: the input, the reconstruction,
g's and f's predictions; one row per top concept with its heatmaps (concept map, input gradient), its λ strip
and what zeroing or doubling it does to the predicted class's probability.</p>
{skipped_html}
<main>
{"".join(entries)}
</main></body></html>
"""
