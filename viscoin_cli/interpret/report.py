"""The static HTML report: a model's metrics, its dictionary health, and one card per concept (paper §3.5's views).

Written as DIR/index.html plus DIR/images/*.png, linked relatively, with inline CSS and a few lines of
inline script: no server, no network, no CDN, so the folder opens in any browser wherever it is copied.
Images are files rather than base64 data URIs so that a K=256, 256 px report stays a page a browser opens
at once (inline, it would be ~100 MB of HTML). If the images/ folder is left behind, the page says so.
"""

from __future__ import annotations

import datetime
import html
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from viscoin_cli import __version__
from viscoin_cli.interpret.amplify import top_activating
from viscoin_cli.interpret.encode import Encoded, stack_images
from viscoin_cli.interpret.heatmaps import concept_heatmaps, heat_overlay
from viscoin_cli.interpret.relevance import relevance_tables, top_concepts
from viscoin_cli.interpret.tables import summary_rows
from viscoin_cli.io.images import save_grid

IMAGES = "images"
EXPLAIN = "explain"  # the explain cards of top samples, linked from the cards
RELEVANT = 0.2  # a concept "matters" for a sample when its local relevance exceeds this (faithfulness' τ)


@dataclass
class Card:
    """What one concept card shows."""

    concept: int
    top_classes: list[tuple[str, float]]  # (class name, global relevance > 0), most relevant first
    max_activation: float
    mean_activation: float
    relevant_share: float  # fraction of samples where r_{k,x} > RELEVANT
    top_samples: list[int]  # split indices, most activating first (each one a `sample_link` on the page)
    lambda_image: str  # path relative to the report folder
    top_image: str
    heatmap_image: str | None = None  # the top samples' heatmaps: map overlays, then gradient overlays
    consistency: float | None = None
    dead: bool = False  # never active on the test split (health)
    duplicates: list[tuple[int, float]] = field(default_factory=list)  # (partner concept, correlation of φ̄)
    active_fraction: float | None = None  # share of test samples where the concept is active (health)


def health_marks(health: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """Per concept, what the `health` metric (metrics/health.py) says of it: dead, its duplicates (partner, r)
    most correlated first, its active fraction. Read off the metric's JSON so the cards and the health
    section can never disagree."""
    if health is None:
        return {}
    active = health["active_fraction"]["per_concept"]
    marks: dict[int, dict[str, Any]] = {
        k: {"dead": False, "duplicates": [], "active_fraction": fraction} for k, fraction in enumerate(active)
    }
    for k in health["dead"]["indices"]:
        marks[k]["dead"] = True
    for k1, k2, r in health["duplicates"]["pairs"]:  # most correlated first: so is each card's list
        marks[k1]["duplicates"].append((k2, r))
        marks[k2]["duplicates"].append((k1, r))
    return marks


@torch.no_grad()
def lambda_strips(
    model,
    encoded: Encoded,
    samples: Sequence[int],
    concepts: Sequence[int],
    lambdas: Sequence[float],
    batch_size: int,
    autocast: Callable[[], Any],
) -> torch.Tensor:
    """[n, L, C, H, W]: sample i rendered with Φ_{concept i} scaled by each λ.

    Like `amplify`, but batched across concepts (one sample each), so a K=256 report is ~4K/batch render
    calls instead of 4K.
    """
    device = next(model.parameters()).device
    index = torch.as_tensor(list(samples)).repeat_interleave(len(lambdas))
    which = torch.as_tensor(list(concepts)).repeat_interleave(len(lambdas))
    scale = torch.as_tensor(list(lambdas), dtype=torch.float32).repeat(len(samples))
    renders = []
    for start in range(0, len(index), batch_size):
        part = slice(start, start + batch_size)
        maps = encoded.concept_maps[index[part]].clone()
        rows = torch.arange(len(maps))
        maps[rows, which[part]] *= scale[part, None, None]
        with autocast():
            rendered = model.render(maps.to(device), encoded.support[index[part]].to(device))
        renders.append(rendered.float().clamp(-1, 1).cpu())
    images = torch.cat(renders)
    return images.reshape(len(samples), len(lambdas), *images.shape[1:])


def heatmap_tiles(model, images: torch.Tensor, concepts: Sequence[int], batch_size: int) -> torch.Tensor:
    """[P, 2, 3, H, W]: image p under concept p's map heatmap, then under its gradient heatmap.

    One row per (sample, concept) pair and `batch_size` pairs per pass whatever their concepts
    (`concept_heatmaps` reads a concept per image row), so a K = 256 report with 8 top samples takes
    256·8/batch passes through f and back, not one per concept.
    """
    which = torch.as_tensor(list(concepts))
    tiles = []
    for start in range(0, len(images), batch_size):
        part = images[start : start + batch_size]
        heat = concept_heatmaps(model, part, which[start : start + batch_size, None])
        tiles.append(torch.stack([heat_overlay(part, heat.maps[:, 0]), heat_overlay(part, heat.gradients[:, 0])], 1))
    return torch.cat(tiles)


def build_cards(
    model,
    encoded: Encoded,
    dataset,
    concepts: Sequence[int],
    out: Path,
    *,
    lambdas: Sequence[float],
    top: int,
    top_classes: int,
    batch_size: int,
    autocast: Callable[[], Any],
    consistency: dict[str, float] | None = None,
    health: dict[str, Any] | None = None,
    on_concept: Callable[[int], None] | None = None,
) -> list[Card]:
    """Render and write every card's images into out/images/, and return what the cards say (with what the
    `health` metric's JSON says of each concept, when given)."""
    marks = health_marks(health)
    class_names = list(dataset.class_names)
    local, relevance = relevance_tables(model, encoded)  # [N, K], [C, K]
    folder = out / IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("concept-*.png"):  # a previous report's cards, maybe of other concepts
        stale.unlink()
    tops = [top_activating(encoded, k, top) for k in concepts]
    cards = []
    chunk = max(1, batch_size // len(lambdas))  # concepts per rendering round: bounded memory for K=256
    for start in range(0, len(concepts), chunk):
        part = list(concepts[start : start + chunk])
        part_tops = tops[start : start + chunk]
        strips = lambda_strips(model, encoded, [int(t[0]) for t in part_tops], part, lambdas, batch_size, autocast)
        originals = [stack_images(dataset, indices) for indices in part_tops]
        pairs = [concept for concept, images in zip(part, originals, strict=True) for _ in range(len(images))]
        heat = heatmap_tiles(model, torch.cat(originals), pairs, batch_size).split([len(o) for o in originals])
        for concept, indices, strip, images, tiles in zip(part, part_tops, strips, originals, heat, strict=True):
            lambda_name = f"{IMAGES}/concept-{concept:03d}-lambda.png"
            top_name = f"{IMAGES}/concept-{concept:03d}-top.png"
            heatmap_name = f"{IMAGES}/concept-{concept:03d}-heatmaps.png"
            save_grid(torch.cat([images[:1], strip]), out / lambda_name, columns=len(lambdas) + 1)
            save_grid(images, out / top_name, columns=len(images))
            # two rows under the top samples' columns: the map overlays, then the gradient overlays
            save_grid(tiles.transpose(0, 1).flatten(0, 1), out / heatmap_name, columns=len(images))
            values, classes = top_concepts(relevance[:, concept], min(top_classes, len(class_names)))
            ranked = zip(classes.tolist(), values.tolist(), strict=True)
            cards.append(
                Card(
                    concept=concept,
                    top_classes=[(class_names[c], v) for c, v in ranked if v > 0],
                    max_activation=encoded.pooled[:, concept].max().item(),
                    mean_activation=encoded.pooled[:, concept].mean().item(),
                    relevant_share=(local[:, concept] > RELEVANT).float().mean().item(),
                    top_samples=[int(i) for i in indices],
                    lambda_image=lambda_name,
                    top_image=top_name,
                    heatmap_image=heatmap_name,
                    consistency=(consistency or {}).get(str(concept)),
                    **marks.get(concept, {}),
                )
            )
            if on_concept is not None:
                on_concept(concept)
    return cards


# ---------------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1em 2em; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin: .2em 0 .4em; }
.meta { color: #555; } code { background: #eee; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0 1.5em; background: #fff; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--card), 1fr)); gap: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .7em .9em; }
.card figure { margin: .5em 0; } .card figcaption { color: #555; font-size: .9em; }
.card img { max-width: 100%; height: auto; display: block; }
img.pixelated { image-rendering: pixelated; }
.classes { margin: .4em 0; } .stats { color: #555; font-size: .9em; }
#banner { display: none; background: #fde2e1; border: 1px solid #e99; padding: .6em 1em; margin: 1em 0; }
#filter { padding: .3em .5em; width: 26em; }
.badge { display: inline-block; border-radius: 3px; padding: 0 .45em; margin: .15em .3em .15em 0; font-size: .9em; }
.badge.dead { background: #fde2e1; border: 1px solid #e99; }
.badge.duplicate { background: #fff3cd; border: 1px solid #e6c96b; }
#health td:first-child { white-space: nowrap; } details { margin: .3em 0; }
"""

SCRIPT = """
(function () {
  function check() {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; });
    document.body.setAttribute("data-images", broken.length ? "broken" : "ok");
    document.body.setAttribute("data-images-loaded", String(images.length - broken.length));
    if (broken.length) {
      var banner = document.getElementById("banner");
      banner.textContent = broken.length + " of " + images.length +
        " images did not load: keep the images/ folder next to index.html.";
      banner.style.display = "block";
    }
  }
  if (document.readyState === "complete") { check(); } else { window.addEventListener("load", check); }
  var filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var text = filter.value.trim().toLowerCase();
      document.querySelectorAll(".card").forEach(function (card) {
        card.hidden = text !== "" && card.getAttribute("data-search").indexOf(text) < 0;
      });
    });
  }
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _metrics_html(document: dict[str, Any] | None, source: str | None) -> str:
    if document is None:
        return (
            "<p class='meta'>No metrics on this page: run <code>viscoin evaluate all --json</code> and pass its "
            "output with <code>--metrics-json</code>, or pass <code>--metrics</code>.</p>"
        )
    shown_metrics = {name: value for name, value in document["metrics"].items() if name != "health"}  # own section
    rows = "".join(
        f"<tr><td><code>{_e(key)}</code></td><td class='num'>{_e(value)}</td><td>{_e(detail)}</td></tr>"
        for key, value, detail in summary_rows(shown_metrics)
    )
    settings = document.get("settings", {})
    shown = ", ".join(
        f"{name} {value}" for name, value in settings.items() if value is not None and not name.endswith("_weights")
    )
    seconds = ", ".join(f"{name} {value:.1f} s" for name, value in document.get("seconds", {}).items())
    origin = f" (from {_e(source)})" if source else ""
    return (
        f"<table><tr><th>key</th><th>value</th><th>detail</th></tr>{rows}</table>"
        f"<p class='meta'>Settings{origin}: {_e(shown)}.<br>Time: {_e(seconds)}.</p>"
    )


def concept_ref(concept: int, shown: set[int]) -> str:
    """A concept named in the text ("concept 17"), linked to its card when the card is on this page."""
    if concept in shown:
        return f"<a href='#concept-{concept}'>concept {concept}</a>"
    return f"concept {concept} (no card here)"


def _health_html(health: dict[str, Any] | None, source: str, shown: set[int], class_names: Sequence[str]) -> str:
    """The `health` metric (metrics/health.py) as a table whose concepts link to their cards."""
    if health is None:
        return "<p class='meta'>No dictionary health on this page.</p>"
    dead, duplicates, per_class, active = (
        health[name] for name in ("dead", "duplicates", "per_class", "active_fraction")
    )
    dead_list = ", ".join(concept_ref(k, shown) for k in dead["indices"]) or "none"
    pairs = (
        ", ".join(
            f"{concept_ref(k1, shown)} ~ {concept_ref(k2, shown)} (corr {r:.3f})" for k1, k2, r in duplicates["pairs"]
        )
        or "none"
    )
    names = list(class_names) or [str(c) for c in range(len(per_class["counts"]))]
    counts = ", ".join(
        f"{_e(name)}: {'—' if n is None else n}" for name, n in zip(names, per_class["counts"], strict=False)
    )

    def number(value: float | None, digits: str = ".3f") -> str:
        return "—" if value is None else format(value, digits)

    spread = (
        "no class is predicted"
        if per_class["min"] is None
        else f"mean {number(per_class['mean'], '.2f')}, min {per_class['min']:g}, median {per_class['median']:g}, "
        f"max {per_class['max']:g} over {per_class['classes']} predicted classes"
    )
    rows = [
        ("dead", f"{dead['count']} of {health['concepts']}", f"never active (φ̄ ≤ {health['epsilon']:g}): {dead_list}"),
        (
            "near duplicates",
            str(duplicates["count"]),
            f"pairs whose φ̄ correlate above {duplicates['threshold']:g}: {pairs}",
        ),
        (
            "active fraction",
            number(active["mean"]),
            f"mean share of test images where a concept is active; min {number(active['min'])}, median "
            f"{number(active['median'])}, max {number(active['max'])}",
        ),
        (
            f"concepts for {per_class['share']:.0%} of a class",
            number(per_class["mean"], ".2f"),
            f"the fewest concepts carrying {per_class['share']:.0%} of a class's positive relevance: {spread}"
            f"<details><summary>per class</summary>{counts}</details>",
        ),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td class='num'>{value}</td><td>{detail}</td></tr>" for name, value, detail in rows
    )
    return (
        f"<table id='health' data-dead='{dead['count']}' data-duplicates='{duplicates['count']}'>"
        f"<tr><th>what</th><th>value</th><th>detail</th></tr>{body}</table>"
        f"<p class='meta'>On the {health['samples']} test images ({_e(source)}); "
        "<code>viscoin evaluate health</code> gives the same numbers.</p>"
    )


def _comparison_html(document: dict[str, Any]) -> str:
    """`viscoin compare`'s table: a column per model (this report's first), the best value of a row in bold."""
    from viscoin_cli.interpret.compare import best, cells, row_label, settings_line

    models = document["models"]
    mark = [" (this report)"] + [""] * (len(models) - 1)
    head = "".join(
        f"<th class='num'>{_e(model['method'])}<br><code>{_e(model['label'])}</code>{mark[i]}</th>"
        for i, model in enumerate(models)
    )
    rows = []
    for row in document["rows"]:
        winners = best(row)
        shown = "".join(
            f"<td class='num'><b>{_e(text)}</b></td>" if i in winners else f"<td class='num'>{_e(text)}</td>"
            for i, text in enumerate(cells(row))
        )
        rows.append(f"<tr data-key='{_e(row['key'])}'><td>{_e(row_label(row))}</td>{shown}</tr>")
    sources = "; ".join(f"{model['label']}: {', '.join(model['sources']) or 'nothing'}" for model in models)
    notes = "".join(f"<br>Note: {_e(note)}" for note in document.get("notes", []))
    return (
        f"<table id='comparison'><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"
        f"<p class='meta'>Paired numbers (the same test samples for every model): {_e(settings_line(document))}."
        f"<br>Numbers from: {_e(sources)}.{notes}</p>"
    )


def sample_link(concept: int, sample: int, explained: dict[int, str]) -> str:
    """One top sample of a concept card, by its split index, linked to its explain card when the report
    wrote one (`explained`: split index -> card path relative to the page)."""
    attributes = f"class='sample' data-sample='{sample}' data-concept='{concept}'"
    if sample in explained:
        return f"<a {attributes} href='{_e(explained[sample])}' title='why this prediction'>{sample}</a>"
    return f"<span {attributes}>{sample}</span>"


def explain_cards(
    model,
    dataset,
    split: str,
    indices: Sequence[int],
    out: Path,
    rt,
    top_k: int,
    batch_size: int,
    on_card: Callable[[int], None] | None = None,
) -> dict[int, str]:
    """`viscoin explain` cards of some samples of the split, written to out/explain/: split index -> path
    relative to the page. The cards are the explain command's own (interpret/explanation.py, cards.py)."""
    from viscoin_cli.interpret.cards import write_card
    from viscoin_cli.interpret.explanation import explain_images
    from viscoin_cli.io.images import upscale_factor

    folder = out / EXPLAIN
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):  # a previous report's cards, maybe of other samples
        stale.unlink()
    names = list(dataset.class_names)
    paths: dict[int, str] = {}
    for first in range(0, len(indices), batch_size):
        part = [int(i) for i in indices[first : first + batch_size]]
        heads = []
        for i in part:
            label = int(dataset.labels[i])
            heads.append({"split": split, "index": i, "label": label, "label_name": names[label]})
        pictures = stack_images(dataset, part)
        for head, explanation in zip(heads, explain_images(model, pictures, heads, names, rt, top_k), strict=True):
            name = f"{EXPLAIN}/{split}-{head['index']}.png"
            write_card(explanation, out / name, upscale_factor(pictures.shape[-1]))
            paths[head["index"]] = name
            if on_card is not None:
                on_card(head["index"])
    return paths


def _badges_html(card: Card, shown: set[int]) -> str:
    badges = ["<span class='badge dead'>dead: never active on the test split</span>"] if card.dead else []
    badges += [
        f"<span class='badge duplicate'>duplicate of {concept_ref(partner, shown)} (corr {r:.2f})</span>"
        for partner, r in card.duplicates
    ]
    return f"<div class='badges'>{''.join(badges)}</div>" if badges else ""


def _card_html(
    card: Card, lambdas: Sequence[float], width: int, pixelated: bool, shown: set[int], explained: dict[int, str]
) -> str:
    classes = ", ".join(f"<b>{_e(name)}</b> ({value:.3g})" for name, value in card.top_classes)
    classes = classes or "<span class='stats'>no class (the concept is never relevant)</span>"
    image_class = " class='pixelated'" if pixelated else ""
    lambda_caption = "the top sample, then rendered with Φ scaled by λ = " + ", ".join(f"{v:g}" for v in lambdas)
    consistency = f" · consistency {card.consistency:.3f}" if card.consistency is not None else ""
    active = (
        f" · active on {100 * card.active_fraction:.1f}% of test images" if card.active_fraction is not None else ""
    )
    marks = ["dead"] * card.dead + ["duplicate"] * bool(card.duplicates)
    search = " ".join([f"concept {card.concept}", *(name for name, _ in card.top_classes), *marks]).lower()
    samples = ", ".join(sample_link(card.concept, sample, explained) for sample in card.top_samples)
    linked = any(sample in explained for sample in card.top_samples)
    explain_note = "; a linked index opens its explain card" if linked else ""
    heatmaps = ""
    if card.heatmap_image is not None:
        none = " (no heat: the concept is dead)" if card.dead else ""
        heatmaps = f"""
  <figure><img{image_class} src="{_e(card.heatmap_image)}" width="{width * len(card.top_samples)}"
      alt="concept {card.concept}: heatmaps on the top-activating samples" loading="eager">
    <figcaption>Where the concept is in those samples: its map Φ upsampled (top row) and the gradient
      |∂φ̄/∂x| (bottom row), over the image in gray{none}</figcaption></figure>"""
    return f"""
<section class="card" id="concept-{card.concept}" data-concept="{card.concept}"
    data-samples="{",".join(map(str, card.top_samples))}" data-search="{_e(search)}">
  <h2>Concept {card.concept}</h2>{_badges_html(card, shown)}
  <div class="stats">max φ̄ {card.max_activation:.3f} · mean φ̄ {card.mean_activation:.3f} ·
    relevant (r &gt; {RELEVANT:g}) for {100 * card.relevant_share:.1f}% of samples{active}{consistency}</div>
  <p class="classes">Most relevant for: {classes}</p>
  <figure><img{image_class} src="{_e(card.lambda_image)}" width="{width * (len(lambdas) + 1)}"
      alt="concept {card.concept}: lambda strip" loading="eager">
    <figcaption>{_e(lambda_caption)}</figcaption></figure>
  <figure><img{image_class} src="{_e(card.top_image)}" width="{width * len(card.top_samples)}"
      alt="concept {card.concept}: top-activating samples" loading="eager">
    <figcaption>Most activating samples (indices {samples}{explain_note})</figcaption></figure>{heatmaps}
</section>"""


def render_html(
    *,
    model: dict[str, Any],
    dataset: dict[str, Any],
    split: str,
    cards: list[Card],
    lambdas: Sequence[float],
    top: int,
    metrics: dict[str, Any] | None,
    metrics_source: str | None,
    comparison: dict[str, Any] | None = None,
    method: str = "viscoin",
    health: dict[str, Any] | None = None,
    health_source: str = "computed",
    class_names: Sequence[str] = (),
    explained: dict[int, str] | None = None,
    directions: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The whole page as a string (with `viscoin compare`'s table when `comparison` is given, the pairing
    tables of `directions` (`interpret/direction_table.py`), and the
    dictionary health section from the `health` metric's JSON); `method` names the kind of model in the
    title (VisCoIN, FLINT, FLAEM)."""
    resolution = int(dataset["resolution"])
    scale = max(1, math.ceil(64 / resolution))  # tiny images are shown enlarged (pixelated)
    width = (resolution + 2) * scale
    card_width = max(width * (max(len(lambdas) + 1, top)) + 40, 320)
    shown = {card.concept for card in cards}
    body = "".join(_card_html(card, lambdas, width, scale > 1, shown, explained or {}) for card in cards)
    health_section = _health_html(health, health_source, shown, class_names)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path = Path(model["path"])
    name = {"viscoin": "VisCoIN"}.get(method, method.upper())
    title = f"{name} report: {path.parent.name}/{path.name}" if path.parent.name else f"{name} report: {path.name}"
    comparison_section = f"<h2>Comparison</h2>\n{_comparison_html(comparison)}\n" if comparison else ""
    if directions:
        from viscoin_cli.interpret.direction_table import directions_html

        comparison_section += directions_html(directions, [path.name], lambda c: concept_ref(c, shown)) + "\n"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS} :root {{ --card: {min(card_width, 1300)}px; }}</style>
</head>
<body data-images="pending">
<h1>{_e(title)}</h1>
<p class="meta">Model <code>{_e(model["path"])}</code> (sha256 {_e(model["sha256"])}, K = {model["concepts"]}
concepts) · dataset {_e(dataset["name"])}, {resolution} px, {_e(split)} split for relevance and samples ·
viscoin {_e(__version__)} · {created}</p>
<div id="banner"></div>
<h2>Metrics</h2>
{_metrics_html(metrics, metrics_source)}
<h2>Dictionary health</h2>
{health_section}
{comparison_section}<h2>Concepts ({len(cards)} of {model["concepts"]})</h2>
<p class="meta">Each card: the classes the concept is most relevant for (mean local relevance over the samples
predicted as the class), its top sample rendered with the concept map scaled by λ (λ = 1 is the
reconstruction, λ = 0 removes the concept), the samples where it activates most, and where the concept sits in
them (heatmaps). A badge marks a dead or near-duplicate concept (dictionary health).</p>
<p><input id="filter" type="search" placeholder="filter by class name, 'concept 12', 'dead' or 'duplicate'"></p>
<div class="cards">{body}
</div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(out: Path, page: str) -> Path:
    """index.html, written atomically."""
    path = out / "index.html"
    tmp = path.with_name(f".index.html.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
