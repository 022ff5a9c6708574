"""Concept models side by side: the paper's comparison table (§4.1), one column per model, one row per metric.

The table is only worth reading when its numbers are paired: every model is evaluated by
metrics/evaluation.py with the same Settings (seed, test samples, consistency samples and concepts), and
explains the same classifier f on the same test split; anything else is refused, naming the two models.
A `viscoin evaluate --json` document can stand in for a model's computation (only what it lacks is
computed), and must then have been computed with the same settings. Consistency is measured at each λ
of the comparison (the paper: 2 and 4) by re-running the one consistency metric with the settings' λ
replaced. `viscoin compare` and `viscoin report --compare` both build their table with `compare`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viscoin_cli.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from viscoin_cli.io.checkpoint import CheckpointMeta
    from viscoin_cli.metrics.evaluation import Evaluation, Settings

DEFAULT_LAMBDAS = (2.0, 4.0)  # the paper's consistency λ values
COMPUTED = "computed"
SKIPPABLE = ("visualization_fid",)  # metrics a model may be unable to give: an empty cell and a note, not an error
# The settings that decide which samples the numbers come from, with the option that sets each: two numbers
# computed with different values are not paired. (batch size, device and the weights' paths are not.)
PAIRED = {
    "seed": "--seed",
    "samples": "--samples",
    "thresholds": "--thresholds",
    "predictor": "--predictor",
    "consistency_samples": "--consistency-samples",
    "concepts": "--concepts",
    "standardize": "--standardize",
    "fid_features": "--fid-features",
    "vis_pairs": "--vis-pairs",
    "vis_method": "--vis-method",
    "am_steps": "--am-steps",
    "capture_threshold": "--capture-threshold",
    "render_lambda": "--render-lambda",
    "render_samples": "--render-samples",
}
SPLIT_FACTS = ("name", "class_names", "resolution")  # from the checkpoint's header
RUN_FACTS = ("data_root", "bbox_crop")  # from the run's options.json, when both models have one


@dataclass(frozen=True)
class Model:
    """A model to compare, as its checkpoint header (and its run's options.json) describe it: no weights."""

    path: Path
    sha256: str
    meta: CheckpointMeta
    split: dict[str, Any]  # what decides its test split: SPLIT_FACTS, and RUN_FACTS when recorded

    @property
    def method(self) -> str:
        return self.meta.kind

    @property
    def num_concepts(self) -> int:
        return int(self.meta.config["num_concepts"])

    @property
    def classifier(self) -> str:
        return str(self.meta.parents.get("classifier", {}).get("sha256", ""))

    @property
    def has_generator(self) -> bool:
        return "generator" in self.meta.parents


def read_model(path: Path) -> Model:
    """The model's header facts, its sha256, and the data options its run recorded."""
    from viscoin_cli.io.checkpoint import read_meta, sha256_file
    from viscoin_cli.nets.concept_model import METHODS

    meta = read_meta(path, kind=METHODS)
    facts = meta.dataset or {}
    split = {key: facts.get(key) for key in SPLIT_FACTS}
    options = Path(path).parent / "options.json"
    try:
        recorded = json.loads(options.read_text()) if options.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        recorded = {}  # an unreadable options.json tells nothing: the header's facts still apply
    if isinstance(recorded, dict):
        split |= {key: recorded[key] for key in RUN_FACTS if key in recorded}
        if split.get("data_root"):
            split["data_root"] = os.path.normpath(os.path.expanduser(str(split["data_root"])))
    return Model(Path(path), sha256_file(path), meta, split)


def check_comparable(models: Sequence[Model]) -> None:
    """Refuse models that explain different classifiers or were trained on different test splits."""
    first = models[0]
    for other in models[1:]:
        if other.classifier != first.classifier:
            raise UserError(
                f"{first.path} and {other.path} explain different classifiers f (sha256 {first.classifier[:12]} "
                f"vs {other.classifier[:12]}): their numbers are not comparable"
            )
        for key in (*SPLIT_FACTS, *RUN_FACTS):
            if key in first.split and key in other.split and first.split[key] != other.split[key]:
                shown = "" if key == "class_names" else f": {first.split[key]} vs {other.split[key]}"
                raise UserError(
                    f"{first.path} and {other.path} were trained on different test splits ({key} differs{shown})"
                )


def check_concepts(models: Sequence[Model], settings: Settings) -> None:
    """Each model has the concepts consistency scores (models may have different K)."""
    for model in models:
        wrong = [k for k in settings.concepts or () if not 0 <= k < model.num_concepts]
        if wrong:
            raise UserError(f"--concepts {wrong[0]}: out of range for {model.path} (K = {model.num_concepts})")


def column_labels(models: Sequence[Model]) -> list[str]:
    """Short, distinct column names: the file name, or folder/file name when file names repeat
    (every run's model is latest.safetensors), or the path as given."""
    for name in (lambda p: p.name, lambda p: f"{p.parent.name}/{p.name}", str):
        labels = [name(model.path) for model in models]
        if len(set(labels)) == len(labels):
            return labels
    return [str(model.path) for model in models]


# --- evaluation documents -----------------------------------------------------------------------------


def read_evaluation_json(path: Path, option: str = "--metrics-json") -> dict[str, Any]:
    """A `viscoin evaluate --json` document (its shape checked, not yet whose it is)."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{option} {path}: not a JSON file ({type(err).__name__})") from None
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict) or not isinstance(document.get("metrics"), dict):
        raise UserError(f"{option} {path}: not the output of `viscoin evaluate --json`")
    return document


def recorded_sha256(document: dict[str, Any]) -> str:
    """The (shortened) sha256 of the model an evaluation document is about."""
    return str(document["model"].get("sha256", ""))


def match_documents(models: Sequence[Model], paths: Sequence[Path]) -> list[list[tuple[str, dict[str, Any]]]]:
    """Each model's documents among the --metrics-json files, matched by sha256."""
    matched: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in models]
    for path in paths:
        document = read_evaluation_json(path)
        recorded = recorded_sha256(document)
        owners = [i for i, model in enumerate(models) if recorded and model.sha256.startswith(recorded)]
        if not owners:
            raise UserError(f"--metrics-json {path}: computed for none of the models (sha256 {recorded or 'missing'})")
        for i in owners:
            matched[i].append((f"--metrics-json {path}", document))
    return matched


@dataclass
class Measures:
    """One model's numbers, from its documents and what was computed here: each metric's result, and
    consistency by λ (one document holds one λ)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    consistency: dict[float, dict[str, Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def add(self, document: dict[str, Any], source: str) -> None:
        """The document's metrics, where this model has none yet."""
        for name, result in document["metrics"].items():
            if name != "consistency":
                self.metrics.setdefault(name, result)
            elif isinstance(result, dict):
                lam = result.get("lambda", document.get("settings", {}).get("lambda"))
                if isinstance(lam, int | float):
                    self.consistency.setdefault(float(lam), result)
        if source not in self.sources:
            self.sources.append(source)

    def missing(self, metrics: Sequence[str], lambdas: Sequence[float]) -> tuple[list[str], list[float]]:
        """The metrics (but consistency) and the consistency λ values still to compute."""
        names = [name for name in metrics if name != "consistency" and name not in self.metrics]
        lams = [lam for lam in lambdas if lam not in self.consistency] if "consistency" in metrics else []
        return names, lams


def paired_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: settings[key] for key in PAIRED if key in settings}


def check_paired(sources: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """All (who, settings) pairs agree on the settings that decide the samples (a setting a document does
    not record, from before its metric existed, decides none of its numbers)."""
    first_who, first = sources[0]
    for who, settings in sources[1:]:
        for key, option in PAIRED.items():
            if key in settings and key in first and settings[key] != first[key]:
                raise UserError(
                    f"{who}: computed with {option} {_shown(settings[key])}, {first_who} with "
                    f"{_shown(first[key])}: the numbers would not be paired (use the same settings)"
                )


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "all" if value is None else str(value)


def measure(
    evaluation: Evaluation, names: Sequence[str], lambdas: Sequence[float], notes: list[str] | None = None
) -> list[dict[str, Any]]:
    """`viscoin evaluate` documents: `names` with the evaluation's settings, then consistency once per λ
    (the settings' λ replaced), so each number is the one `evaluate` gives for the same settings.

    A model may be unable to give a SKIPPABLE metric (no relevant pair to visualise): the reason goes to
    `notes` and its cell stays empty, rather than ending a comparison of hours."""
    base = evaluation.settings
    evaluation.prepare([*names, *(["consistency"] if lambdas else [])])  # missing data fails before any metric
    plain = [name for name in names if name not in SKIPPABLE]
    documents = [evaluation.evaluate(plain)] if plain else []
    try:
        for lam in lambdas:
            evaluation.settings = replace(base, lam=lam)
            documents.append(evaluation.evaluate(["consistency"]))
    finally:
        evaluation.settings = base
    for name in (name for name in names if name in SKIPPABLE):
        try:
            documents.append(evaluation.evaluate([name]))
        except UserError as err:
            if notes is None:
                raise
            notes.append(f"{name} of {evaluation.meta.path}: {err}")
    return documents


def check_parents(models: Sequence[Model], classifier: Path | None, generator: Path | None) -> None:
    """Every parent file is where it should be and is the one trained with, before hours of evaluation."""
    from viscoin_cli.nets.concept_model import verified_parent

    for model in models:
        verified_parent(model.meta, "classifier", classifier)
        if model.has_generator:
            verified_parent(model.meta, "generator", generator)


def compare(
    models: Sequence[Model],
    *,
    metrics: Sequence[str],
    settings: Settings,
    open_model: Callable[[Model, Path | None, Path | None], Evaluation],
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    documents: Sequence[Sequence[tuple[str, dict[str, Any]]]] = (),
    classifier: Path | None = None,
    generator: Path | None = None,
    console: Console | None = None,
    stability: bool = False,
) -> dict[str, Any]:
    """The comparison document: each model's `metrics` at `settings` (consistency at each of `lambdas`),
    read from its `documents` (per model: (source, `evaluate --json` document)) or computed with the
    evaluation `open_model(model, classifier, generator)` opens (generator None for a model without one).
    Models are evaluated one after the other, each released before the next is loaded. With `stability`,
    every model is opened (documents hold no activations) and its pooled test activations kept, to match
    the concepts of each pair of models (`stability_document`)."""
    check_comparable(models)
    measures = [Measures() for _ in models]
    for measure_, given in zip(measures, documents or [[] for _ in models], strict=True):
        for source, document in given:
            measure_.add(document, source)
    todo = [measure_.missing(metrics, lambdas) for measure_ in measures]
    computing = [i for i, (names, lams) in enumerate(todo) if names or lams]
    opening = list(range(len(models))) if stability else computing
    sources = [(source, paired_settings(doc.get("settings", {}))) for given in documents for source, doc in given]
    if computing:
        sources.insert(0, ("this comparison", paired_settings(settings.to_json())))
        if any(todo[i][1] for i in computing):
            check_concepts([models[i] for i in computing], settings)
    check_parents([models[i] for i in opening], classifier, generator)
    if sources:
        check_paired(sources)
    notes: list[str] = []
    pooled: list[Any] = []
    for step, i in enumerate(opening, 1):
        model = models[i]
        if console is not None:
            console.print(f"compare: evaluating {model.method} {model.path} ({step} of {len(opening)})")
        evaluation = open_model(model, classifier, generator if model.has_generator else None)
        for document in measure(evaluation, *todo[i], notes=notes) if i in computing else ():
            measures[i].add(document, COMPUTED)
        if stability:
            pooled.append(evaluation.encoded("test").pooled)  # [N, K] on the CPU: small
        del evaluation
    if console is not None:
        for note in notes:
            console.print(f"warning: {note}")
    common = sources[0][1] if sources else paired_settings(settings.to_json())
    document = comparison_document(models, measures, common, metrics, lambdas)
    if stability:
        document["stability"] = stability_document(pooled)
    return {**document, "notes": notes} if notes else document


def stability_document(pooled: Sequence[Any]) -> dict[str, Any]:
    """For every pair of models (by column index), their concepts matched one to one (Hungarian, on the
    correlation of their pooled test activations; min(Ka, Kb) matches): do two runs find the same concepts?"""
    from viscoin_cli.metrics.health import STABLE_CORRELATION, stability

    pairs = []
    for a in range(len(pooled)):
        for b in range(a + 1, len(pooled)):
            pairs.append({"a": a, "b": b, **stability(pooled[a], pooled[b])})
    return {"threshold": STABLE_CORRELATION, "pairs": pairs}


# --- the table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """A row of the table: its number (and the one shown beside it) read from a model's Measures."""

    key: str
    label: str
    better: str | None  # "higher", "lower", or None (the same f for every model)
    value: Callable[[Measures], Any]
    beside: tuple[str, Callable[[Measures], Any]] | None = None  # (name in the JSON row, value)


def _at(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree if isinstance(tree, int | float) and not isinstance(tree, bool) else None


def row_specs(thresholds: Sequence[float], lambdas: Sequence[float], ground_truth: bool = False) -> list[RowSpec]:
    """The paper's rows, in its order; with `ground_truth`, the ground-truth rows last (only then: most datasets
    have no attribute labels, and a row that is always empty would say nothing)."""
    rows = [
        RowSpec("accuracy.f", "accuracy of f", None, lambda m: _at(m.metrics, "accuracy", "f")),
        RowSpec("accuracy.g", "accuracy of the model", "higher", lambda m: _at(m.metrics, "accuracy", "g")),
        RowSpec("reconstruction.mse", "MSE", "lower", lambda m: _at(m.metrics, "reconstruction", "mse")),
        RowSpec("reconstruction.lpips", "LPIPS", "lower", lambda m: _at(m.metrics, "reconstruction", "lpips")),
        RowSpec("reconstruction.fid", "FID", "lower", lambda m: _at(m.metrics, "reconstruction", "fid")),
    ]
    for tau in thresholds:
        key = f"{tau:g}"
        rows.append(
            RowSpec(
                f"faithfulness.{key}.median",
                f"faithfulness τ={key}",
                "higher",
                lambda m, key=key: _at(m.metrics, "faithfulness", key, "median"),
                ("random", lambda m, key=key: _at(m.metrics, "faithfulness", key, "random_median")),
            )
        )
    for lam in lambdas:
        key = f"{lam:g}"
        rows.append(
            RowSpec(
                f"consistency.{key}.mean",
                f"consistency λ={key}",
                "higher",
                lambda m, lam=lam: _at(m.consistency.get(lam), "mean"),
                ("std", lambda m, lam=lam: _at(m.consistency.get(lam), "std")),
            )
        )
    rows.append(
        RowSpec("visualization_fid", "visualisation FID", "lower", lambda m: _at(m.metrics, "visualization_fid", "fid"))
    )
    if ground_truth:
        rows += [
            RowSpec(
                "ground_truth.mean_auc",
                "ground-truth AUC",
                "higher",
                lambda m: _at(m.metrics, "ground_truth", "mean_auc"),
            ),
            RowSpec(
                "ground_truth.captured",
                "values captured",
                "higher",
                lambda m: _at(m.metrics, "ground_truth", "captured"),
                ("of", lambda m: _at(m.metrics, "ground_truth", "targets")),
            ),
            RowSpec(
                "ground_truth.render.flip_rate",
                "render flip rate",
                "higher",
                lambda m: _at(m.metrics, "ground_truth", "render", "flip_rate"),
            ),
        ]
    return rows


def _finite(value: Any) -> Any:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def comparison_document(
    models: Sequence[Model],
    measures: Sequence[Measures],
    settings: dict[str, Any],
    metrics: Sequence[str],
    lambdas: Sequence[float],
) -> dict[str, Any]:
    """The `compare --json` document: the models (columns), the rows with one value per model, the settings."""
    rows = []
    ground_truth = "ground_truth" in metrics or any("ground_truth" in m.metrics for m in measures)
    for spec in row_specs(settings.get("thresholds") or (), lambdas, ground_truth):
        row: dict[str, Any] = {"key": spec.key, "label": spec.label, "better": spec.better}
        row["values"] = [_finite(spec.value(m)) for m in measures]
        if spec.beside is not None:
            name, value = spec.beside
            row[name] = [_finite(value(m)) for m in measures]
        rows.append(row)
    first = models[0]
    return {
        "models": [
            {
                "path": str(model.path),
                "sha256": model.sha256[:16],
                "method": model.method,
                "num_concepts": model.num_concepts,
                "label": label,
                "sources": measure_.sources,
            }
            for model, measure_, label in zip(models, measures, column_labels(models), strict=True)
        ],
        "dataset": {key: first.split.get(key) for key in ("name", "resolution")},
        "classifier": {"sha256": first.classifier[:16]},
        "rows": rows,
        "settings": {**settings, "consistency_lambdas": list(lambdas), "metrics": list(metrics)},
    }


# --- presentation: shared by the terminal table, the CSV file and the report's HTML ------------------------


def _number(value: float | None) -> str:
    """Four decimals (no "-0.0000": a drop too small to show is no drop), or five digits from 1000 on."""
    if value is None:
        return "—"
    text = f"{value:.4f}" if abs(value) < 1000 else f"{value:.5g}"
    return "0.0000" if text == "-0.0000" else text


def headings(document: dict[str, Any]) -> list[str]:
    """A column heading per model: method and file name."""
    return [f"{model['method']} {model['label']}" for model in document["models"]]


def cells(row: dict[str, Any]) -> list[str]:
    """The row's values as the table shows them: the random baseline or the std beside the number."""
    shown = []
    for i, value in enumerate(row["values"]):
        text = _number(value)
        if value is not None and "of" in row:
            text = f"{value:g}" + ("" if row["of"][i] is None else f" of {row['of'][i]:g}")
        elif value is not None and "random" in row:
            text += f" (random {_number(row['random'][i])})"
        elif value is not None and "std" in row and row["std"][i] is not None:
            text += f" ± {row['std'][i]:.4f}"
        shown.append(text)
    return shown


def best(row: dict[str, Any]) -> set[int]:
    """The columns holding the row's best value (none for a row without a better direction)."""
    values = [(v, i) for i, v in enumerate(row["values"]) if v is not None]
    if row["better"] is None or len(values) < 2:
        return set()
    top = max(v for v, _ in values) if row["better"] == "higher" else min(v for v, _ in values)
    return {i for v, i in values if v == top}


def settings_line(document: dict[str, Any]) -> str:
    """The settings that make the numbers paired, in one line."""
    settings = document["settings"]
    concepts = _shown(settings.get("concepts"))
    return (
        f"seed {settings.get('seed')} · faithfulness: {settings.get('samples')} samples, p of "
        f"{settings.get('predictor')} · consistency: {settings.get('consistency_samples')} samples per split, "
        f"concepts {concepts} · FID features: {settings.get('fid_features')} · ↑/↓: higher/lower is better"
    )


def row_label(row: dict[str, Any]) -> str:
    arrow = {"higher": " ↑", "lower": " ↓"}.get(row["better"] or "", "")
    return row["label"] + arrow


def write_csv(document: dict[str, Any], path: Path) -> Path:
    """A row per number (the random baselines and the stds get rows of their own), a column per model."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", *headings(document)])
        for row in document["rows"]:
            writer.writerow([row["key"], row["label"], *("" if v is None else repr(v) for v in row["values"])])
            for name, suffix in (("random", "random baseline"), ("std", "std")):
                if name in row:
                    key = row["key"].rsplit(".", 1)[0] + (".random_median" if name == "random" else ".std")
                    values = ("" if v is None else repr(v) for v in row[name])
                    writer.writerow([key, f"{row['label']} ({suffix})", *values])
    return path
