"""The evaluation pipeline behind `viscoin evaluate` and `viscoin report` (paper §4.1).

One `Evaluation` per model: it loads and encodes each split once and every metric reuses those encodings
(renders start from the stored Φ and γ, so no image goes through f twice). The result is one JSON-ready
document whose numbers the CI checks of metrics/checks.py gate on.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.data import DataLoader

from viscoin_cli.console import Progress, make_console
from viscoin_cli.errors import UserError
from viscoin_cli.interpret.encode import Encoded, encode_dataset
from viscoin_cli.io.checkpoint import CheckpointMeta, sha256_file
from viscoin_cli.metrics.checks import Check, expected_keys, null_non_finite, run_checks, validate_checks
from viscoin_cli.runtime import Runtime

if TYPE_CHECKING:
    from viscoin_cli.interpret.am import AMSettings

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.4)
FID_FEATURES = ("classifier", "inception")
LPIPS_MIN_SIZE = 64  # LPIPS' AlexNet pools a 16 px image down to nothing; smaller images are upsampled (choice)
# visualization_fid (paper App. C.2; docs/method.md, "Activation maximisation and visualisation FID"):
VIS_RELEVANCE = 0.4  # relevant pair: r_{k,c} > 0.4, FLINT's CUB-200 threshold (flint.py: generate_model_explanations)
VIS_PER_PAIR = 3  # the 3 most activating samples of each pair (FLINT: extract_attr_class_max(..., n_idx=3))
VIS_LAMBDA = 4.0  # VisCoIN's visualisations: the largest λ of the paper's sweeps (and of the report's 0, 1, 2, 4)


@dataclass
class Settings:
    """Every knob of an evaluation; recorded in the output so a number can be reproduced."""

    seed: int = 0
    batch_size: int = 64
    workers: int = 0
    samples: int = 1000  # faithfulness: random test samples (all when fewer)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    predictor: str = "g"
    lam: float = 2.0  # consistency λ
    consistency_samples: int = 100  # per concept and split
    concepts: list[int] | None = None  # consistency: None = all K
    standardize: bool = False  # consistency: standardise the SVM's features (option; the paper does not)
    lpips: str | None = None  # alex | vgg | none; None = alex when its weights are in the torch hub cache
    lpips_weights: str | None = None
    fid_features: str = "classifier"
    inception_weights: str | None = None
    vis_pairs: int = 400  # visualization_fid: random relevant (class, concept) pairs (all when fewer)
    vis_method: str | None = None  # render | am; None: render for VisCoIN, am (FLINT's way) for the baselines
    am_steps: int | None = None  # AM steps; None: interpret/am.py's 1000
    duplicate_threshold: float = 0.95  # health: concepts whose φ̄ correlate above it are duplicates
    capture_threshold: float = 0.9  # ground_truth: a value is captured when a concept's AUC reaches it
    render_lambda: float = 4.0  # ground_truth: the matched concept's map is scaled by it in the render test
    render_samples: int = 100  # ground_truth: test images rendered per (attribute, value); 0: no render test

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["thresholds"] = list(self.thresholds)
        document["lambda"] = document.pop("lam")
        return document


@dataclass
class Evaluation:
    """A model under evaluation: its splits and their encodings, loaded once and shared by the metrics."""

    model: Any  # VisCoIN (or anything with its interface)
    meta: CheckpointMeta
    rt: Runtime
    settings: Settings = field(default_factory=Settings)
    data_root: Path | None = None
    data_options: dict[str, bool] = field(default_factory=dict)  # bbox_crop, skip_bad_images
    console: Console = field(default_factory=lambda: make_console(quiet=True))
    seconds: dict[str, float] = field(default_factory=dict)
    _datasets: dict[str, Any] = field(default_factory=dict)
    _encoded: dict[str, Encoded] = field(default_factory=dict)
    _lpips: Any = None
    _lpips_note: str | None = None
    _extractor: Any = None

    @property
    def num_concepts(self) -> int:
        return int(self.meta.config["num_concepts"])

    @property
    def facts(self) -> dict[str, Any]:
        return self.meta.dataset or {}

    # --- data --------------------------------------------------------------------------------------

    def dataset(self, split: str):
        """The model's dataset at the model's resolution (no augmentation); checked against the model."""
        if split not in self._datasets:
            from viscoin_cli.data import load_dataset

            facts = self.facts
            data = load_dataset(
                facts["name"], split, root=self.data_root, resolution=facts["resolution"], **self.data_options
            )
            if len(data) == 0:
                raise UserError(f"the {split} split of {facts['name']} is empty")
            if facts.get("class_names") and list(data.class_names) != list(facts["class_names"]):
                raise UserError(f"{self.meta.path} was trained on other classes than those of {facts['name']} here")
            self._datasets[split] = data
        return self._datasets[split]

    def encoded(self, split: str) -> Encoded:
        """Φ, γ, φ̄ and both models' logits for every image of the split (computed once, kept on the CPU)."""
        if split not in self._encoded:
            data = self.dataset(split)
            started = time.perf_counter()
            with Progress(self.console, len(data), f"encode {split}") as progress:
                self._encoded[split] = encode_dataset(
                    self.model, data, self.rt, self.settings.batch_size, self.settings.workers, progress.advance
                )
            self.seconds[f"encode_{split}"] = time.perf_counter() - started
        return self._encoded[split]

    # --- setup that can fail: done before any long computation ------------------------------------

    def prepare(self, metrics: Sequence[str]) -> None:
        """Load the data and the metric networks the selection needs, so missing files fail first."""
        self.dataset("test")
        if "consistency" in metrics:
            self.dataset("train")
            wrong = [k for k in self.settings.concepts or () if not 0 <= k < self.num_concepts]
            if wrong:
                raise UserError(f"--concepts {wrong[0]}: concept index out of range (0..{self.num_concepts - 1})")
        if "reconstruction" in metrics:
            self._setup_lpips()
            self._setup_fid()
        if "visualization_fid" in metrics:
            if self.settings.am_steps is not None and self.vis_method == "render":
                raise UserError(
                    f"--am-steps applies to --vis-method am (a {self.model.method} model's visualisations are "
                    f"renders at λ = {VIS_LAMBDA:g} unless --vis-method am)"
                )
            self._setup_fid()
        if "ground_truth" in metrics:
            self.attribute_labels("test")
            if self.settings.render_samples > 0:  # the probe learns from the train split's labels
                self.attribute_labels("train")

    def attribute_labels(self, split: str) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
        """The split's attribute labels (name -> [N] value indices, or [N, V] 0/1 for a multi-label attribute) and
        value names; a one-line error for a dataset that records none."""
        from viscoin_cli.metrics.ground_truth import labelled

        found = labelled(self.dataset(split))
        if found is None:
            raise UserError(
                f"dataset {self.facts.get('name')} has no attribute labels: ground-truth needs a dataset that "
                "records them: shapes, or cub with its attribute files (attributes/image_attribute_labels.txt and "
                "attributes.txt)"
            )
        return found

    def _setup_lpips(self) -> None:
        from viscoin_cli.nets.lpips import BACKBONES, LPIPS, find_lpips_backbone

        kind, weights = self.settings.lpips, self.settings.lpips_weights
        if kind == "none":
            self._lpips_note = "off (--lpips none)"
            return
        if kind is None and weights is None:  # default: AlexNet when its weights are at hand, else skip
            try:
                weights = str(find_lpips_backbone("alex"))
            except UserError:
                folder = Path(torch.hub.get_dir()) / "checkpoints"
                self._lpips_note = (
                    f"skipped: torchvision's {BACKBONES['alex'][1]} is not in {folder} "
                    "(put it there or pass --lpips-weights PATH)"
                )
                return
        self._lpips = LPIPS(kind or "alex", weights).to(self.rt.device)

    def _setup_fid(self) -> None:
        from viscoin_cli.metrics.fid import ClassifierFeatures, InceptionFeatures

        if self._extractor is not None:  # reconstruction and visualization_fid share it
            return
        if self.settings.fid_features == "inception":
            self._extractor = InceptionFeatures(self.settings.inception_weights).to(self.rt.device)
            return
        parent = self.meta.parents.get("classifier", {})
        digest = parent.get("sha256", "")[:12] or "unknown"
        dim = self.model.f.fc.in_features
        self._extractor = ClassifierFeatures(self.model.f, f"classifier f {digest} (pooled features, {dim}-d)")

    @property
    def lpips_on(self) -> bool:
        return self._lpips is not None

    # --- the metrics -------------------------------------------------------------------------------

    def accuracy(self) -> dict[str, Any]:
        """Test accuracy of g and f and how often they agree: read off the encodings, no rendering."""
        test = self.encoded("test")
        g_pred, f_pred = test.predicted, test.f_logits.argmax(1)
        return {
            "g": (g_pred == test.labels).float().mean().item(),
            "f": (f_pred == test.labels).float().mean().item(),
            "agreement": (g_pred == f_pred).float().mean().item(),
            "samples": len(test),
        }

    @torch.no_grad()
    def reconstruction(self) -> dict[str, Any]:
        """Per-sample MSE on [-1, 1] (mean over the test split), LPIPS, and FID(x, x̃) in one pass.

        Reconstructions are clamped to [-1, 1] (choice: the image a user sees; G can overshoot).
        """
        from viscoin_cli.metrics.fid import feature_statistics, frechet_distance

        if self._extractor is None:
            self._setup_lpips()
            self._setup_fid()
        test, data, device = self.encoded("test"), self.dataset("test"), self.rt.device
        sums = {"mse": 0.0, "lpips": 0.0}
        real_features, fake_features = [], []
        start = 0
        loader = DataLoader(data, batch_size=self.settings.batch_size, num_workers=self.settings.workers)
        with Progress(self.console, len(data), "reconstruction") as progress:
            for images, _ in loader:
                index = slice(start, start + len(images))
                start += len(images)
                images = images.to(device)
                with self.rt.autocast():
                    recon = self.model.render(test.concept_maps[index].to(device), test.support[index].to(device))
                recon = recon.float().clamp(-1, 1)
                sums["mse"] += (recon - images).square().mean(dim=(1, 2, 3)).sum().item()
                if self._lpips is not None:
                    size = max(LPIPS_MIN_SIZE, images.shape[-1])
                    resize = (lambda x: x) if size == images.shape[-1] else self._upsample(size)
                    sums["lpips"] += self._lpips(resize(images), resize(recon)).sum().item()
                with self.rt.autocast():
                    real_features.append(self._extractor(images).float().cpu())
                    fake_features.append(self._extractor(recon).float().cpu())
                progress.advance(len(images))
        fid = frechet_distance(
            *feature_statistics(torch.cat(real_features).double().numpy()),
            *feature_statistics(torch.cat(fake_features).double().numpy()),
        )
        count = len(data)
        return {
            "mse": sums["mse"] / count,
            "lpips": sums["lpips"] / count if self._lpips is not None else None,
            "lpips_net": self._lpips.kind if self._lpips is not None else None,
            "lpips_note": self._lpips_note,
            "fid": fid,
            "fid_features": self._extractor.label,
            "samples": count,
        }

    @staticmethod
    def _upsample(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def faithfulness_indices(self) -> torch.Tensor:
        """The test samples faithfulness uses: `samples` drawn at random with the seed (all if fewer)."""
        count = len(self.encoded("test"))
        if self.settings.samples >= count:
            return torch.arange(count)
        generator = torch.Generator().manual_seed(self.settings.seed)
        return torch.randperm(count, generator=generator)[: self.settings.samples].sort().values

    @torch.no_grad()
    def faithfulness(self) -> dict[str, Any]:
        """Median FF per threshold beside the random baseline (metrics/faithfulness.py)."""
        from viscoin_cli.metrics.faithfulness import faithfulness

        subset = self.encoded("test").subset(self.faithfulness_indices())
        with Progress(self.console, len(subset), "faithfulness") as progress, self.rt.autocast():
            result = faithfulness(
                self.model,
                subset,
                thresholds=self.settings.thresholds,
                predictor=self.settings.predictor,
                seed=self.settings.seed,
                batch_size=self.settings.batch_size,
                device=self.rt.device,
                on_batch=progress.advance,
            )
        return {"predictor": self.settings.predictor, "samples": len(subset), **result}

    def global_relevance(self, split: str = "train") -> torch.Tensor:
        """r_{k,c} [C, K] over a split: which classes each concept serves."""
        from viscoin_cli.interpret.relevance import relevance_tables

        return relevance_tables(self.model, self.encoded(split))[1]

    @torch.no_grad()
    def consistency(self) -> dict[str, Any]:
        """Mean ± std SVM accuracy over the concepts (metrics/consistency.py); global relevance from train."""
        from viscoin_cli.metrics.consistency import consistency

        train, test = self.encoded("train"), self.encoded("test")
        relevance = self.global_relevance("train")
        concepts = list(range(self.num_concepts)) if self.settings.concepts is None else self.settings.concepts
        with Progress(self.console, len(concepts), "consistency (concepts)") as progress, self.rt.autocast():
            result = consistency(
                self.model,
                train,
                test,
                relevance,
                concepts=concepts,
                lam=self.settings.lam,
                samples=self.settings.consistency_samples,
                seed=self.settings.seed,
                batch_size=self.settings.batch_size,
                device=self.rt.device,
                on_concept=lambda _concept, accuracy: progress.advance(1, last=accuracy),
                standardize=self.settings.standardize,
            )
        return {"samples": self.settings.consistency_samples, "concepts": len(concepts), **result}

    def health(self) -> dict[str, Any]:
        """Dead, duplicated and rarely active concepts, and how many carry each class (metrics/health.py): read
        off the test encodings and their global relevance, no rendering."""
        from viscoin_cli.metrics.health import health

        relevance = self.global_relevance("test")
        return health(self.encoded("test").pooled, relevance, duplicate_threshold=self.settings.duplicate_threshold)

    def ground_truth(self) -> dict[str, Any]:
        """Which concept predicts each known attribute value (AUC of φ̄ on the test split), how many are captured,
        and whether turning the matched concept up draws the value in the render, as an attribute probe trained
        on the train split reads it (metrics/ground_truth.py)."""
        from viscoin_cli.metrics import ground_truth as gt

        settings, test = self.settings, self.encoded("test")
        attributes, values = self.attribute_labels("test")
        result = gt.attribute_auc(test.pooled, attributes, values, settings.capture_threshold)
        if settings.render_samples <= 0:
            return {**result, "render": None, "probe": None}
        started = time.perf_counter()
        probe, result["probe"] = gt.fit_probe(
            self.dataset("train"),
            self.dataset("test"),
            seed=settings.seed,
            batch_size=settings.batch_size,
            device=self.rt.device,
        )
        self.seconds["ground_truth_probe"] = time.perf_counter() - started
        matches = gt.matched_concepts(result, values)
        with Progress(self.console, len(matches), "ground truth (render test)") as progress:
            renders = gt.render_test(
                self.model,
                test.concept_maps,
                test.support,
                attributes,
                matches,
                probe,
                lam=settings.render_lambda,
                samples=settings.render_samples,
                seed=settings.seed,
                batch_size=settings.batch_size,
                autocast=self.rt.autocast,
                on_target=lambda: progress.advance(1),
            )
        gt.add_render_results(result, renders, values, settings.render_lambda, settings.render_samples)
        return result

    @property
    def vis_method(self) -> str:
        """How visualization_fid visualises: as asked, else VisCoIN's renders or the baselines' AM (the paper's)."""
        return self.settings.vis_method or ("render" if self.model.method == "viscoin" else "am")

    def visualization_fid(self) -> dict[str, Any]:
        """FID between visualisations of relevant (class, concept) pairs and as many test images (App. C.2).

        `vis_pairs` pairs drawn with the seed among those with global relevance r_{k,c} > VIS_RELEVANCE on the
        test split; for each, the VIS_PER_PAIR test images predicted as c where φ̄_k is largest (as `visualize`
        picks them) are visualised: AM from each (FLINT's way) or the render with Φ_k scaled by VIS_LAMBDA.
        The real side is as many test images drawn with the seed (all of them when the split is smaller).
        """
        from viscoin_cli.interpret.amplify import top_activating
        from viscoin_cli.interpret.visualize import relevant_pairs
        from viscoin_cli.metrics.fid import feature_statistics, frechet_distance

        self._setup_fid()
        test, settings = self.encoded("test"), self.settings
        relevance = self.global_relevance("test")
        pairs = relevant_pairs(relevance, VIS_RELEVANCE, settings.vis_pairs, settings.seed)
        rows = [(int(i), k) for c, k in pairs for i in top_activating(test, k, VIS_PER_PAIR, cls=c)]
        count = min(len(rows), len(test))
        if not relevance.isfinite().all():  # a broken model (NaN head): no pairs, and a NaN for the gates to fail
            fid, count, rows = float("nan"), 0, []
        elif not pairs:
            raise UserError(f"visualization-fid: no class-concept pair has a global relevance above {VIS_RELEVANCE}")
        else:
            indices, concepts = torch.tensor(rows).unbind(1)
            fake = self._visualization_features(indices, concepts)
            generator = torch.Generator().manual_seed(settings.seed)
            real = self._image_features(torch.randperm(len(test), generator=generator)[:count].sort().values)
            fid = frechet_distance(
                *feature_statistics(real.double().numpy()), *feature_statistics(fake.double().numpy())
            )
        am = self.vis_method == "am"
        return {
            "fid": fid,
            "pairs": len(pairs),
            "relevant_pairs": int((relevance > VIS_RELEVANCE).sum()),
            "threshold": VIS_RELEVANCE,
            "visualizations": len(rows),
            "samples": count,
            "method": self.vis_method,
            "lambda": None if am else VIS_LAMBDA,
            "am_steps": self._am_settings().steps if am else None,
            "fid_features": self._extractor.label,
        }

    def _am_settings(self) -> AMSettings:
        """AM as FLINT's code sets it, with the run's step count."""
        from viscoin_cli.interpret.am import am_settings

        return am_settings(self.settings.am_steps)

    @torch.no_grad()
    def _image_features(self, indices: torch.Tensor) -> torch.Tensor:
        """FID features of some test images, a batch at a time."""
        from viscoin_cli.interpret.encode import stack_images

        parts = []
        for chunk in indices.split(self.settings.batch_size):
            images = stack_images(self.dataset("test"), chunk.tolist()).to(self.rt.device)
            with self.rt.autocast():
                parts.append(self._extractor(images).float().cpu())
        return torch.cat(parts)

    def _visualization_features(self, indices: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
        """FID features of the visualisation of concept `concepts[i]` on test image `indices[i]`, a batch at a
        time (never all the images at once: 1200 at 256 px would be a gigabyte)."""
        from viscoin_cli.interpret.am import maximize_concepts
        from viscoin_cli.interpret.encode import stack_images
        from viscoin_cli.interpret.visualize import render_scaled

        test, device, size = self.encoded("test"), self.rt.device, self.settings.batch_size
        am = self._am_settings() if self.vis_method == "am" else None
        parts = []
        label = f"visualization fid ({self.vis_method}{f', {am.steps} steps' if am else ''})"
        with Progress(self.console, len(indices), label) as progress:
            for first in range(0, len(indices), size):
                chunk, chosen = indices[first : first + size], concepts[first : first + size]
                if am is None:
                    with self.rt.autocast():
                        images = render_scaled(self.model, test.subset(chunk), chosen, VIS_LAMBDA, size)
                else:
                    starts = stack_images(self.dataset("test"), chunk.tolist())
                    images = maximize_concepts(self.model, starts, chosen, am, seed=self.settings.seed + first).images
                with torch.no_grad(), self.rt.autocast():
                    parts.append(self._extractor(images.to(device)).float().cpu())
                progress.advance(len(chunk))
        return torch.cat(parts)

    def optional_keys(self, metrics: Sequence[str]) -> set[str]:
        """The numeric keys of the metrics outside `all` (checks.expected_keys knows the others)."""
        keys: set[str] = set()
        if "ground_truth" in metrics:
            from viscoin_cli.metrics.ground_truth import result_keys

            keys |= result_keys(self.attribute_labels("test")[1], render=self.settings.render_samples > 0)
        if "visualization_fid" not in metrics:
            return keys
        names = {"fid", "pairs", "relevant_pairs", "threshold", "visualizations", "samples"}
        names.add("am_steps" if self.vis_method == "am" else "lambda")
        return keys | {f"visualization_fid.{name}" for name in names}

    def run(self, metrics: Sequence[str]) -> dict[str, Any]:
        """Compute the metrics in order; their results keyed by name (times go to `self.seconds`)."""
        results = {}
        for name in metrics:
            started = time.perf_counter()
            encode_before = sum(v for k, v in self.seconds.items() if k.startswith("encode_"))
            results[name] = getattr(self, name)()
            encode_during = sum(v for k, v in self.seconds.items() if k.startswith("encode_")) - encode_before
            self.seconds[name] = time.perf_counter() - started - encode_during  # encoding is timed apart
        return results

    def evaluate(self, metrics: Sequence[str], checks: Sequence[Check] = ()) -> dict[str, Any]:
        """Check the request, run the metrics and the checks: the `--json` document."""
        self.prepare(metrics)
        for check in checks:
            if check.key.startswith("visualization_fid.") and "visualization_fid" not in metrics:
                given = f"--fail-{check.direction} {check.given}"
                raise UserError(f"{given}: visualization_fid is not computed (evaluate visualization-fid)")
        keys = expected_keys(metrics, self.settings, self.num_concepts, self.lpips_on) | self.optional_keys(metrics)
        validate_checks(checks, keys, metrics)
        document = self.document(self.run(metrics))
        non_finite = null_non_finite(document["metrics"])
        if non_finite:  # a broken model (NaN weights or outputs): null in the JSON, said once, gates fail
            document["non_finite"] = {"keys": non_finite, "reason": "not a finite number (NaN or inf)"}
        if checks:
            document["checks"] = run_checks(document, checks)
        return document

    def document(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What was evaluated, how, the numbers, and how long each step took (seconds)."""
        seconds = {k: round(v, 3) for k, v in self.seconds.items()}
        facts = self.facts
        return {
            "model": {
                "path": str(self.meta.path),
                "sha256": sha256_file(self.meta.path)[:16],
                "concepts": self.num_concepts,
                "step": self.meta.step,
            },
            "dataset": {
                "name": facts.get("name"),
                "resolution": facts.get("resolution"),
                "num_classes": facts.get("num_classes"),
                "test_images": len(self.dataset("test")),
            },
            "settings": {**self.settings.to_json(), "device": str(self.rt.device), "precision": self.rt.precision},
            "metrics": metrics,
            "seconds": seconds,
        }


def portable_path(path: str | Path, folder: Path) -> str:
    """`path` as a file in `folder` names it: relative to `folder` when under it, else its file name."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return resolved.name


def portable_document(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The `--json` document as a metrics.json in `folder` records it, with no path of this machine: the model's
    path relative to `folder` (or its file name; its sha256 tells which checkpoint it was), the weights files
    of the settings by name, the home folder in the LPIPS note as `~`."""
    document = copy.deepcopy(document)
    model = document.get("model", {})
    if model.get("path"):
        model["path"] = portable_path(model["path"], folder)
    settings = document.get("settings", {})
    for key in ("lpips_weights", "inception_weights"):
        if settings.get(key):
            settings[key] = portable_path(settings[key], folder)
    reconstruction = document.get("metrics", {}).get("reconstruction", {})
    note, home = reconstruction.get("lpips_note"), Path.home().as_posix().rstrip("/")
    if note and home:
        reconstruction["lpips_note"] = note.replace(home + "/", "~/")
    return document


def portable_json(text: str, folder: Path) -> str:
    """`viscoin evaluate --json` output rewritten by `portable_document`, laid out as `print_json` does."""
    return json.dumps(portable_document(json.loads(text), folder), indent=2, allow_nan=False) + "\n"


def open_evaluation(
    path: str | Path,
    rt: Runtime,
    settings: Settings,
    *,
    data_root: Path | None = None,
    data_options: dict[str, bool] | None = None,
    classifier: Path | None = None,
    generator: Path | None = None,
    console: Console | None = None,
) -> Evaluation:
    """Load the model (any method; its parents verified against the hashes it records) for evaluation."""
    from viscoin_cli.nets.concept_model import load_concept_model

    started = time.perf_counter()
    model, meta = load_concept_model(path, rt.device, classifier=classifier, generator=generator)
    evaluation = Evaluation(model, meta, rt, settings, data_root, data_options or {}, console or make_console(True))
    evaluation.seconds["load"] = time.perf_counter() - started
    return evaluation
