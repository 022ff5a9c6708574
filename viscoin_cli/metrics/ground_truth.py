"""Ground truth: do a model's concepts find the attributes we know are in the images?

On a dataset that records attribute labels (`dataset.attributes`: name -> labels, and
`dataset.attribute_values`: name -> value names; e.g. shapes' shape, colour, pattern, ...), every
(attribute, value) pair is a binary target, the value against the rest. An attribute's labels are [N] value
indices when each image has exactly one value (shapes), or an [N, V] 0/1 matrix when an image may show several
of its values or none (CUB's bird attributes: a wing may be brown and white); `value_present` reads both.
- detection: each concept's pooled activation φ̄_k scores each target by its ROC AUC on the test split; the
  best concept per target is the model's concept for that value, and a target is captured when its best AUC
  reaches a threshold (0.9). An attribute's score is the mean over its values of their best AUC.
- render test (every concept model renders): an attribute probe, a tiny CNN trained for seconds on the
  train split's images, reads the attribute off images. Test images without the value are rendered with
  their matched concept's map scaled by λ (4) and by 1; the share whose probe prediction moves to the value
  says whether turning the concept up draws the attribute, not only whether it co-occurs with it.
- directions (`viscoin directions`): a classifier direction is scored like a concept, its per-image score in
  place of φ̄_k (`best_targets` names each direction's own best value); a generator direction has no
  activation on real images, so only the shift test applies: G(w ± ε·d_k) against G(w), read by the probe.
Needs no sklearn (it may cross-check the AUC in tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from viscoin_cli.interpret.encode import stack_images
from viscoin_cli.runtime import seed_for

if TYPE_CHECKING:
    from viscoin_cli.nets.latent_directions import LatentDirections

CAPTURE_THRESHOLD = 0.9  # a target is captured when some concept's AUC reaches it
RENDER_LAMBDA = 4.0  # the largest λ of the paper's sweeps
RENDER_SAMPLES = 100  # test images rendered per target
PROBE_RESOLUTION = 32  # the probe sees images at most this large: shapes' stripes survive, training takes seconds
PROBE_IMAGES = 4000  # train (and test) images the probe is fitted (and scored) on at most
PROBE_STEPS = 400
PROBE_BATCH = 64
PROBE_LR = 3e-3
PRESENT = 0.5  # a multi-label probe reads a value as present above this probability
CONTROL_THRESHOLD = 0.5  # a generator direction controls a value when it draws it in most images without it
SHIFT_SAMPLES = 100  # latents of the shift test
_SHIFT_STREAM = 1 << 43  # the shift test's latents' seed stream (no training run draws from it)

Target = tuple[str, int]  # (attribute, value index)


# --- detection: AUC of pooled activations -------------------------------------------------------------


def average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based ranks of each column of [N, K] (float64), tied values sharing their average rank."""
    scores = scores.double()
    n = scores.shape[0]
    ordered, order = scores.sort(dim=0, stable=True)
    positions = torch.arange(n, dtype=torch.float64, device=scores.device)[:, None].expand_as(ordered)
    change = ordered[1:] != ordered[:-1]  # [N-1, K]: a new tie group starts at row i + 1
    edge = torch.ones(1, ordered.shape[1], dtype=torch.bool, device=scores.device)
    starts = torch.where(torch.cat([edge, change]), positions, 0.0).cummax(0).values
    ends = torch.where(torch.cat([change, edge]), positions, float(n)).flip(0).cummin(0).values.flip(0)
    ranks = torch.empty_like(ordered)
    ranks.scatter_(0, order, (starts + ends) / 2 + 1)
    return ranks


def concept_aucs(pooled: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """ROC AUC [T, K] of every concept (column of pooled [N, K]) for every binary target (row of positives
    [T, N]), by Mann–Whitney U with ties counted half: the chance that a random positive scores above a random
    negative. The ranks are computed once per concept, so all targets cost one matrix product. NaN for a target
    without positives or negatives and for a concept with a non-finite activation (a broken model)."""
    pooled = torch.as_tensor(pooled).double()
    positives = torch.as_tensor(positives).to(torch.bool)
    if pooled.ndim == 1:
        pooled = pooled[:, None]
    if positives.ndim == 1:
        positives = positives[None]
    ranks = average_ranks(pooled)
    counts = positives.double().sum(1, keepdim=True)  # [T, 1]
    negatives = positives.shape[1] - counts
    u = positives.double() @ ranks - counts * (counts + 1) / 2
    result = u / (counts * negatives)
    result[((counts == 0) | (negatives == 0)).expand_as(result)] = float("nan")
    result[:, ~pooled.isfinite().all(0)] = float("nan")
    return result


def auc(scores: Any, positives: Any) -> float:
    """ROC AUC of `scores` [N] for the binary labels `positives` [N] (torch, numpy or lists), ties counted half."""
    scores = torch.as_tensor(scores).double().reshape(-1, 1)
    positives = torch.as_tensor(positives).reshape(1, -1)
    return float(concept_aucs(scores, positives)[0, 0])


def is_multilabel(labels: torch.Tensor) -> bool:
    """[N, V] 0/1 labels (any number of values per image) rather than [N] value indices (exactly one)."""
    return torch.as_tensor(labels).ndim == 2


def value_present(labels: torch.Tensor, index: int) -> torch.Tensor:
    """[N] bool: which images show value `index` of an attribute, from either kind of labels."""
    labels = torch.as_tensor(labels)
    return labels[:, index] != 0 if is_multilabel(labels) else labels == index


def attribute_targets(values: Mapping[str, Sequence[str]]) -> list[Target]:
    """Every (attribute, value index), in the dataset's order."""
    return [(name, index) for name, names in values.items() for index in range(len(names))]


def target_aucs(
    pooled: torch.Tensor, attributes: Mapping[str, torch.Tensor], values: Mapping[str, Sequence[str]]
) -> tuple[list[Target], torch.Tensor, torch.Tensor]:
    """Every target (attribute, value), its positives [T, N] and the AUC [T, K] of every column of pooled [N, K]."""
    targets = attribute_targets(values)
    positives = torch.stack([value_present(attributes[name], index) for name, index in targets])
    return targets, positives, concept_aucs(pooled, positives)


def attribute_auc(
    pooled: torch.Tensor,
    attributes: Mapping[str, torch.Tensor],
    values: Mapping[str, Sequence[str]],
    threshold: float = CAPTURE_THRESHOLD,
) -> dict[str, Any]:
    """The detection part of the `ground_truth` metric from pooled activations [N, K] and the same samples'
    attribute labels: per value, the concept with the highest AUC and that AUC; per attribute, the mean best AUC
    and how many values are captured; over all, the mean of the attributes' scores and the capture counts.

    Plain AUC, never max(AUC, 1 - AUC): φ̄_k ≥ 0 and a concept "shows" what it is active on. A concept that is
    active when a value is absent is a concept for the other values, and those are targets too (for a
    2-valued attribute, AUC for one value = 1 - AUC for the other), so it is credited where it belongs."""
    targets, positives, aucs = target_aucs(pooled, attributes, values)
    best_auc, best_concept = aucs.nan_to_num(-1.0).max(1)
    defined = ~aucs.isnan().all(1)
    per_attribute: dict[str, Any] = {}
    captured_values = 0
    valid = 0
    for row, (name, index) in enumerate(targets):
        entry = per_attribute.setdefault(name, {"mean_auc": None, "captured": 0, "values": {}})
        ok = bool(defined[row])
        hit = ok and float(best_auc[row]) >= threshold
        entry["values"][values[name][index]] = {
            "concept": int(best_concept[row]) if ok else None,
            "auc": float(best_auc[row]) if ok else None,
            "captured": hit,
            "positives": int(positives[row].sum()),
        }
        entry["captured"] += int(hit)
        captured_values += int(hit)
        valid += int(ok)
    scores = []
    attributes_captured = 0
    for entry in per_attribute.values():
        found = [v["auc"] for v in entry["values"].values() if v["auc"] is not None]
        entry["mean_auc"] = sum(found) / len(found) if found else None
        scores += [entry["mean_auc"]] if found else []
        attributes_captured += int(bool(found) and entry["captured"] == len(found))
    return {
        "samples": int(pooled.shape[0]),
        "concepts": int(pooled.shape[1]),
        "threshold": threshold,
        "targets": valid,
        "captured": captured_values,
        "captured_fraction": captured_values / valid if valid else None,
        "attributes": len(per_attribute),
        "attributes_captured": attributes_captured,
        "mean_auc": sum(scores) / len(scores) if scores else None,
        "per_attribute": per_attribute,
    }


def matched_concepts(result: Mapping[str, Any], values: Mapping[str, Sequence[str]]) -> dict[Target, int]:
    """(attribute, value index) -> its best concept, for the targets that have one (from `attribute_auc`)."""
    matches = {}
    for name, index in attribute_targets(values):
        concept = result["per_attribute"][name]["values"][values[name][index]]["concept"]
        if concept is not None:
            matches[(name, index)] = concept
    return matches


def labelled(
    dataset: Any, indices: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]] | None:
    """A dataset's attribute labels (name -> [N] value indices, or [N, V] 0/1), of the samples `indices` only
    when given, and value names; None when it records none."""
    attributes, values = getattr(dataset, "attributes", None), getattr(dataset, "attribute_values", None)
    if not attributes or not values:
        return None
    labels = {name: torch.as_tensor(attributes[name]).long() for name in values}
    if indices is not None:
        labels = {name: label[indices] for name, label in labels.items()}
    return labels, {name: list(names) for name, names in values.items()}


def best_targets(
    pooled: torch.Tensor, attributes: Mapping[str, torch.Tensor], values: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """Per column of pooled [N, K] (a concept, or a direction's score): the attribute value it predicts best
    and that AUC, JSON-ready (`attribute_auc` answers the other way round: per value, its best column)."""
    targets, _, aucs = target_aucs(pooled, attributes, values)
    best_auc, best_target = aucs.nan_to_num(-1.0).max(0)
    rows = []
    for column in range(aucs.shape[1]):
        name, index = targets[int(best_target[column])]
        found = float(best_auc[column]) >= 0
        rows.append(
            {
                "direction": column,
                "attribute": name if found else None,
                "value": values[name][index] if found else None,
                "auc": float(best_auc[column]) if found else None,
            }
        )
    return rows


# --- the attribute probe ----------------------------------------------------------------------------------


def probe_inputs(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images [N, 3, R, R] in [-1, 1] at the probe's resolution (antialiased: stripes average, not alias)."""
    images = images.float()
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


class AttributeProbe(nn.Module):
    """A tiny CNN with one head per attribute: a softmax over its values, or one sigmoid per value for a
    multi-label attribute (`multilabel`). Its features: three 3×3 conv layers, then a 2×2 average pool (where:
    position) beside a global max (whether: a small striped object still fires)."""

    def __init__(
        self,
        values: Mapping[str, Sequence[str]],
        resolution: int = PROBE_RESOLUTION,
        multilabel: Collection[str] = (),
    ):
        super().__init__()
        self.names = list(values)
        self.multilabel = frozenset(multilabel)
        self.sizes = [len(values[name]) for name in self.names]
        self.resolution = resolution
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(32 * 4 + 32, sum(self.sizes))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(probe_inputs(images, self.resolution))
        features = torch.cat([F.adaptive_avg_pool2d(h, 2).flatten(1), h.amax((2, 3))], 1)
        return dict(zip(self.names, self.head(features).split(self.sizes, 1), strict=True))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Per attribute, [N, values] probabilities on the CPU (rows sum to 1, or one independent probability per
        value for a multi-label attribute), a batch at a time on the probe's device."""
        device = next(self.parameters()).device
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        for chunk in images.split(batch_size):
            for name, logits in self(chunk.to(device)).items():
                logits = logits.float()
                parts[name].append((logits.sigmoid() if name in self.multilabel else logits.softmax(1)).cpu())
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    def shows(self, probabilities: torch.Tensor, name: str, index: int) -> torch.Tensor:
        """[N] bool: does the probe read value `index` of attribute `name` (its most likely value; for a
        multi-label attribute, a probability above one half)?"""
        if name in self.multilabel:
            return probabilities[:, index] > PRESENT
        return probabilities.argmax(1) == index


def train_probe(
    images: torch.Tensor,
    attributes: Mapping[str, torch.Tensor],
    values: Mapping[str, Sequence[str]],
    *,
    seed: int = 0,
    steps: int = PROBE_STEPS,
    batch_size: int = PROBE_BATCH,
    device: torch.device | str = "cpu",
) -> AttributeProbe:
    """An `AttributeProbe` fitted on `images` [N, 3, R, R] (the train split's; resized to at most
    PROBE_RESOLUTION) for every attribute at once (the sum of the heads' cross-entropies; binary ones, summed
    over the values, for a multi-label attribute), with Adam for a fixed number of steps: seconds on a CPU.
    Seeded; the global random state is left as it was."""
    resolution = min(PROBE_RESOLUTION, images.shape[-1])
    inputs = probe_inputs(images, resolution)
    labels = {name: torch.as_tensor(attributes[name]).long() for name in values}
    multilabel = [name for name in values if is_multilabel(labels[name])]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = AttributeProbe(values, resolution, multilabel).to(device)

    def head_loss(name: str, logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        if name in probe.multilabel:
            return F.binary_cross_entropy_with_logits(logits, truth.float(), reduction="sum") / len(truth)
        return F.cross_entropy(logits, truth)

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    probe.train()
    for _ in range(steps):
        batch = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        outputs = probe(inputs[batch].to(device))
        loss = sum(head_loss(name, outputs[name], labels[name][batch].to(device)) for name in probe.names)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return probe.eval()


def probe_accuracy(
    probe: AttributeProbe, images: torch.Tensor, attributes: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Per attribute: the probe's accuracy on `images` (the test split's) and the majority value's share, the
    accuracy of always guessing it, so a reader sees whether the probe learned anything to trust. For a
    multi-label attribute both are per (image, value) decision: present or not."""
    probabilities = probe.probabilities(images)
    accuracy, majority = {}, {}
    for name in probe.names:
        truth = torch.as_tensor(attributes[name]).long()
        if name in probe.multilabel:
            accuracy[name] = float(((probabilities[name] > PRESENT) == (truth != 0)).double().mean())
            share = (truth != 0).double().mean(0)
            majority[name] = float(torch.maximum(share, 1 - share).mean())
            continue
        accuracy[name] = float((probabilities[name].argmax(1) == truth).double().mean())
        majority[name] = int(truth.bincount().max()) / len(truth)
    return {"accuracy": accuracy, "majority": majority}


@torch.no_grad()
def probe_images(
    dataset: Any, attributes: Mapping[str, torch.Tensor], *, seed: int = 0, batch_size: int = 64
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Up to PROBE_IMAGES images of a split (drawn with the seed when more), at the probe's resolution, and
    their attribute labels: a 256 px split never sits in memory whole."""
    indices = torch.arange(len(dataset))
    if len(dataset) > PROBE_IMAGES:
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:PROBE_IMAGES]
        indices = indices.sort().values
    parts = []
    for chunk in indices.split(batch_size):
        images = stack_images(dataset, chunk.tolist())
        parts.append(probe_inputs(images, min(PROBE_RESOLUTION, images.shape[-1])))
    return torch.cat(parts), {name: labels[indices] for name, labels in attributes.items()}


def fit_probe(
    train_set: Any, test_set: Any, *, seed: int = 0, batch_size: int = 64, device: torch.device | str = "cpu"
) -> tuple[AttributeProbe, dict[str, Any]]:
    """The attribute probe trained on `train_set` and its report on `test_set` (resolution, steps, image counts,
    accuracy beside the majority share), for the `probe` entry of a ground-truth document."""
    (train_attributes, values), (test_attributes, _) = labelled(train_set), labelled(test_set)
    train_images, train_attributes = probe_images(train_set, train_attributes, seed=seed, batch_size=batch_size)
    probe = train_probe(train_images, train_attributes, values, seed=seed, device=device)
    test_images, test_attributes = probe_images(test_set, test_attributes, seed=seed, batch_size=batch_size)
    report = {
        "resolution": probe.resolution,
        "steps": PROBE_STEPS,
        "train_images": len(train_images),
        "test_images": len(test_images),
        **probe_accuracy(probe, test_images, test_attributes),
    }
    return probe, report


# --- the render test ----------------------------------------------------------------------------------------


def render_with(
    model: Any,
    concept_maps: torch.Tensor,
    support: torch.Tensor,
    concept: int,
    lam: float,
    batch_size: int = 64,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """Renders [N, C, H, W] in [-1, 1] (CPU) with concept map `concept` scaled by λ (the inputs untouched)."""
    device = next(model.parameters()).device
    images = []
    for first in range(0, len(concept_maps), batch_size):
        maps = concept_maps[first : first + batch_size].to(device, copy=True)
        maps[:, concept] = maps[:, concept] * lam
        with torch.no_grad(), autocast():
            rendered = model.render(maps, support[first : first + batch_size].to(device))
        images.append(rendered.float().clamp(-1, 1).cpu())
    return torch.cat(images)


def render_test(
    model: Any,
    concept_maps: torch.Tensor,
    support: torch.Tensor,
    attributes: Mapping[str, torch.Tensor],
    matches: Mapping[Target, int],
    probe: AttributeProbe,
    *,
    lam: float = RENDER_LAMBDA,
    samples: int = RENDER_SAMPLES,
    seed: int = 0,
    batch_size: int = 64,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    on_target: Callable[[], None] | None = None,
) -> dict[Target, dict[str, Any]]:
    """For each target (attribute, value) and its matched concept: up to `samples` test images (drawn with the
    seed) where the value is absent, rendered with the concept scaled by λ and by 1 (the plain render, shared by
    all targets). Per target: flip_rate, the share whose probe prediction is the value at λ but was not at 1;
    probability_gain, the mean rise of the probe's probability of the value; baseline_rate, the share the probe
    already calls the value at λ = 1 (a poor reconstruction, or a poor probe, shows there)."""
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[Target, torch.Tensor] = {}
    for name, index in matches:
        absent = (~value_present(attributes[name], index)).nonzero().flatten()
        order = torch.randperm(len(absent), generator=generator)[:samples]
        chosen[(name, index)] = absent[order].sort().values
    union = torch.unique(torch.cat(list(chosen.values()))) if chosen else torch.zeros(0, dtype=torch.long)
    plain: dict[str, torch.Tensor] = {}
    if len(union):
        rendered = render_with(model, concept_maps[union], support[union], 0, 1.0, batch_size, autocast)
        plain = probe.probabilities(rendered)
    position = torch.full((len(concept_maps),), -1, dtype=torch.long)
    position[union] = torch.arange(len(union))
    results: dict[Target, dict[str, Any]] = {}
    for (name, index), indices in chosen.items():
        if not len(indices):
            results[(name, index)] = {"samples": 0, "flip_rate": None, "probability_gain": None, "baseline_rate": None}
            continue
        rendered = render_with(
            model, concept_maps[indices], support[indices], matches[(name, index)], lam, batch_size, autocast
        )
        up = probe.probabilities(rendered)[name]
        before = plain[name][position[indices]]
        shows_up, shown_before = probe.shows(up, name, index), probe.shows(before, name, index)
        flipped = shows_up & ~shown_before
        results[(name, index)] = {
            "samples": len(indices),
            "flip_rate": float(flipped.double().mean()),
            "probability_gain": float((up[:, index] - before[:, index]).double().mean()),
            "baseline_rate": float(shown_before.double().mean()),
        }
        if on_target is not None:
            on_target()
    return results


def add_render_results(
    result: dict[str, Any],
    renders: Mapping[Target, Mapping[str, Any]],
    values: Mapping[str, Sequence[str]],
    lam: float,
    samples: int,
) -> None:
    """Put each target's render test beside its AUC (`render`, null without a matched concept) and the means
    over the tested targets in `result["render"]`, in place."""
    for name, index in attribute_targets(values):
        entry = result["per_attribute"][name]["values"][values[name][index]]
        entry["render"] = dict(renders[(name, index)]) if (name, index) in renders else None
    tested = [r for r in renders.values() if r["flip_rate"] is not None]

    def mean(key: str) -> float | None:
        return sum(r[key] for r in tested) / len(tested) if tested else None

    result["render"] = {
        "lambda": lam,
        "samples": samples,
        "targets": len(tested),
        "flip_rate": mean("flip_rate"),
        "probability_gain": mean("probability_gain"),
    }


def result_keys(values: Mapping[str, Sequence[str]], render: bool) -> set[str]:
    """The numeric keys (dotted, under `ground_truth.`) the metric's document holds, for the CI checks."""
    keys = {"samples", "concepts", "threshold", "targets", "captured", "captured_fraction", "attributes"}
    keys |= {"attributes_captured", "mean_auc"}
    for name, names in values.items():
        keys |= {f"per_attribute.{name}.mean_auc", f"per_attribute.{name}.captured"}
        for value in names:
            keys |= {f"per_attribute.{name}.values.{value}.{field}" for field in ("concept", "auc", "positives")}
            if render:
                fields = ("samples", "flip_rate", "probability_gain", "baseline_rate")
                keys |= {f"per_attribute.{name}.values.{value}.render.{field}" for field in fields}
    if render:
        keys |= {f"render.{field}" for field in ("lambda", "samples", "targets", "flip_rate", "probability_gain")}
        keys |= {f"probe.{field}" for field in ("resolution", "steps", "train_images", "test_images")}
        keys |= {f"probe.{kind}.{name}" for kind in ("accuracy", "majority") for name in values}
    return {f"ground_truth.{key}" for key in keys}


# --- the shift test: generator directions ---------------------------------------------------------------


@torch.no_grad()
def shift_test(
    G: nn.Module,
    directions: LatentDirections,
    probe: AttributeProbe,
    values: Mapping[str, Sequence[str]],
    *,
    shift: float,
    samples: int = SHIFT_SAMPLES,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Does moving along a generator direction draw a known attribute value? The render test of a direction:
    `samples` latents w (seeded), G(w) and G(w ± shift·σ_W·d_k) for every direction k (`LatentDirections`), all
    read by the probe. For each target (attribute, value), each (direction, sign): flip_rate, the share of the
    images the probe does not read the value in at w that it reads it in after the shift; probability_gain, the
    mean rise of the probe's probability of the value over those images. Each target gets its best (direction,
    sign) by flip rate; each direction its best (target, sign). baseline_rate: how often G draws the value."""
    device = next(G.parameters()).device
    targets = attribute_targets(values)
    generator = torch.Generator(device).manual_seed(seed_for(seed, _SHIFT_STREAM))
    ws = G.mapping(torch.randn(samples, G.z_dim, generator=generator, device=device), None)

    def read(latents: torch.Tensor) -> dict[str, torch.Tensor]:
        images = []
        for chunk in latents.split(batch_size):
            images.append(G.synthesis(chunk, noise_mode="const").float().clamp(-1, 1).cpu())
        return probe.probabilities(torch.cat(images))

    base = read(ws)
    shown = torch.stack([probe.shows(base[name], name, index) for name, index in targets])  # [T, N]
    before = torch.stack([base[name][:, index] for name, index in targets])
    absent = (~shown).double()
    count = absent.sum(1)  # [T]
    K = directions.num_directions
    flip = torch.full((K, 2, len(targets)), float("nan"), dtype=torch.float64)
    gain = torch.full_like(flip, float("nan"))
    for k in range(K):
        which = torch.full((samples,), k, dtype=torch.long, device=device)
        for s, sign in enumerate((1.0, -1.0)):
            moved = read(directions.shift(ws, which, torch.full((samples,), sign * shift, device=device)))
            now = torch.stack([probe.shows(moved[name], name, index) for name, index in targets])
            after = torch.stack([moved[name][:, index] for name, index in targets])
            flip[k, s] = (now.double() * absent).sum(1) / count
            gain[k, s] = ((after - before).double() * absent).sum(1) / count
    flip[:, :, count == 0] = float("nan")  # G draws the value everywhere: nothing to flip
    gain[:, :, count == 0] = float("nan")
    ranked = flip.nan_to_num(-1.0)

    def entry(k: int, s: int, t: int) -> dict[str, Any]:
        defined = not math.isnan(float(flip[k, s, t]))
        return {
            "direction": k,
            "sign": 1 if s == 0 else -1,
            "flip_rate": float(flip[k, s, t]) if defined else None,
            "probability_gain": float(gain[k, s, t]) if defined else None,
        }

    per_attribute: dict[str, Any] = {}
    tested = []
    for t, (name, index) in enumerate(targets):
        best = int(ranked[:, :, t].flatten().argmax())
        row = {
            **entry(best // 2, best % 2, t),
            "samples": int(count[t]),
            "baseline_rate": float(shown[t].double().mean()),
        }
        per_attribute.setdefault(name, {"values": {}})["values"][values[name][index]] = row
        if row["flip_rate"] is not None:
            tested.append(row)
    by_direction = []
    for k in range(K):
        best = int(ranked[k].flatten().argmax())
        s, t = divmod(best, len(targets))
        name, index = targets[t]
        by_direction.append({**entry(k, s, t), "attribute": name, "value": values[name][index]})
    controlled = sum(row["flip_rate"] >= CONTROL_THRESHOLD for row in tested)
    return {
        "samples": samples,
        "shift": shift,
        "directions": K,
        "targets": len(tested),
        "control_threshold": CONTROL_THRESHOLD,
        "controlled": controlled,
        "flip_rate": sum(row["flip_rate"] for row in tested) / len(tested) if tested else None,
        "probability_gain": sum(row["probability_gain"] for row in tested) / len(tested) if tested else None,
        "per_attribute": per_attribute,
        "by_direction": by_direction,
    }
