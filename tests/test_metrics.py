"""Relevance, faithfulness and consistency against hand-built models whose answers are known."""

from __future__ import annotations

import pytest
import torch

from viscoin_cli.interpret.encode import Encoded
from viscoin_cli.interpret.relevance import global_relevance, local_relevance
from viscoin_cli.metrics.consistency import consistency
from viscoin_cli.metrics.faithfulness import concepts_above, faithfulness, random_like
from viscoin_cli.nets.concepts import InterpretableHead
from viscoin_cli.nets.viscoin import VisCoINOutput

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

    def render(self, concept_maps, _support):
        return concept_maps.reshape(len(concept_maps), 1, -1, 3)

    def encode(self, images):
        maps = images.reshape(len(images), -1, 3, 3)
        pooled = self.theta.pool(maps)
        logits = self.theta.linear(pooled)
        return VisCoINOutput(maps, pooled, logits, torch.zeros(len(images), 1), logits)

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
