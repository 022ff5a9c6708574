"""Unsupervised directions beside concept models: which concept each direction finds again.

`viscoin compare --directions` and `viscoin report --directions` take checkpoints of kind `directions` from
either method and pair them with the concept models on the page:

- `directions gan` (a generator's W space): each concept is paired with the direction whose shift changes
  its activation on the generator's images most (`interpret/direction_pairing.py`); the table shows, per
  direction, the concept it changes most;
- `directions classifier` (f's activations): each direction is paired with the concept whose pooled test
  activation correlates most with the direction's read-out (`interpret/direction_concepts.py`).

Either way the rows are directions and the cells concepts, so one table layout serves both. With
`ground_truth` (a dataset with attribute labels), a last column names the attribute value each direction finds
(`interpret/direction_truth.py`).
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from viscoin_cli.errors import UserError

METHODS = ("gan", "classifier")
# what a cell's number is
MEASURE = {
    "gan": "the concept's change from -ε to +ε along the direction, in spreads of the concept",
    "classifier": "Pearson r of the direction's read-out and the concept's activation",
}


def directions_method(path: str | os.PathLike) -> str:
    """The method a `directions` checkpoint comes from (a wrong kind or method is a one-line error)."""
    from viscoin_cli.io.checkpoint import read_meta

    meta = read_meta(path, kind="directions")
    method = meta.config.get("method")
    if method not in METHODS:
        raise UserError(f"{path}: directions of unknown method {method!r} (expected gan or classifier)")
    return str(method)


def pair_directions(
    directions: Sequence[Path],
    models: Sequence[Path],
    *,
    classifier: Path | None = None,
    generator: Path | None = None,
    data_root: Path | None = None,
    device: Any = "cpu",
    batch_size: int = 64,
    seed: int = 0,
    ground_truth: bool = False,
) -> list[dict[str, Any]]:
    """For each directions checkpoint, its pairing with every model (a list in the models' order). A model
    the method cannot pair (another f, another generator) gets `{"skipped": reason}` instead: one direction
    file need not fit every column of a comparison. With `ground_truth`, each entry also holds the directions'
    ground truth (`directions_ground_truth`), or `{"skipped": reason}` (e.g. a dataset without labels)."""
    from viscoin_cli.interpret.direction_concepts import pair_with_concepts
    from viscoin_cli.interpret.direction_pairing import pair_directions_with_concepts
    from viscoin_cli.interpret.direction_truth import directions_ground_truth

    methods = [directions_method(path) for path in directions]  # every header checked before any work
    entries = []
    for path, method in zip(directions, methods, strict=True):
        pairings = []
        for model in models:
            try:
                if method == "classifier":
                    result = pair_with_concepts(
                        path,
                        model,
                        classifier=classifier,
                        generator=generator,
                        data_root=data_root,
                        device=device,
                        batch_size=batch_size,
                    )
                else:
                    result = pair_directions_with_concepts(model, path, device=device, batch_size=batch_size, seed=seed)
            except UserError as err:
                result = {"model": str(model), "skipped": str(err)}
            pairings.append(result)
        entry = {"path": str(path), "method": method, "pairings": pairings}
        if ground_truth:
            try:
                entry["ground_truth"] = directions_ground_truth(
                    path,
                    classifier=classifier,
                    generator=generator,
                    data_root=data_root,
                    device=device,
                    batch_size=batch_size,
                    seed=seed,
                )
            except UserError as err:
                entry["ground_truth"] = {"skipped": str(err)}
        entries.append(entry)
    return entries


Cell = tuple[int, float] | None  # (concept, measure), None where the model was skipped


def direction_cells(entry: dict[str, Any]) -> list[list[Cell]]:
    """The table of one directions file: a row per direction, a cell per model: the concept the direction
    finds and its measure (`MEASURE`)."""
    method = entry["method"]
    by_model: list[dict[int, dict[str, Any]]] = []
    for pairing in entry["pairings"]:
        found = pairing.get("pairs" if method == "classifier" else "by_direction") or []
        by_model.append({int(row["direction"]): row for row in found})
    count = max((len(found) for found in by_model), default=0)
    key = "correlation" if method == "classifier" else "score"
    return [
        [(int(found[d]["concept"]), float(found[d][key])) if d in found else None for found in by_model]
        for d in range(count)
    ]


def truth_cells(entry: dict[str, Any]) -> list[str] | None:
    """Each direction's ground-truth value as text ("shape=circle (AUC 0.98)"; a generator direction's with the
    sign of its shift and its flip rate), None without a ground truth."""
    truth = entry.get("ground_truth") or {}
    if "by_direction" not in truth:
        return None
    shown = []
    for row in truth["by_direction"]:
        if row.get("auc") is not None:
            shown.append(f"{row['attribute']}={row['value']} (AUC {row['auc']:.2f})")
        elif row.get("flip_rate") is not None:
            sign = "+" if row["sign"] > 0 else "-"
            shown.append(f"{row['attribute']}={row['value']} ({sign}ε, flip {row['flip_rate']:.2f})")
        else:
            shown.append("")
    return shown


def columns(entry: dict[str, Any], headings: Sequence[str]) -> list[str]:
    """The table's column names: direction, a model each, and the ground truth when there is one."""
    return ["direction", *headings, *(["ground truth"] if truth_cells(entry) is not None else [])]


def direction_rows(entry: dict[str, Any]) -> list[list[str]]:
    """`direction_cells` as text: "d3", then "12 (+0.93)" per model (empty where skipped), then the ground
    truth's cell when there is one."""
    truth = truth_cells(entry)
    rows = [
        [f"d{d}", *("" if cell is None else f"{cell[0]} ({cell[1]:+.2f})" for cell in row)]
        for d, row in enumerate(direction_cells(entry))
    ]
    if truth is not None:
        rows = [[*row, truth[d] if d < len(truth) else ""] for d, row in enumerate(rows)]
    return rows


def truth_summary(entry: dict[str, Any]) -> list[str]:
    """One line on the directions' ground truth (none when it was not asked for)."""
    truth = entry.get("ground_truth")
    if truth is None:
        return [f"ground truth: none ({entry['ground_truth_reason']})"] if entry.get("ground_truth_reason") else []
    if "skipped" in truth:
        return [f"ground truth: skipped ({truth['skipped']})"]
    if truth["method"] == "classifier":
        return [
            f"ground truth: mean best AUC {truth['mean_auc']:.3f}; {truth['captured']} of {truth['targets']} "
            f"attribute values captured (a direction with AUC ≥ {truth['threshold']:g})"
        ]
    flip = "—" if truth["flip_rate"] is None else f"{truth['flip_rate']:.3f}"
    return [
        f"ground truth (shift test: ±{truth['shift']:g} σ_W on {truth['samples']} latents, read by an attribute "
        f"probe): mean best flip rate {flip}; {truth['controlled']} of {truth['targets']} attribute values drawn "
        f"in ≥ {truth['control_threshold']:.0%} of G's images without them"
    ]


def direction_summary(entry: dict[str, Any]) -> list[str]:
    """One line per model: how much of the dictionary the directions find again."""
    lines = []
    for pairing in entry["pairings"]:
        model = Path(pairing.get("model", "?")).name
        if "skipped" in pairing:
            lines.append(f"{model}: skipped ({pairing['skipped']})")
        elif entry["method"] == "classifier":
            lines.append(
                f"{model}: mean best correlation {pairing['mean_best_correlation']:.3f}, "
                f"{pairing['distinct_concepts']} distinct concepts for {len(pairing['pairs'])} directions"
            )
        else:
            strong = sum(abs(pair["score"]) >= 1 for pair in pairing["pairs"])
            lines.append(
                f"{model}: {strong} of {pairing['num_concepts']} concepts move by at least one spread along some "
                f"direction ({len(pairing['dead_concepts'])} dead on G's images)"
            )
    return lines + truth_summary(entry)


def title(entry: dict[str, Any]) -> str:
    what = "generator W-space directions" if entry["method"] == "gan" else "classifier direction pairs"
    return f"{what}: {entry['path']}; cells: concept ({MEASURE[entry['method']]})"


def directions_html(
    entries: Sequence[dict[str, Any]], headings: Sequence[str], link: Callable[[int], str] | None = None
) -> str:
    """The pairing tables as an HTML section of the report (`headings`: the models' column names; `link`
    turns a concept into HTML, e.g. a link to its card)."""
    link = link or (lambda concept: f"concept {concept}")
    parts = ['<section id="directions"><h2>Unsupervised directions and the concepts they find</h2>']
    for entry in entries:
        parts.append(f"<h3>{html.escape(title(entry))}</h3>")
        parts.append("".join(f"<p>{html.escape(line)}</p>" for line in direction_summary(entry)))
        head = "".join(f"<th>{html.escape(name)}</th>" for name in columns(entry, headings))
        truth = truth_cells(entry)
        body = "".join(
            f"<tr><td>d{d}</td>"
            + "".join("<td></td>" if cell is None else f"<td>{link(cell[0])} ({cell[1]:+.2f})</td>" for cell in row)
            + ("" if truth is None else f"<td>{html.escape(truth[d] if d < len(truth) else '')}</td>")
            + "</tr>"
            for d, row in enumerate(direction_cells(entry))
        )
        parts.append(f'<table class="directions"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    parts.append("</section>")
    return "".join(parts)
