"""Relevance, faithfulness and consistency against hand-built models whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viscoin_cli.interpret.encode import Encoded
from viscoin_cli.interpret.relevance import global_relevance, local_relevance
from viscoin_cli.metrics.consistency import SVM_C, consistency, fit_svm, svm_search
from viscoin_cli.metrics.faithfulness import concepts_above, faithfulness, median, random_like
from viscoin_cli.nets.concept_model import ConceptOutput
from viscoin_cli.nets.concepts import InterpretableHead

# --- relevance -----------------------------------------------------------------------------------------


def test_local_relevance_by_hand():
    pooled = torch.tensor([[2.0, 1.0], [1.0, 4.0]])
    weight = torch.tensor([[1.0, -3.0], [0.5, 0.5]])  # [C=2, K=2]
    predicted = torch.tensor([0, 1])
    # sample 0, class 0: contributions (2, -3) -> / 3;  sample 1, class 1: (0.5, 2) -> / 2
    expected = torch.tensor([[2 / 3, -1.0], [0.25, 1.0]])
    assert torch.allclose(local_relevance(pooled, weight, predicted), expected)


def test_global_relevance_averages_over_samples_predicted_as_the_class():
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    predicted = torch.tensor([0, 0, 1])
    assert torch.allclose(global_relevance(local, predicted, 3), torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]]))


def test_relevance_of_an_all_zero_sample_is_zero():
    assert local_relevance(torch.zeros(1, 3), torch.ones(2, 3), torch.tensor([1])).abs().sum() == 0


# --- a model whose concepts are its images -------------------------------------------------------------


class IdentityModel:
    """K concept maps rendered as a [N, 1, K*3, 3] 'image' and read back exactly: g sees Φ itself."""

    def __init__(self, weight: torch.Tensor):
        self.theta = InterpretableHead(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.theta.linear.weight.copy_(weight)
            self.theta.linear.bias.zero_()

    def head_weight(self):
        return self.theta.linear.weight

    def render(self, concept_maps, _support):
        return concept_maps.reshape(len(concept_maps), 1, -1, 3)

    def encode(self, images):
        maps = images.reshape(len(images), -1, 3, 3)
        pooled = self.theta.pool(maps)
        logits = self.theta.linear(pooled)
        return ConceptOutput(maps, pooled, logits, torch.zeros(len(images), 1), logits)

    def f(self, images):
        return self.encode(images).logits


def _encoded(model, maps, labels=None):
    out = model.encode(model.render(maps, None))
    labels = out.logits.argmax(1) if labels is None else labels
    return Encoded(
        out.concept_maps, torch.zeros(len(maps), maps.shape[1] * 9), out.pooled, out.logits, out.f_logits, labels
    )


def test_thresholding_picks_the_relevant_concepts():
    relevance = torch.tensor([[1.0, 0.15, 0.3, -0.5]])
    assert concepts_above(relevance, 0.1).tolist() == [[True, True, True, False]]
    assert concepts_above(relevance, 0.2).tolist() == [[True, False, True, False]]
    assert concepts_above(relevance, 0.4).tolist() == [[True, False, False, False]]


def test_random_baseline_zeroes_as_many_concepts():
    mask = torch.tensor([[True, False, False, False], [True, True, True, False]])
    drawn = random_like(mask, torch.Generator().manual_seed(0))
    assert drawn.sum(1).tolist() == [1, 3]


def test_faithfulness_when_one_concept_carries_the_class():
    # Class 1 rests on concept 0 (weight 5); concepts 1-3 add little. Class 0 has no evidence.
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 0.1, 0.1, 0.1]])
    model = IdentityModel(weight)
    encoded = _encoded(model, torch.ones(64, 4, 3, 3))
    result = faithfulness(model, encoded, thresholds=(0.1, 0.5), seed=0)
    expected = torch.sigmoid(torch.tensor(5.3)) - torch.sigmoid(torch.tensor(0.3))  # only concept 0 is zeroed
    assert result["0.1"]["median"] == pytest.approx(expected.item(), abs=1e-5)
    assert result["0.1"]["mean_concepts_zeroed"] == 1.0
    assert result["0.1"]["random_median"] < 0.05  # a random concept is concept 0 only 1 time in 4
    assert result["0.1"]["random_mean"] < result["0.1"]["mean"]
    assert result["0.5"]["samples"] == 64


def test_faithfulness_with_f_as_the_predictor():
    weight = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    model = IdentityModel(weight)
    result = faithfulness(model, _encoded(model, torch.ones(8, 2, 3, 3)), thresholds=(0.2,), predictor="f")
    assert result["0.2"]["median"] > 0.4


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert median(torch.tensor([4.0, 1.0, 3.0, 2.0])) == 2.5  # torch.median says 2
    assert median(torch.tensor([3.0, 1.0, 2.0])) == 2.0
    assert median(torch.tensor([7.0])) == 7.0


def test_faithfulness_median_over_an_even_count_of_samples():
    # Concept 0 alone carries class 1 and is zeroed: FF = sigmoid(a) - sigmoid(0) for activations a = 1..4.
    model = IdentityModel(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    maps = torch.zeros(4, 2, 3, 3)
    maps[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None]
    result = faithfulness(model, _encoded(model, maps), thresholds=(0.1,))["0.1"]
    ff = torch.sigmoid(torch.tensor([2.0, 3.0])) - 0.5  # the middle two
    assert result["samples"] == 4 and result["mean_concepts_zeroed"] == 1.0
    assert result["median"] == pytest.approx(ff.mean().item(), abs=1e-6)


# --- consistency ---------------------------------------------------------------------------------------


class PatchModel:
    """Renders a noisy 8x8 image from the support vector; concept `painter` (if any) brightens a patch.
    f's "layer2" is the image itself, so its pooled features see the patch."""

    def __init__(self, painter: int | None):
        self.painter = painter
        self.f = self

    def render(self, concept_maps, support):
        images = support.reshape(-1, 3, 8, 8).clone()
        if self.painter is not None:
            images[:, 0, :4, :4] += concept_maps[:, self.painter].mean(dim=(1, 2))[:, None, None]
        return images

    def forward_taps(self, images):
        return {"layer2": images}


def _patch_data(n: int, seed: int) -> Encoded:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, 2, 3, 3, generator=generator) + 0.5
    support = torch.randn(n, 192, generator=generator)  # the fake generator's "noise image" source
    pooled = maps.amax(dim=(2, 3))
    logits = torch.zeros(n, 2)
    logits[torch.arange(n), torch.arange(n) % 2] = 1.0
    return Encoded(maps, support, pooled, logits, logits, logits.argmax(1))


def test_consistency_is_high_when_the_concept_paints_a_patch():
    train, test = _patch_data(120, 0), _patch_data(120, 1)
    relevance = torch.ones(2, 2)
    result = consistency(PatchModel(painter=0), train, test, relevance, concepts=[0], lam=2.0, samples=50)
    assert result["per_concept"]["0"] > 0.95 and result["mean"] == result["per_concept"]["0"]


def test_consistency_is_chance_when_the_generator_ignores_the_concept():
    train, test = _patch_data(120, 0), _patch_data(120, 1)
    result = consistency(PatchModel(painter=None), train, test, torch.ones(2, 2), concepts=[0], samples=50)
    assert 0.3 <= result["per_concept"]["0"] <= 0.7


def test_consistency_reports_mean_and_std_over_concepts():
    train, test = _patch_data(80, 0), _patch_data(80, 1)
    result = consistency(PatchModel(painter=0), train, test, torch.ones(2, 2), lam=2.0, samples=30)
    assert set(result["per_concept"]) == {"0", "1"} and result["std"] > 0.1  # concept 1 paints nothing


class OffsetPatchModel(PatchModel):
    """PatchModel whose patch channel sits on a large constant (1e4): the patch is as separable as before
    once each feature is centred and scaled, but a plain linear SVM (C <= 10, its intercept regularised
    like a weight) cannot afford the intercept that would cancel the offset."""

    def render(self, concept_maps, support):
        return super().render(concept_maps, support) + torch.tensor([1e4, 0.0, 0.0])[:, None, None]


def test_default_svm_is_a_plain_linear_svm_with_c_by_5_fold_cv():
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    search = svm_search(seed=0)
    assert isinstance(search.estimator, LinearSVC) and search.param_grid == {"C": list(SVM_C)}
    assert search.cv.n_splits == 5 and search.cv.shuffle
    standardized = svm_search(seed=0, standardize=True).estimator
    assert isinstance(standardized, Pipeline) and [name for name, _ in standardized.steps] == [
        "standardscaler",
        "linearsvc",
    ]


def test_default_svm_matches_a_hand_fit_linear_svc():
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    generator = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 40)
    x = generator.normal(size=(80, 6)) * [1, 10, 0.1, 1, 1, 100] + y[:, None] * [0.5, 0, 0.3, 0, 0, 0]
    test_x = generator.normal(size=(30, 6))
    by_hand = GridSearchCV(
        LinearSVC(max_iter=5000, random_state=4),
        {"C": [0.001, 0.01, 0.1, 1.0, 10.0]},
        cv=StratifiedKFold(5, shuffle=True, random_state=4),
    ).fit(x, y)
    ours = fit_svm(x, y, seed=4)
    assert ours.best_params_ == by_hand.best_params_
    assert np.array_equal(ours.best_estimator_.coef_, by_hand.best_estimator_.coef_)
    assert np.array_equal(ours.decision_function(test_x), by_hand.decision_function(test_x))


def test_consistency_does_not_standardise_unless_asked():
    train, test = _patch_data(120, 0), _patch_data(120, 1)
    model, relevance = OffsetPatchModel(painter=0), torch.ones(2, 2)
    plain = consistency(model, train, test, relevance, concepts=[0], lam=2.0, samples=50)
    scaled = consistency(model, train, test, relevance, concepts=[0], lam=2.0, samples=50, standardize=True)
    assert plain["per_concept"]["0"] <= 0.6  # the paper's plain SVM, on features far from the origin
    assert scaled["per_concept"]["0"] > 0.95
