"""Each VisCoIN loss term against a hand-computed value, and the LPIPS wrapper's weight loading."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from viscoin_cli.errors import UserError
from viscoin_cli.nets.lpips import LPIPS
from viscoin_cli.training.losses import LossWeights, soft_cross_entropy, viscoin_loss


class ConstantLPIPS(torch.nn.Module):
    def forward(self, images, _other):
        return torch.full((images.shape[0],), 0.25)


def _inputs(**overrides):
    conv = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))  # orthonormal: L_orth = 0
    inputs = dict(
        images=torch.zeros(1, 3, 2, 2),
        recon=torch.full((1, 3, 2, 2), 0.5),
        f_logits=torch.tensor([[0.0, math.log(3.0)]]),  # teacher probabilities 1/4, 3/4
        f_logits_recon=torch.tensor([[0.0, 0.0]]),
        g_logits=torch.tensor([[0.0, 0.0]]),
        concept_maps=torch.tensor([[[[1.0, 0.0, 0.0]] * 3, [[0.0, 0.0, 2.0]] * 3]]),  # [1, 2, 3, 3]
        ws=torch.ones(1, 2, 4),
        w_avg=torch.zeros(4),
        concept_conv=conv,
        lpips=ConstantLPIPS(),
        weights=LossWeights(alpha=0.5, beta=3.0, gamma_rc=0.1, delta=2.0),
    )
    inputs.update(overrides)
    return inputs


def test_soft_cross_entropy_by_hand():
    value = soft_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]))
    assert value.item() == pytest.approx(math.log(2.0))


def test_every_term_by_hand():
    total, terms = viscoin_loss(**_inputs())
    assert terms["fidelity"].item() == pytest.approx(math.log(2.0))
    assert terms["rec_l2"].item() == pytest.approx(0.25)
    assert terms["rec_l1"].item() == pytest.approx(0.5)
    assert terms["rec_lpips"].item() == pytest.approx(0.25)
    assert terms["rec_class"].item() == pytest.approx(math.log(2.0))
    assert terms["sparsity"].item() == pytest.approx((3 * 1.0 + 3 * 2.0) / 18)
    assert terms["orthogonality"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["w_reg"].item() == pytest.approx(1.0)
    expected = 0.5 * math.log(2) + 0.25 + 0.5 + 3.0 * 0.25 + 0.1 * math.log(2) + 2.0 * 0.5 + 0.0 + 1.0
    assert total.item() == pytest.approx(expected)


def test_without_lpips_the_term_is_zero():
    total, terms = viscoin_loss(**_inputs(lpips=None))
    assert terms["rec_lpips"].item() == 0.0
    with_lpips, _ = viscoin_loss(**_inputs())
    assert with_lpips.item() - total.item() == pytest.approx(3.0 * 0.25)


def test_reconstruction_classification_carries_gradient_to_the_reconstruction():
    recon = torch.full((1, 3, 2, 2), 0.5, requires_grad=True)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).requires_grad_(False)
    total, _ = viscoin_loss(**_inputs(recon=recon, f_logits_recon=f(recon), weights=LossWeights(0, 0, 1.0, 0)))
    total.backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in f.parameters())


def test_lpips_with_a_random_backbone():
    lpips = LPIPS("alex", weights="random")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert lpips(x, x).abs().max() < 1e-6
    assert lpips(x, -x).shape == (2,) and (lpips(x, -x) > 0).all()
    assert not any(p.requires_grad for p in lpips.parameters())
    assert not lpips.train().training


def test_lpips_backbone_missing_says_which_file_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="alexnet-owt-7be5be79.pth.*--lpips none"):
        LPIPS("alex")


def test_lpips_backbone_from_the_hub_cache(tmp_path, monkeypatch):
    backbone = torchvision.models.alexnet()
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(backbone.state_dict(), hub / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lpips = LPIPS("alex")
    assert torch.equal(lpips.net.net.slice1[0].weight, backbone.features[0].weight)


def test_lpips_wrong_weights_file(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not torchvision alexnet weights"):
        LPIPS("alex", weights=tmp_path / "bad.pth")
