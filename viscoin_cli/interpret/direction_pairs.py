"""Concepts as encoding/decoding direction pairs in a classifier's activations (Doumanoglou, Driessens &
Zarpalas, 2025).

Under linear concept representations an activation vector a (one image's pooled features, or one spatial
position of a feature map) is a sum of concept factors times encoding directions, a = Σ_k s_k e_k + noise,
with s_k ≥ 0 and mostly zero. A decoding direction d_k reads the factor back, s_k = <d_k, a>: it responds to
concept k and ignores the others (d_k ⟂ e_j for j ≠ k), so for non-orthogonal e's it is not e_k itself.

Steps (see docs/method.md for the choices where the paper gives no detail):
  1. directional clustering: spherical k-means of the activation vectors long enough to have a direction
     (ReLU outputs, so directions are rays from 0); each cluster's most aligned members ("core") are taken as
     instances of one concept;
  2. decoding directions: the linear read-out that gives each core member its factor on its own cluster and
     zero on the others (ridge least squares), refitted on the vectors it then finds pure (one concept): the
     dual of the concept rays, a filter rather than a prototype;
  3. encoding directions: signal vectors (Haufe et al., 2014), e_k = Σ d_k / (d_kᵀ Σ d_k) with Σ the
     covariance of all activation vectors, so that <d_k, e_k> = 1 and a − <d_k, a> e_k removes exactly the
     read factor;
  4. Uncertainty Region Alignment (URA): the network's own weights after the tap judge the candidates. From
     each image the way into the region where f is unsure between its top two classes is the gradient of the
     top-2 logit margin (for `pooled`, w_top1 − w_top2 of f's last linear layer). A pair whose encoding
     direction is aligned with those normals moves predictions; one the later layers are blind to does not.
     Candidates are ranked by that alignment (class-balanced) and those below random unit directions dropped.

The tap's activation vectors are streamed in batches and capped at `samples`; every pass over data is batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from viscoin_cli.errors import UserError
from viscoin_cli.interpret.relevance import relative
from viscoin_cli.metrics.faithfulness import DEFAULT_THRESHOLDS, summarize

LAYERS = ("layer2", "layer3", "layer4_penultimate", "pooled")
MAX_DIRECTIONS = 512
MAX_SAMPLES = 200_000  # activation vectors held for the fit: 200k × 2048 floats is 1.6 GB, the most we allow
MAX_TEST_IMAGES = 100_000
MAX_TOP_IMAGES = 32
_EPS = 1e-12


@dataclass(frozen=True)
class DirectionConfig:
    """How direction pairs are found and evaluated (the checkpoint records it)."""

    layer: str = "pooled"
    directions: int = 16  # K: at most this many pairs kept after URA
    oversample: int = 1  # candidates clustered per kept direction (URA keeps the K best of K·oversample)
    samples: int = 20_000  # activation vectors fitted (pooled: one per image; spatial taps: positions)
    core: float = 0.5  # fraction of each cluster, most aligned with its centre, that the read-out is fitted on
    min_norm: float = 0.1  # vectors shorter than this × the 95th percentile length are too weak to have a direction
    ridge: float = 1e-3  # read-out regularisation, relative to the mean activation energy
    refine: int = 2  # read-out refits on the vectors the read-out finds pure (one concept)
    purity: float = 0.9  # pure: one factor is at least this share of the positive factors
    kmeans_iterations: int = 50
    kmeans_restarts: int = 3
    ura_images: int = 512  # fitted images whose nearest uncertainty region URA aligns with (class-balanced)
    ura_min_ratio: float = 1.0  # keep a candidate only if its URA score is at least this × the random score
    random_directions: int = 64  # random unit directions for URA's baseline
    test_images: int = 1000  # test images evaluated (a seeded random subset when the split is larger)
    top_images: int = 8  # most aligned test images shown per direction
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    seed: int = 0

    @property
    def candidates(self) -> int:
        return self.directions * self.oversample

    def check(self) -> DirectionConfig:
        """One-line errors for values no fit can use (before any data is read)."""
        if self.layer not in LAYERS:
            raise UserError(f"--layer {self.layer!r}: unknown layer (expected one of {', '.join(LAYERS)})")
        if not 1 <= self.directions <= MAX_DIRECTIONS:
            raise UserError(f"--directions {self.directions}: expected 1..{MAX_DIRECTIONS}")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise UserError(f"--samples {self.samples}: expected 1..{MAX_SAMPLES} activation vectors")
        if self.samples < 4 * self.candidates:
            raise UserError(
                f"--samples {self.samples}: too few to cluster {self.candidates} candidate directions "
                f"(need at least {4 * self.candidates})"
            )
        if not 1 <= self.test_images <= MAX_TEST_IMAGES:
            raise UserError(f"--test-images {self.test_images}: expected 1..{MAX_TEST_IMAGES}")
        if not 1 <= self.top_images <= MAX_TOP_IMAGES:
            raise UserError(f"--top-images {self.top_images}: expected 1..{MAX_TOP_IMAGES}")
        if not 0 < self.core <= 1 or not 0 < self.purity <= 1 or self.ura_images < 1:
            raise ValueError("core and purity are fractions in (0, 1], ura_images at least 1")
        return self

    def check_dim(self, dim: int) -> None:
        """K pairs of duals need K ≤ D: more directions than the tap has channels is a one-line error."""
        if self.directions > dim:
            raise UserError(f"--directions {self.directions}: the {self.layer} tap has only {dim} channels")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "thresholds": list(self.thresholds)}


# ---------------------------------------------------------------------------------------------------
# The math, on plain tensors


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x scaled to unit length along `dim` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(_EPS)


def spherical_kmeans(
    x: torch.Tensor, k: int, iterations: int = 50, restarts: int = 3, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of x [N, D] by direction: unit centres [k, D] and each row's cluster [N].

    Rows are assigned to the centre of highest cosine; a centre is the direction of the sum of its (raw)
    members, so long vectors, whose direction is least noisy, weigh most. k-means++ seeding on 1 − cos; an
    emptied cluster is re-seeded with the worst-fitting row. The best of `restarts` runs (sum of the
    members' projections on their centres) wins.
    """
    if k > len(x):
        raise ValueError(f"cannot make {k} clusters of {len(x)} vectors")
    directions = unit(x)
    norms = x.norm(dim=1)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(max(1, restarts)):
        centres = _kmeans_pp(directions, k, generator)
        for _ in range(iterations):
            cosines = directions @ centres.T
            labels = cosines.argmax(1)
            sums = torch.zeros_like(centres).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=k)
            fit = cosines.gather(1, labels[:, None]).squeeze(1)
            for empty in torch.nonzero(counts == 0).flatten().tolist():
                worst = int(fit.argmin())
                sums[empty] = x[worst]
                fit[worst] = float("inf")
            new = unit(sums)
            moved = (new - centres).abs().max().item()
            centres = new
            if moved < 1e-6:
                break
        labels = (directions @ centres.T).argmax(1)
        objective = float((norms * (directions * centres[labels]).sum(1)).sum())
        if best is None or objective > best[0]:
            best = (objective, centres, labels)
    return best[1], best[2]


def _kmeans_pp(directions: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeds among unit rows, with (1 − cos)² as the squared distance."""
    first = int(torch.randint(len(directions), (1,), generator=generator))
    chosen = [first]
    distance = (1 - directions @ directions[first]).clamp_min(0) ** 2
    for _ in range(1, k):
        total = distance.sum()
        if total <= 0:  # every row sits on a centre already: pick any unused one
            pick = next(i for i in range(len(directions)) if i not in chosen)
        else:
            pick = int(torch.multinomial(distance / total, 1, generator=generator))
        chosen.append(pick)
        distance = torch.minimum(distance, (1 - directions @ directions[pick]).clamp_min(0) ** 2)
    return directions[chosen].clone()


def core_members(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, core: float) -> torch.Tensor:
    """Mask [N] of each cluster's `core` fraction of members most aligned with its centre (at least one)."""
    cosines = (unit(x) * centres[labels]).sum(1)
    mask = torch.zeros(len(x), dtype=torch.bool)
    for k in range(len(centres)):
        members = torch.nonzero(labels == k).flatten()
        if len(members) == 0:
            continue
        keep = max(1, math.ceil(core * len(members)))
        mask[members[cosines[members].topk(keep).indices]] = True
    return mask


def _readout(x: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Unit filters [k, D] w with <w_k, x_n> ≈ targets[n, k] over the chosen rows (ridge least squares, float64)."""
    xs = x[rows].double()
    gram = xs.T @ xs
    lam = ridge * gram.diagonal().mean().clamp_min(_EPS)
    weights = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xs.T @ targets.double())
    return unit(weights.T).float()


def fit_decoders(
    x: torch.Tensor,
    centres: torch.Tensor,
    labels: torch.Tensor,
    core: float = 0.5,
    ridge: float = 1e-3,
    refine: int = 2,
    purity: float = 0.9,
) -> torch.Tensor:
    """Unit decoding directions [k, D]: the read-out giving each core member its factor on its own cluster
    (its projection on the centre) and zero on every other cluster, by ridge least squares.

    Zero on the other clusters is what makes d_k a filter (the dual of the concept rays) rather than the
    cluster's prototype, which also responds to every concept not orthogonal to it. A core still holds
    vectors where two concepts mix, which bends the fit; `refine` rounds refit on the vectors the current
    read-out finds pure (one factor at least `purity` of the sum of positive factors) with that factor alone.
    """
    mask = core_members(x, centres, labels, core)
    targets = torch.zeros(int(mask.sum()), len(centres))
    targets[torch.arange(len(targets)), labels[mask]] = (x[mask] * centres[labels[mask]]).sum(1)
    decoders = _readout(x, mask, targets, ridge)
    sign = torch.where((decoders * centres).sum(1) < 0, -1.0, 1.0)  # read positive on its own cluster
    decoders = decoders * sign[:, None]
    for _ in range(refine):
        factors = (x @ decoders.T).clamp_min(0)
        top = factors.max(1)
        pure = (top.values > 0) & (top.values >= purity * factors.sum(1))
        if len(torch.unique(top.indices[pure])) < len(centres):  # a direction with no pure vector: keep the fit
            break
        targets = torch.zeros(int(pure.sum()), len(centres))
        targets[torch.arange(len(targets)), top.indices[pure]] = top.values[pure]
        decoders = _readout(x, pure, targets, ridge)
    return decoders


def covariance(x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """The covariance [D, D] of the rows of x, accumulated in float64 chunks (N can be large)."""
    mean = x.double().mean(0)
    total = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].double() - mean
        total += part.T @ part
    return total / max(1, len(x) - 1)


def signal_vectors(cov: torch.Tensor, decoders: torch.Tensor) -> torch.Tensor:
    """Encoding directions [k, D] of decoding filters [k, D]: e = Σ d / (dᵀ Σ d) (Haufe et al.'s activation
    pattern), scaled so that <d, e> = 1 and a − <d, a> e zeroes the read-out."""
    d = decoders.double()
    projected = d @ cov  # Σ is symmetric: rows are (Σ d_k)ᵀ
    variance = (projected * d).sum(1, keepdim=True)
    return (projected / variance.clamp_min(_EPS)).float()


def read(activation: torch.Tensor, decoders: torch.Tensor) -> torch.Tensor:
    """Factors <d_k, a> of [N, D] or [N, D, h, w] activations -> [N, K] or [N, K, h, w]."""
    if activation.ndim == 2:
        return activation @ decoders.T
    return torch.einsum("ndhw,kd->nkhw", activation, decoders)


def remove(activation: torch.Tensor, decoders: torch.Tensor, encoders: torch.Tensor, keep: torch.Tensor | None = None):
    """The activation with the read factor of each direction taken out along its encoding direction:
    a − Σ_k m_k <d_k, a> e_k, with m [N, K] (default all ones) choosing the directions per image. With <d, e> = 1
    this is an (oblique) projection: the removed direction reads zero afterwards."""
    factors = read(activation, decoders)
    if keep is not None:
        factors = factors * (keep.to(factors.dtype)[:, :, None, None] if factors.ndim == 4 else keep.to(factors.dtype))
    if activation.ndim == 2:
        return activation - factors @ encoders
    return activation - torch.einsum("nkhw,kd->ndhw", factors, encoders)


def add(activation: torch.Tensor, encoder: torch.Tensor, amount: float) -> torch.Tensor:
    """The activation with `amount` of one concept written in (at every position of a feature map)."""
    return activation + amount * (encoder if activation.ndim == 2 else encoder[None, :, None, None])


def ura_alignment(gradients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """How aligned unit `directions` [K, D] are with boundary normals: per image [N] and direction, the share of
    the margin's gradient [N, D] or [N, D, h, w] that lies along the direction, Σ_p |<u, g_p>| / Σ_p ‖g_p‖ -> [N, K]."""
    u = unit(directions)
    if gradients.ndim == 2:
        return (gradients @ u.T).abs() / gradients.norm(dim=1, keepdim=True).clamp_min(_EPS)
    along = torch.einsum("ndhw,kd->nkhw", gradients, u).abs().sum((2, 3))
    return along / gradients.norm(dim=1).sum((1, 2))[:, None].clamp_min(_EPS)


def random_units(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random unit directions [count, D] (isotropic: normalised Gaussians)."""
    return unit(torch.randn(count, dim, generator=generator))


def random_orthonormal(images: int, dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """Per image, `count` random orthonormal directions [N, count, D] (QR of Gaussians): the faithfulness
    baseline removes as many of them as the method removes directions."""
    q, _ = torch.linalg.qr(torch.randn(images, dim, count, generator=generator))
    return q.transpose(1, 2)


# ---------------------------------------------------------------------------------------------------
# Fitting on a classifier


@dataclass
class DirectionPairs:
    """What a fit finds: K unit decoding and K encoding directions (<d_k, e_k> = 1), kept by URA."""

    layer: str
    decoding: torch.Tensor  # [K, D], unit
    encoding: torch.Tensor  # [K, D]
    scale: torch.Tensor  # [K]: a typical factor when the concept is present (90th percentile on its cluster)
    ura: torch.Tensor  # [K]: URA score (mean alignment with the uncertainty region's boundary normals)
    ura_random: float  # the same score for random unit directions
    candidates: list[int]  # which of the clustered candidates each kept direction is
    facts: dict[str, Any] = field(default_factory=dict)  # what was fitted on (counts), for the record

    def __len__(self) -> int:
        return len(self.decoding)

    @property
    def dim(self) -> int:
        return self.decoding.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"decoding": self.decoding, "encoding": self.encoding, "scale": self.scale, "ura": self.ura}


def _loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)


def _flat_positions(activation: torch.Tensor) -> torch.Tensor:
    """[N, D, h, w] -> [N, h·w, D]; pooled [N, D] -> [N, 1, D]."""
    if activation.ndim == 2:
        return activation[:, None, :]
    return activation.flatten(2).transpose(1, 2)


@torch.no_grad()
def collect_activations(
    classifier, dataset: Dataset, config: DirectionConfig, rt, batch_size: int = 64, workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The activation vectors to fit on [M ≤ samples, D], the images they come from (dataset indices), and
    f's predicted class of each of those images.

    At most `samples` images are read (a seeded random subset when the split is larger); a spatial tap gives
    the same number of random positions per image, so that M ≤ samples.
    """
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(dataset), generator=generator)[: min(len(dataset), config.samples)]
    subset = Subset(dataset, order.tolist())
    per_image = math.ceil(config.samples / len(order))
    vectors, predicted = [], []
    for images, _ in _loader(subset, batch_size, workers):
        with rt.autocast():
            taps = classifier.forward_taps(images.to(rt.device))
        positions = _flat_positions(taps[config.layer].float().cpu())
        take = min(per_image, positions.shape[1])
        picks = torch.rand(positions.shape[:2], generator=generator).argsort(1)[:, :take]
        vectors.append(positions.gather(1, picks[:, :, None].expand(-1, -1, positions.shape[2])).flatten(0, 1))
        predicted.append(taps["logits"].argmax(1).cpu())
    return torch.cat(vectors)[: config.samples], order, torch.cat(predicted)


def strong(x: torch.Tensor, min_norm: float) -> torch.Tensor:
    """Mask of the rows at least `min_norm` × the 95th-percentile length: a ReLU map's background positions
    (zero or nearly) have no direction worth clustering, only noise."""
    norms = x.norm(dim=1)
    return norms > min_norm * torch.quantile(norms, 0.95).clamp_min(_EPS)


def margin_gradients(classifier, layer: str, activation: torch.Tensor) -> torch.Tensor:
    """∂(top-1 logit − top-2 logit)/∂a at the tap: the normal of the nearest decision boundary, per image."""
    with torch.enable_grad():
        a = activation.detach().requires_grad_(True)
        logits = classifier.forward_from(layer, a)
        top2 = logits.topk(2, dim=1).indices
        rows = torch.arange(len(a), device=a.device)
        margin = logits[rows, top2[:, 0]] - logits[rows, top2[:, 1]]
        (gradient,) = torch.autograd.grad(margin.sum(), a)
    return gradient


def uncertainty_alignment(
    classifier,
    dataset: Dataset,
    images: torch.Tensor,
    classes: torch.Tensor,
    directions: torch.Tensor,
    baseline: torch.Tensor,
    layer: str,
    rt,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """URA scores [K] of `directions` and [R] of `baseline` directions: their alignment with each image's
    margin gradient (`ura_alignment`), averaged over the images of each predicted class (`classes`), then over
    the classes, so that a class f is sure of counts as much as the ones it confuses."""
    per_class = torch.zeros(int(classes.max()) + 1, len(directions) + len(baseline), dtype=torch.float64)
    both = torch.cat([directions, baseline])
    for start in range(0, len(images), batch_size):
        index = images[start : start + batch_size]
        batch = torch.stack([dataset[int(i)][0] for i in index])
        with torch.no_grad():
            activation = classifier.forward_taps(batch.to(rt.device))[layer].float()
        gradient = margin_gradients(classifier, layer, activation).cpu()
        per_class.index_add_(0, classes[start : start + batch_size], ura_alignment(gradient, both).double())
    counts = torch.bincount(classes, minlength=len(per_class))
    means = per_class[counts > 0] / counts[counts > 0, None]
    score = means.mean(0).float()
    return score[: len(directions)], score[len(directions) :]


def fit_direction_pairs(
    classifier,
    dataset: Dataset,
    config: DirectionConfig,
    rt,
    batch_size: int = 64,
    workers: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> DirectionPairs:
    """Cluster, read out, estimate signal vectors, then keep the candidates URA finds the network uses."""
    config.check()
    classifier.eval()
    everything, order, predicted = collect_activations(classifier, dataset, config, rt, batch_size, workers)
    config.check_dim(everything.shape[1])
    x = everything[strong(everything, config.min_norm)]
    candidates = min(config.candidates, x.shape[1], len(x))
    if len(x) < 2 * candidates:
        raise UserError(f"the {config.layer} tap gave only {len(x)} non-zero activation vectors: too few to cluster")
    log(f"clustering {len(x)} activation vectors of {config.layer} (D = {x.shape[1]}) into {candidates} directions")
    generator = torch.Generator().manual_seed(config.seed)
    centres, labels = spherical_kmeans(x, candidates, config.kmeans_iterations, config.kmeans_restarts, generator)
    decoding = fit_decoders(x, centres, labels, config.core, config.ridge, config.refine, config.purity)
    # the covariance of every vector, weak ones included: leaving out the vectors with no concept would make
    # the factors of the rest depend on each other, and their covariance would mix the encoding directions
    encoding = signal_vectors(covariance(everything), decoding)
    reads = x @ decoding.T
    scale = torch.stack(
        [
            torch.quantile(reads[labels == k, k], 0.9) if bool((labels == k).any()) else reads[:, k].clamp_min(0).max()
            for k in range(candidates)
        ]
    ).clamp_min(_EPS)
    # URA: alignment with the way from each image to the region where f is unsure between its top two classes
    count = min(config.ura_images, len(order))
    baseline = random_units(config.random_directions, x.shape[1], generator)
    log(f"aligning {candidates} candidates with the uncertainty regions of {count} training images")
    score, random_score = uncertainty_alignment(
        classifier, dataset, order[:count], predicted[:count], encoding, baseline, config.layer, rt, batch_size
    )
    random_mean = float(random_score.mean())
    ranked = score.argsort(descending=True, stable=True)
    passing = [int(k) for k in ranked if score[k] >= config.ura_min_ratio * random_mean]
    kept = (passing or [int(ranked[0])])[: config.directions]
    index = torch.tensor(kept)
    facts = {
        "fit_images": len(order),
        "fit_vectors": len(everything),
        "clustered_vectors": len(x),
        "candidates": candidates,
        "passing_ura": len(passing),
        "ura_images": count,
        "cluster_sizes": torch.bincount(labels, minlength=candidates)[index].tolist(),
    }
    return DirectionPairs(
        config.layer, decoding[index], encoding[index], scale[index], score[index], random_mean, kept, facts
    )


# ---------------------------------------------------------------------------------------------------
# Evaluation on test images: most aligned images, effect on the logits, counterfactuals, faithfulness


@dataclass
class Evaluation:
    """Per direction: the top test images and the counterfactual; overall: faithfulness beside random."""

    images: int
    accuracy: float
    top_indices: torch.Tensor  # [K, top] dataset indices, most aligned first
    top_scores: torch.Tensor  # [K, top]
    logit_effect: torch.Tensor  # [K, C]: logit change per unit of factor written in along e_k
    flip_rate: torch.Tensor  # [K]
    probability_drop: torch.Tensor  # [K]: mean drop of the predicted class's probability when removed
    faithfulness: dict[str, dict[str, float]]
    indices: torch.Tensor  # [N] the evaluated test images' dataset indices, ascending
    scores: torch.Tensor  # [N, K] each direction's presence in each of them (`image_scores`)


def image_scores(reads: torch.Tensor) -> torch.Tensor:
    """How present each direction is in each image [N, K]: its factor (pooled) or its largest factor over
    the positions of a feature map (a concept is present if it is somewhere)."""
    return reads if reads.ndim == 2 else reads.amax((2, 3))


def _probability(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits.float(), dim=1)[torch.arange(len(classes)), classes]


def _merge_top(
    best: tuple[torch.Tensor, torch.Tensor] | None, scores: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k per direction: scores [K, k], dataset indices [K, k]."""
    values = scores.T
    ids = indices[None, :].expand_as(values)
    if best is not None:
        values, ids = torch.cat([best[0], values], 1), torch.cat([best[1], ids], 1)
    top = values.topk(min(k, values.shape[1]), dim=1)
    return top.values, ids.gather(1, top.indices)


@torch.no_grad()
def evaluate_direction_pairs(
    classifier,
    pairs: DirectionPairs,
    dataset: Dataset,
    config: DirectionConfig,
    rt,
    batch_size: int = 64,
    workers: int = 0,
) -> Evaluation:
    """Every number of the report over up to `test_images` test images (seeded subset), in batches."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    chosen = torch.arange(len(dataset))
    if len(dataset) > config.test_images:
        chosen = torch.randperm(len(dataset), generator=generator)[: config.test_images].sort().values
    device = rt.device
    decoding, encoding = pairs.decoding.to(device), pairs.encoding.to(device)
    k = len(pairs)
    effect = torch.zeros(k, classifier.num_classes, dtype=torch.float64)
    flips = torch.zeros(k, dtype=torch.float64)
    drops = torch.zeros(k, dtype=torch.float64)
    faith = {t: {"ff": [], "random": [], "removed": []} for t in config.thresholds}
    correct, seen, best = 0, 0, None
    scores = []
    for images, labels in _loader(Subset(dataset, chosen.tolist()), batch_size, workers):
        index = chosen[seen : seen + len(images)]
        taps = classifier.forward_taps(images.to(device))
        a, logits = taps[pairs.layer].float(), taps["logits"].float()
        predicted = logits.argmax(1)
        p = _probability(logits, predicted)
        correct += int((predicted.cpu() == torch.as_tensor(labels)).sum())
        reads = read(a, decoding)
        present = image_scores(reads).cpu()
        scores.append(present)
        best = _merge_top(best, present, index, config.top_images)
        for j in range(k):
            amount = float(pairs.scale[j])
            changed = classifier.forward_from(pairs.layer, add(a, encoding[j], amount)).float()
            effect[j] += ((changed - logits) / amount).sum(0).double().cpu()
            only = torch.zeros(len(a), k, dtype=torch.bool, device=device)
            only[:, j] = True
            removed = classifier.forward_from(pairs.layer, remove(a, decoding, encoding, only)).float()
            flips[j] += float((removed.argmax(1) != predicted).sum())
            drops[j] += float((p - _probability(removed, predicted)).sum())
        _faithfulness_batch(classifier, pairs, a, reads, predicted, p, config.thresholds, generator, faith)
        seen += len(images)
    top_scores, top_indices = best
    return Evaluation(
        images=seen,
        accuracy=correct / max(1, seen),
        top_indices=top_indices,
        top_scores=top_scores,
        logit_effect=(effect / seen).float(),
        flip_rate=(flips / seen).float(),
        probability_drop=(drops / seen).float(),
        faithfulness=_faithfulness_summary(faith),
        indices=chosen[:seen],
        scores=torch.cat(scores),
    )


def direction_ground_truth(
    scores: torch.Tensor, labels: tuple[dict[str, torch.Tensor], dict[str, list[str]]] | None, threshold: float
) -> dict[str, Any] | None:
    """The concept models' ground-truth detection (metrics/ground_truth.py's `attribute_auc`, the one AUC) with
    each direction's per-image score [N, K] in place of a concept's pooled activation, so `evaluate` and
    `compare` read both alike ("concept" is then the direction's index), and `by_direction`: each direction's
    own best value. No render test: a direction edits f's activations, not an image (render and probe are
    null, as for a concept model with --render-samples 0). `labels`: the scored images' (`labelled`), None
    when the dataset records none (then None)."""
    from viscoin_cli.metrics.ground_truth import attribute_auc, best_targets

    if labels is None:
        return None
    attributes, values = labels
    result = attribute_auc(scores, attributes, values, threshold)
    return {**result, "render": None, "probe": None, "by_direction": best_targets(scores, attributes, values)}


def contributions(classifier, layer: str, activation: torch.Tensor, reads: torch.Tensor, encoding, classes):
    """Each direction's contribution [N, K] to the logit of each image's class: Σ_p s_{k,p} <e_k, ∂z_c/∂a_p>
    (exact for `pooled`, where it is s_k (W e_k)_c; first order through the later layers otherwise)."""
    with torch.enable_grad():
        a = activation.detach().requires_grad_(True)
        logits = classifier.forward_from(layer, a)
        (gradient,) = torch.autograd.grad(logits[torch.arange(len(a)), classes].sum(), a)
    along = read(gradient, encoding)  # <e_k, g_p>: read() is the same contraction
    return (reads * along).sum((2, 3)) if reads.ndim == 4 else reads * along


def _faithfulness_batch(classifier, pairs, a, reads, predicted, p, thresholds, generator, faith) -> None:
    """Remove each image's relevant directions (relevance > τ) and as many random orthonormal directions;
    `reads` are the batch's factors `read(a, decoding)`."""
    decoding, encoding = pairs.decoding.to(a.device), pairs.encoding.to(a.device)
    # like a concept's local relevance (paper §3.5): its contribution to the predicted logit, relative
    relevance = relative(contributions(classifier, pairs.layer, a, reads, encoding, predicted))
    randoms = random_orthonormal(len(a), a.shape[1], len(pairs), generator).to(a.device)
    for threshold in thresholds:
        mask = relevance > threshold
        edited = remove(a, decoding, encoding, mask)
        count = mask.sum(1)
        chosen = (torch.arange(len(pairs), device=a.device)[None, :] < count[:, None]).float()
        if a.ndim == 2:
            factors = torch.einsum("nd,nkd->nk", a, randoms) * chosen
            baseline = a - torch.einsum("nk,nkd->nd", factors, randoms)
        else:
            factors = torch.einsum("ndhw,nkd->nkhw", a, randoms) * chosen[:, :, None, None]
            baseline = a - torch.einsum("nkhw,nkd->ndhw", factors, randoms)
        faith[threshold]["ff"].append((p - _probability(classifier.forward_from(pairs.layer, edited), predicted)).cpu())
        faith[threshold]["random"].append(
            (p - _probability(classifier.forward_from(pairs.layer, baseline), predicted)).cpu()
        )
        faith[threshold]["removed"].append(count.float().cpu())


def _faithfulness_summary(faith) -> dict[str, dict[str, float]]:
    """The faithfulness metric's own summary (metrics/faithfulness.py): median and mean, beside random."""
    return summarize(faith, "removed", "mean_directions_removed")


# ---------------------------------------------------------------------------------------------------
# The checkpoint, the grid and the JSON document


def save_direction_pairs(path: Path, pairs: DirectionPairs, config: DirectionConfig, classifier_path: Path, dataset):
    """A `directions` checkpoint (method "classifier") recording the classifier as its parent."""
    from viscoin_cli.io.checkpoint import parent_record, save_checkpoint

    return save_checkpoint(
        path,
        pairs.tensors(),
        kind="directions",
        config={"method": "classifier", "layer": pairs.layer, "directions": len(pairs), "dim": pairs.dim},
        dataset=dataset,
        parents={"classifier": parent_record(classifier_path)},
        extra={
            "options": config.to_json(),
            "candidates": pairs.candidates,
            "ura_random": pairs.ura_random,
            "fit": pairs.facts,
        },
    )


def load_direction_pairs(path: str | Path) -> tuple[DirectionPairs, Any]:
    """Direction pairs from a `directions` checkpoint of method "classifier" (one-line errors otherwise)."""
    from viscoin_cli.io.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path, kind="directions")
    if meta.config.get("method") != "classifier" or meta.config.get("layer") not in LAYERS:
        raise UserError(f"{meta.path}: not a classifier directions checkpoint (method {meta.config.get('method')!r})")
    wanted = ("decoding", "encoding", "scale", "ura")
    if set(tensors) != set(wanted) or tensors["decoding"].shape != tensors["encoding"].shape:
        raise UserError(f"{meta.path}: corrupt directions checkpoint (expected tensors {', '.join(wanted)})")
    extra = meta.extra
    pairs = DirectionPairs(
        meta.config["layer"],
        tensors["decoding"].float(),
        tensors["encoding"].float(),
        tensors["scale"].float(),
        tensors["ura"].float(),
        float(extra.get("ura_random", 0.0)),
        list(extra.get("candidates", range(len(tensors["decoding"])))),
        dict(extra.get("fit", {})),
    )
    return pairs, meta


def direction_rows(pairs: DirectionPairs, evaluation: Evaluation, class_names: Sequence[str]) -> list[dict]:
    """The per-direction part of directions.json."""
    rows = []
    cos = (unit(pairs.decoding) * unit(pairs.encoding)).sum(1)
    for j in range(len(pairs)):
        effect = evaluation.logit_effect[j]
        order = effect.argsort(descending=True).tolist()
        rows.append(
            {
                "direction": j,
                "candidate": pairs.candidates[j],
                "ura_score": float(pairs.ura[j]),
                "ura_ratio": float(pairs.ura[j]) / max(pairs.ura_random, _EPS),
                "decoding_encoding_cosine": float(cos[j]),
                "scale": float(pairs.scale[j]),
                "logit_effect": [round(float(v), 6) for v in effect],
                "promotes": [{"class": c, "name": class_names[c], "logit": float(effect[c])} for c in order[:2]],
                "demotes": [{"class": c, "name": class_names[c], "logit": float(effect[c])} for c in order[-1:]],
                "top_images": evaluation.top_indices[j].tolist(),
                "top_scores": [round(float(v), 6) for v in evaluation.top_scores[j]],
                "counterfactual": {
                    "flip_rate": float(evaluation.flip_rate[j]),
                    "mean_probability_drop": float(evaluation.probability_drop[j]),
                },
            }
        )
    return rows


def save_top_grid(path: Path, dataset, rows: list[dict], resolution: int) -> Path:
    """One row per direction: its most aligned test images, labelled with the classes it promotes."""
    from viscoin_cli.io.images import save_grid, upscale_factor

    columns = max(len(row["top_images"]) for row in rows)
    tiles, labels = [], []
    for row in rows:
        images = [dataset[i][0] for i in row["top_images"]]
        blank = torch.ones_like(images[0]) if images else torch.ones(3, resolution, resolution)
        tiles += images + [blank] * (columns - len(images))
        promotes = "/".join(p["name"] for p in row["promotes"])
        labels.append(f"d{row['direction']}\n+{promotes}\nURA {row['ura_ratio']:.1f}x")
    return save_grid(
        torch.stack(tiles),
        path,
        columns=columns,
        scale=upscale_factor(resolution),
        title="most aligned test images per direction (row: direction, classes it promotes, URA vs random)",
        row_labels=labels,
    )


OUTPUT_FILES = {"checkpoint": "directions.safetensors", "grid": "directions.png", "json": "directions.json"}


def write_outputs(
    out: Path,
    pairs: DirectionPairs,
    evaluation: Evaluation,
    config: DirectionConfig,
    classifier_path: Path,
    test_set,
    facts: dict[str, Any],
    ground_truth: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint, the grid and directions.json in `out`; returns the JSON document (ground_truth: the
    `direction_ground_truth` result, null with a reason when the dataset has no attribute labels)."""
    import json

    from viscoin_cli.io.checkpoint import atomic_write

    class_names = list(facts["class_names"])
    rows = direction_rows(pairs, evaluation, class_names)
    files = {name: out / file for name, file in OUTPUT_FILES.items()}
    save_direction_pairs(files["checkpoint"], pairs, config, classifier_path, facts)
    save_top_grid(files["grid"], test_set, rows, int(facts["resolution"]))
    no_labels = f"the {test_set.name} data records no attribute labels"
    document = {
        "method": "classifier",
        "classifier": str(classifier_path),
        "dataset": test_set.name,
        "layer": pairs.layer,
        "dim": pairs.dim,
        "directions": len(pairs),
        "fit": {"split": "train", **pairs.facts},
        "ura": {"random_score": pairs.ura_random, "min_ratio": config.ura_min_ratio},
        "test": {"split": "test", "images": evaluation.images, "accuracy": evaluation.accuracy},
        "faithfulness": evaluation.faithfulness,
        "ground_truth": ground_truth,
        **({} if ground_truth is not None else {"ground_truth_reason": no_labels}),
        "per_direction": rows,
        "files": {name: str(path) for name, path in files.items()},
    }
    text = json.dumps(document, indent=2, allow_nan=False)
    atomic_write(files["json"], lambda tmp: Path(tmp).write_text(text + "\n"))
    return document
