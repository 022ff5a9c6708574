"""FLAEM: each loss term by hand, decoder sizes, the concept-model interface, checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_classifier

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import parent_record, save_checkpoint
from viscoin_cli.nets.classifier import Classifier, load_classifier
from viscoin_cli.nets.flaem import FLAEM, ConceptDecoder, load_flaem, seed_size
from viscoin_cli.training.flaem_losses import (
    FlaemWeights,
    fidelity_loss,
    flaem_loss,
    reconstruction_loss,
    sparsity_loss,
)

# ---------------------------------------------------------------------------------------------------
# Loss terms


def test_fidelity_compares_f_logits_with_g_log_probabilities():
    g_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)  # log softmax = [-ln 2, -ln 2]
    f_logits = torch.tensor([[1.0, -1.0]], requires_grad=True)
    # ((1 + ln2)² + (−1 + ln2)²) / 2 = 1 + ln2²
    expected = 1 + math.log(2) ** 2
    value = fidelity_loss(g_logits, f_logits)
    assert value.item() == pytest.approx(expected)
    value.backward()
    assert g_logits.grad is not None and f_logits.grad is None  # f is the teacher


def test_reconstruction_is_the_mean_squared_error():
    images = torch.tensor([[[[0.0, 0.0], [1.0, -1.0]]]])
    recon = torch.tensor([[[[0.5, -1.0], [1.0, 0.0]]]])
    # (0.25 + 1 + 0 + 1) / 4
    assert reconstruction_loss(recon, images).item() == pytest.approx(0.5625)
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(recon[..., :1], images)


def test_sparsity_sums_over_batch_and_concepts():
    concepts = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0]])
    assert sparsity_loss(concepts).item() == pytest.approx(3.5)


def test_total_uses_the_official_weights():
    images = torch.zeros(1, 1, 1, 2)
    recon = torch.tensor([[[[0.5, -1.0]]]])  # rec = (0.25 + 1) / 2 = 0.625
    concepts = torch.tensor([[2.0, 0.0, 1.0]])  # sparsity = 3
    g_logits, f_logits = torch.zeros(1, 2), torch.tensor([[1.0, -1.0]])  # fidelity = 1 + ln2²
    total, terms = flaem_loss(images=images, recon=recon, concepts=concepts, g_logits=g_logits, f_logits=f_logits)
    fidelity = 1 + math.log(2) ** 2
    assert terms["fidelity"].item() == pytest.approx(fidelity)
    assert terms["reconstruction"].item() == pytest.approx(0.625)
    assert terms["sparsity"].item() == pytest.approx(3.0)
    assert total.item() == pytest.approx(1e-4 * fidelity + 1e-4 * (0.625 + 1e-4 * 3.0))
    assert FlaemWeights() == FlaemWeights(fidelity=1e-4, concept=1e-4, sparsity=1e-4)
    weights = FlaemWeights(fidelity=1.0, concept=2.0, sparsity=0.5)
    total, _ = flaem_loss(
        images=images, recon=recon, concepts=concepts, g_logits=g_logits, f_logits=f_logits, weights=weights
    )
    assert total.item() == pytest.approx(fidelity + 2.0 * (0.625 + 0.5 * 3.0))


# ---------------------------------------------------------------------------------------------------
# Decoder


@pytest.mark.parametrize(("resolution", "seed"), [(16, 1), (32, 5), (256, 61)])
@torch.no_grad()
def test_decoder_makes_exactly_r_pixels_in_range(resolution: int, seed: int):
    assert seed_size(resolution) == seed  # 5 at 32 px, the official CIFAR-10 size
    decoder = ConceptDecoder(num_concepts=4, resolution=resolution)
    images = decoder(torch.rand(2, 4) * 10)
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1


@pytest.mark.parametrize("resolution", [8, 30, 12.0, True])
def test_decoder_rejects_resolutions_it_cannot_reach(resolution):
    with pytest.raises(UserError, match="FLAEM"):
        ConceptDecoder(num_concepts=4, resolution=resolution)


# ---------------------------------------------------------------------------------------------------
# The concept-model interface


def _tiny_flaem(num_concepts: int = 5) -> FLAEM:
    torch.manual_seed(0)
    f = Classifier("resnet18", 10, width=4, stem="small")
    return FLAEM(f, {"num_concepts": num_concepts, "resolution": 16}).eval()


@torch.no_grad()
def test_encode_and_render_shapes():
    model = _tiny_flaem()
    out = model(torch.rand(3, 3, 16, 16) * 2 - 1)
    assert out.concept_maps.shape == (3, 5, 1, 1) and out.concept_maps.min() >= 0
    assert out.pooled.shape == (3, 5) and out.logits.shape == (3, 10) and out.f_logits.shape == (3, 10)
    assert out.support.shape == (3, 0)
    assert out.recon.shape == (3, 3, 16, 16)
    assert model.head_weight().shape == (10, 5)
    assert torch.equal(out.logits, out.pooled @ model.head_weight().T + model.head.bias)
    assert set(model.trained_parts()) == {"encoder", "head", "decoder"}
    assert model.config == {"num_concepts": 5, "resolution": 16, "decoder_channels": [16, 8]}
    with pytest.raises(ValueError, match="support"):
        model.render(out.concept_maps, torch.zeros(3, 2))


@torch.no_grad()
def test_scaling_a_concept_scales_what_head_and_decoder_see():
    model = _tiny_flaem()
    out = model.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    concept = int(out.pooled[0].argmax())
    scaled = out.concept_maps.clone()
    scaled[:, concept] *= 3
    pooled = model.pool(scaled)
    assert torch.allclose(pooled[:, concept], 3 * out.pooled[:, concept])
    others = [k for k in range(5) if k != concept]
    assert torch.equal(pooled[:, others], out.pooled[:, others])
    zeroed = out.concept_maps.clone()
    zeroed[:, concept] = 0
    assert torch.all(model.pool(zeroed)[:, concept] == 0)
    assert not torch.equal(model.render(scaled, out.support), model.render(out.concept_maps, out.support))


def test_only_the_trained_parts_get_gradients():
    model = _tiny_flaem().train()
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    total, _ = flaem_loss(
        images=torch.zeros(2, 3, 16, 16),
        recon=out.recon,
        concepts=out.pooled,
        g_logits=out.logits,
        f_logits=out.f_logits,
    )
    total.backward()
    assert not model.f.training and all(p.grad is None for p in model.f.parameters())
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_unknown_config_key_is_refused():
    f = Classifier("resnet18", 10, width=4, stem="small")
    with pytest.raises(UserError, match="unknown FLAEM config key 'hidden'"):
        FLAEM(f, {"num_concepts": 4, "resolution": 16, "hidden": 8})
    with pytest.raises(UserError, match="decoder_channels"):
        FLAEM(f, {"num_concepts": 4, "resolution": 16, "decoder_channels": [16]})


# ---------------------------------------------------------------------------------------------------
# Checkpoint


def _save_flaem(folder: Path) -> tuple[Path, FLAEM]:
    f_path = save_tiny_classifier(folder / "f.safetensors")
    f, _ = load_classifier(f_path)
    torch.manual_seed(1)
    model = FLAEM(f, {"num_concepts": 6, "resolution": 16, "decoder_channels": [4, 3]}).eval()
    path = save_checkpoint(
        folder / "flaem.safetensors",
        model.trained_parts().state_dict(),
        kind="flaem",
        config=model.config,
        parents={"classifier": parent_record(f_path)},
    )
    return path, model


@torch.no_grad()
def test_checkpoint_round_trip_reproduces_the_model(tmp_path: Path):
    path, model = _save_flaem(tmp_path)
    loaded, meta = load_flaem(path)
    assert meta.kind == "flaem" and loaded.config == model.config and not loaded.training
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    expected, got = model(images), loaded(images)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.f_logits, expected.f_logits)
    assert torch.equal(got.recon, expected.recon)


def test_another_classifier_is_refused(tmp_path: Path):
    path, _ = _save_flaem(tmp_path)
    other = save_tiny_classifier(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(UserError, match="sha256 differs"):
        load_flaem(path, classifier=other)
