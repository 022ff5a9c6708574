"""Ψ, Θ, Ω: shapes for real and digits configurations, value ranges, routing, orthogonality loss."""

from __future__ import annotations

import pytest
import torch

from viscoin_cli.errors import UserError
from viscoin_cli.nets.classifier import Classifier
from viscoin_cli.nets.concepts import (
    ConceptExtractor,
    ConceptTranslator,
    InterpretableHead,
    default_support_ws,
    orthogonality_loss,
    resolve_support_ws,
)


def _modules(f: Classifier, num_concepts: int, hidden: int, num_ws: int, w_dim: int):
    psi = ConceptExtractor(f.tap_channels(), f.tap_strides(), num_concepts, hidden)
    theta = InterpretableHead(num_concepts, f.num_classes)
    omega = ConceptTranslator(num_concepts, num_ws, w_dim, torch.randn(w_dim), default_support_ws(num_ws))
    return psi, theta, omega


@torch.no_grad()
def test_resnet50_with_a_256px_generator():
    f = Classifier("resnet50", num_classes=200).eval()
    psi, theta, omega = _modules(f, num_concepts=256, hidden=512, num_ws=14, w_dim=512)
    concept_maps, support = psi(f.forward_taps(torch.rand(1, 3, 256, 256) * 2 - 1))
    assert concept_maps.shape == (1, 256, 3, 3) and concept_maps.min() >= 0
    assert support.shape == (1, 256 * 9)
    assert theta(concept_maps).shape == (1, 200)
    assert omega(concept_maps, support).shape == (1, 14, 512)


@torch.no_grad()
def test_digits_configuration():
    f = Classifier("resnet18", num_classes=10, width=16, stem="small").eval()
    psi, theta, omega = _modules(f, num_concepts=64, hidden=64, num_ws=8, w_dim=128)
    concept_maps, support = psi(f.forward_taps(torch.rand(4, 3, 32, 32) * 2 - 1))
    assert concept_maps.shape == (4, 64, 3, 3) and concept_maps.min() >= 0
    assert theta(concept_maps).shape == (4, 10)
    assert omega(concept_maps, support).shape == (4, 8, 128)


def test_head_max_pools_each_concept_map():
    head = InterpretableHead(num_concepts=2, num_classes=2)
    maps = torch.zeros(1, 2, 3, 3)
    maps[0, 0, 1, 2], maps[0, 1, 0, 0] = 5.0, 2.0
    assert head.pool(maps).tolist() == [[5.0, 2.0]]
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        head.linear.bias.zero_()
    assert head(maps).tolist() == [[5.0, 6.0]]


def test_translator_starts_near_w_avg_and_routes_support():
    w_avg = torch.randn(16)
    omega = ConceptTranslator(num_concepts=4, num_ws=8, w_dim=16, w_avg=w_avg, support_ws=default_support_ws(8))
    maps, support = torch.rand(2, 4, 3, 3), torch.rand(2, 36)
    ws = omega(maps, support)
    assert (ws - w_avg).abs().max() < 0.5 * w_avg.abs().max()
    changed = omega(maps, support + 1.0) - ws
    moved = changed.abs().amax(dim=(0, 2)) > 0
    assert moved.tolist() == [True, True, True, False, False, False, True, True]  # γ feeds 0, 1, 2, 6, 7


def test_translator_checks_support_indices():
    with pytest.raises(UserError, match=r"expected some of 0\.\.7"):
        ConceptTranslator(4, 8, 16, torch.zeros(16), support_ws=(0, 9))


def test_support_indices_count_from_the_end_when_negative():
    assert resolve_support_ws((-1, -2, 0, 0), 8) == (0, 6, 7)
    assert default_support_ws(14) == (0, 1, 2, 12, 13)


def test_the_concepts_keep_at_least_one_w_vector():
    with pytest.raises(UserError, match=r"at least one W\+ vector"):
        resolve_support_ws(range(6), 6)


def test_too_small_a_generator():
    with pytest.raises(UserError, match="too small"):
        default_support_ws(4)


def test_orthogonality_loss_is_zero_for_an_orthonormal_kernel():
    conv = torch.nn.Conv2d(8, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(
            torch.linalg.qr(torch.randn(8, 4))[0].t().reshape(4, 8, 1, 1) * 3.0
        )  # scale is normalised away
    assert orthogonality_loss(conv).item() == pytest.approx(0.0, abs=1e-10)


def test_orthogonality_loss_by_hand():
    conv = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 2, 1, 1))
    # unit columns of W = [[1, 1], [0, 1]]: (1, 0) and (1, 1)/√2; off-diagonal cos = 1/√2, twice: 2 · 1/2 = 1
    assert orthogonality_loss(conv).item() == pytest.approx(1.0, abs=1e-6)
