"""FLINT baseline: each loss term against numbers worked out by hand, the decoder's sizes, the model's
interface (shapes, pooling that λ-edits rely on), and a checkpoint round trip that checks f's hash."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from conftest import save_tiny_classifier

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import parent_record, save_checkpoint
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.concept_model import load_concept_model
from viscoin_cli.nets.flint import FLINT, FlintDecoder, load_flint
from viscoin_cli.training.flint_losses import FlintWeights, flint_loss

LN3 = math.log(3.0)
K, HIDDEN, RES = 4, 8, 16


def _loss(**overrides):
    """flint_loss on a hand-sized batch of two samples, two classes, two attributes, 1x2x2 images."""
    inputs = dict(
        logits=torch.tensor([[0.0, LN3], [0.0, 0.0]]),  # softmax [1/4, 3/4] and [1/2, 1/2]
        f_logits=torch.zeros(2, 2),  # f's probabilities: [1/2, 1/2] for both
        images=torch.zeros(2, 1, 2, 2),
        recon=torch.tensor([[[[1.0, 0.0], [0.0, -0.5]]], [[[0.0, 0.0], [2.0, 0.0]]]]),
        pooled=torch.tensor([[0.0, LN3], [0.0, 0.0]]),
        weights=FlintWeights(),
    )
    return flint_loss(**{**inputs, **overrides})


def test_output_fidelity_is_the_soft_cross_entropy_against_f():
    _, terms = _loss()
    first = -(0.5 * math.log(1 / 4) + 0.5 * math.log(3 / 4))  # = ln(16/3) / 2
    second = -(0.5 * math.log(1 / 2) + 0.5 * math.log(1 / 2))  # = ln 2
    assert terms["output_fidelity"].item() == pytest.approx((first + second) / 2)


def test_input_fidelity_is_the_mean_squared_error():
    _, terms = _loss()
    assert terms["input_fidelity"].item() == pytest.approx((1.0 + 0.25 + 4.0) / 8)


def test_conciseness_is_the_mean_entropy_of_each_sample():
    _, terms = _loss()
    skewed = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # softmax([0, ln 3]) = [1/4, 3/4]
    uniform = math.log(2.0)
    assert terms["conciseness"].item() == pytest.approx((skewed + uniform) / 2)


def test_diversity_is_minus_the_entropy_of_the_batch_mean():
    _, terms = _loss()
    # batch mean [0, ln3/2]: softmax = [1, √3] / (1 + √3)
    p0, p1 = 1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))
    assert terms["diversity"].item() == pytest.approx(p0 * math.log(p0) + p1 * math.log(p1))


def test_sparsity_is_the_mean_absolute_attribute():
    _, terms = _loss(pooled=torch.tensor([[0.0, LN3], [-2.0, 0.0]]))
    assert terms["sparsity"].item() == pytest.approx((LN3 + 2.0) / 4)


def test_total_weighs_each_term_with_flints_weights():
    weights = FlintWeights(beta=2.0, gamma=3.0, delta=5.0, eta=7.0)
    total, terms = _loss(weights=weights)
    expected = (
        2.0 * terms["output_fidelity"].item()
        + 3.0 * terms["input_fidelity"].item()
        + 5.0 * (terms["conciseness"].item() + terms["diversity"].item())
        + 7.0 * terms["sparsity"].item()
    )
    assert total.item() == pytest.approx(expected)
    assert FlintWeights() == FlintWeights(beta=0.6, gamma=2.0, delta=0.2, eta=0.15)


def test_teacher_gets_no_gradient_and_wrong_sized_reconstruction_is_refused():
    f_logits = torch.zeros(2, 2, requires_grad=True)
    total, _ = _loss(f_logits=f_logits, logits=torch.zeros(2, 2, requires_grad=True))
    total.backward()
    assert f_logits.grad is None
    with pytest.raises(ValueError, match="reconstruction"):
        _loss(recon=torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize("resolution", [16, 32, 256])
@torch.no_grad()
def test_decoder_makes_images_of_the_resolution(resolution):
    decoder = FlintDecoder(num_concepts=3, resolution=resolution).eval()
    assert decoder(torch.rand(2, 3)).shape == (2, 3, resolution, resolution)


def test_decoder_follows_flints_cub_layout_at_256px():
    decoder = FlintDecoder(num_concepts=3, resolution=256)
    assert (decoder.base, decoder.upsamplings) == (8, 5)  # FLINT: 7 -> 224 with five upsamplings
    assert [block[0].out_channels for block in decoder.blocks] == [128, 128, 64]


@pytest.mark.parametrize("resolution", [8, 24, 100, 256.0, True])
def test_decoder_refuses_other_resolutions(resolution):
    with pytest.raises(UserError, match="resolution"):
        FlintDecoder(num_concepts=3, resolution=resolution)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny f at 16 px, saved, and a FLINT around it (eval mode)."""
    folder = tmp_path_factory.mktemp("flint")
    f_path = save_tiny_classifier(folder / "f.safetensors")
    f, _ = load_classifier(f_path)
    torch.manual_seed(0)
    model = FLINT(f, {"num_concepts": K, "hidden": HIDDEN, "resolution": RES}).eval()
    return model, f_path


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, RES, RES, generator=torch.Generator().manual_seed(1)) * 2 - 1


@torch.no_grad()
def test_encode_and_render_shapes(tiny):
    model, _ = tiny
    out = model(_images())
    assert out.concept_maps.shape == (3, K, 3, 3) and out.concept_maps.min() >= 0
    assert out.pooled.shape == (3, K) and out.support.shape == (3, 0)
    assert out.logits.shape == out.f_logits.shape == (3, 10)
    assert out.recon.shape == (3, 3, RES, RES)
    assert model.head_weight().shape == (10, K)
    assert torch.allclose(out.logits, out.pooled @ model.head_weight().T + model.head.linear.bias)
    assert torch.equal(model.render(out.concept_maps, out.support), out.recon)
    with pytest.raises(ValueError, match="support"):
        model.render(out.concept_maps, torch.zeros(3, 5))


@torch.no_grad()
def test_scaling_or_zeroing_a_map_scales_or_zeroes_its_pooled_value(tiny):
    model, _ = tiny
    maps = torch.rand(2, K, 3, 3)
    edited = maps.clone()
    edited[:, 1] *= 3.0
    edited[:, 2] = 0.0
    before, after = model.head.pool(maps), model.head.pool(edited)
    assert torch.allclose(after[:, 1], 3.0 * before[:, 1])
    assert torch.equal(after[:, 2], torch.zeros(2))
    assert torch.equal(after[:, [0, 3]], before[:, [0, 3]])
    assert before[0, 0].item() == pytest.approx(maps[0, 0].sum().item() / 9)  # the mean of the 3x3 map


def test_only_the_trained_parts_train(tiny):
    model, _ = tiny
    model.train()
    try:
        assert model.head.dropout.training and model.decoder.training and not model.f.training
        assert set(model.trained_parts()) == {"phi", "head", "decoder"}
        assert not any(p.requires_grad for p in model.f.parameters())
    finally:
        model.eval()


def test_unknown_config_key_is_refused(tiny):
    model, _ = tiny
    with pytest.raises(UserError, match="unknown FLINT config key 'support_ws'"):
        FLINT(model.f, {"num_concepts": K, "hidden": HIDDEN, "resolution": RES, "support_ws": [0]})


def test_checkpoint_round_trip_reproduces_logits_and_checks_f(tiny, tmp_path):
    model, f_path = tiny
    path = save_checkpoint(
        tmp_path / "flint.safetensors",
        model.trained_parts().state_dict(),
        kind="flint",
        config=model.config,
        parents={"classifier": parent_record(f_path)},
    )
    loaded, meta = load_flint(path)
    assert meta.kind == "flint" and loaded.config == model.config and not loaded.training
    images = _images()
    with torch.no_grad():
        expected, got = model(images), loaded(images)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.recon, expected.recon)
    assert isinstance(load_concept_model(path)[0], FLINT)  # what the interpretation commands call

    other = save_tiny_classifier(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(UserError, match="sha256 differs"):
        load_flint(path, classifier=other)


def test_a_copied_folder_finds_its_f_next_to_the_model(tiny, tmp_path):
    model, f_path = tiny
    folder = tmp_path / "moved"
    folder.mkdir()
    copied_f = shutil.copy(f_path, tmp_path / "f.safetensors")
    path = save_checkpoint(
        tmp_path / "flint.safetensors",
        model.trained_parts().state_dict(),
        kind="flint",
        config=model.config,
        parents={"classifier": parent_record(copied_f)},
    )
    shutil.move(path, folder / "flint.safetensors")
    shutil.move(copied_f, folder / "f.safetensors")
    loaded, _ = load_flint(folder / "flint.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(_images()).logits, model(_images()).logits)
