"""Fréchet distance between the feature statistics of two image sets (FID, Heusel et al. 2017).

Two feature extractors, and every result says which one made it:
- "inception": the standard FID Inception network (pytorch-fid's port of the TensorFlow graph, the weights
  behind published numbers), 2048-d pool features. Its weights file is local: `pt_inception-2015-12-05-
  6726825d.pth` in the torch hub cache or a path; nothing is downloaded.
- "classifier": the pooled last-layer features of one of our classifiers. Works offline on any data, but
  numbers are comparable only between runs that use the same classifier file (its sha256 is in the label).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from viscoin_cli.errors import UserError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖mu1 − mu2‖² + tr(S1) + tr(S2) − 2·tr((S1^½ S2 S1^½)^½).

    tr((S1 S2)^½) is computed from the symmetric PSD matrix S1^½ S2 S1^½ with two symmetric eigen-
    decompositions, which stays real and stable where a general `sqrtm(S1 @ S2)` goes complex or
    singular (few samples, rank-deficient covariances). Tiny negative eigenvalues are round-off: clipped.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("feature statistics of different dimensions")
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        return float("nan")  # features of a broken network (inf/NaN weights): no distance, and the gates fail it
    eigvals1, eigvecs1 = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt_sigma1 = (eigvecs1 * np.sqrt(np.clip(eigvals1, 0, None))) @ eigvecs1.T
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of [N, D] features (N >= 2)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise UserError(f"FID needs at least 2 images (got {len(features)})")
    return features.mean(0), np.cov(features, rowvar=False)


class FeatureExtractor(nn.Module):
    """[N, 3, H, W] images in [-1, 1] -> [N, D] features; `label` names the extractor in every output."""

    label: str

    @torch.no_grad()
    def features(self, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> np.ndarray:
        self.eval().to(device)
        return np.concatenate([self(images.to(device)).float().cpu().numpy() for images in batches])


class InceptionFeatures(FeatureExtractor):
    """The standard FID Inception-v3 pool3 features (2048-d)."""

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        from pytorch_fid import inception

        path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        if not path.is_file():
            raise UserError(
                f"FID Inception weights not found at {path}: put pytorch-fid's {INCEPTION_FILE} there "
                f"(or pass its path), or use the classifier feature extractor"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"{path}: not a readable weights file ({type(err).__name__})") from None
        # pytorch-fid fetches its weights by URL; hand it the local file instead so nothing is downloaded.
        with mock.patch.object(inception, "load_state_dict_from_url", lambda *_args, **_kwargs: state):
            try:
                self.net = inception.InceptionV3([3], resize_input=True, normalize_input=False)
            except RuntimeError as err:
                raise UserError(f"{path}: not the FID Inception weights ({str(err).splitlines()[0]})") from None
        self.label = "inception (pytorch-fid pool3, 2048-d)"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0].flatten(1)  # normalize_input=False: the net takes [-1, 1] as we do


class ClassifierFeatures(FeatureExtractor):
    """Pooled last-layer features of a classifier of ours (offline fallback for FID)."""

    def __init__(self, classifier: nn.Module, label: str):
        super().__init__()
        self.classifier = classifier
        self.label = label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward_taps(images)["pooled"]


def fid(extractor: FeatureExtractor, real: Iterable[torch.Tensor], fake: Iterable[torch.Tensor],
        device: torch.device | str = "cpu") -> float:  # fmt: skip
    """FID between two image sets (iterables of [-1, 1] batches) under one extractor."""
    mu1, sigma1 = feature_statistics(extractor.features(real, device))
    mu2, sigma2 = feature_statistics(extractor.features(fake, device))
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def classifier_extractor(path: str | os.PathLike, device: torch.device | str = "cpu") -> ClassifierFeatures:
    """Pooled features of the classifier in checkpoint `path`, labelled with its sha256 prefix."""
    from viscoin_cli.io.checkpoint import sha256_file
    from viscoin_cli.nets.classifier import load_classifier

    classifier, meta = load_classifier(path, device)
    label = (
        f"classifier {meta.path.name} {sha256_file(meta.path)[:12]} (pooled features, {classifier.fc.in_features}-d)"
    )
    return ClassifierFeatures(classifier, label)


@torch.no_grad()
def generator_fid(
    G: nn.Module,
    extractor: FeatureExtractor,
    real_stats: tuple[np.ndarray, np.ndarray],
    count: int,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> float:
    """FID of `count` samples of G (random noise, no truncation, as NVIDIA's metrics) against real stats.

    Deterministic for a seed: z and the per-layer noise come from it, the caller's RNG state is untouched.
    """
    z = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed))
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        fakes = (G(batch.to(device), None, noise_mode="random").clamp(-1, 1) for batch in z.split(batch_size))
        mu, sigma = feature_statistics(extractor.features(fakes, device))
    return frechet_distance(*real_stats, mu, sigma)
