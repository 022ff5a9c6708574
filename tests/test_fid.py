"""FID: the Fréchet distance itself, and both feature extractors."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
from pytorch_fid import inception

from viscoin_cli.errors import UserError
from viscoin_cli.metrics.fid import (
    INCEPTION_FILE,
    ClassifierFeatures,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
)
from viscoin_cli.nets.classifier import Classifier


def _reference(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 8)), rng.normal(1.0, 2.0, size=(500, 8))
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    assert frechet_distance(*stats_a, *stats_b) == pytest.approx(_reference(*stats_a, *stats_b), rel=1e-6)


def test_one_dimensional_gaussians():
    # FD of N(m1, s1²) and N(m2, s2²) is (m1 − m2)² + (s1 − s2)².
    value = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert value == pytest.approx(4.0 + 1.0)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(1)
    stats = feature_statistics(rng.normal(size=(50, 5)))
    assert abs(frechet_distance(*stats, *stats)) < 1e-8


def test_rank_deficient_covariances_stay_real_and_non_negative():
    rng = np.random.default_rng(2)
    a, b = feature_statistics(rng.normal(size=(4, 64))), feature_statistics(rng.normal(size=(4, 64)))
    value = frechet_distance(*a, *b)
    assert np.isfinite(value) and value >= 0


def test_needs_two_images():
    with pytest.raises(UserError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))


def test_classifier_features_and_fid_of_a_set_with_itself():
    torch.manual_seed(0)
    extractor = ClassifierFeatures(Classifier("resnet18", 10, width=4, stem="small"), label="classifier (test)")
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    assert extractor.features([images]).shape == (8, 32)
    assert abs(fid(extractor, [images], [images])) < 1e-6
    assert fid(extractor, [images], [-images]) > 0


def test_inception_weights_missing_say_which_file_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match=INCEPTION_FILE):
        InceptionFeatures()


def test_inception_features_from_a_local_file_without_download(tmp_path, monkeypatch):
    # A randomly initialised FID Inception, saved under the official name, stands in for the real weights.
    with (
        mock.patch.object(inception, "load_state_dict_from_url", lambda *_args, **_kwargs: {}),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda *_args, **_kwargs: None),
    ):
        random_net = inception.fid_inception_v3()
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(random_net.state_dict(), hub / INCEPTION_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    extractor = InceptionFeatures()
    assert extractor.features([torch.rand(2, 3, 32, 32) * 2 - 1]).shape == (2, 2048)
    assert extractor.label.startswith("inception")


def test_wrong_weights_file_for_inception(tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(UserError, match="not the FID Inception weights"):
        InceptionFeatures(tmp_path / "w.pth")
