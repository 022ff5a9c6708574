"""StyleGAN2-ADA's losses (`training/losses.py: StyleGAN2Loss`) and NVIDIA's training phases (`training/gan.py`)
on tiny networks: the optimiser steps lazy regularisation takes, one Gmain + Greg cycle and one Dmain against
a hand computation, and R1 against its closed form."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_G, run_cli
from torch import nn

from viscoin_cli.io.checkpoint import load_state
from viscoin_cli.nets.augment import PRESETS, AugmentPipe
from viscoin_cli.nets.stylegan2 import Discriminator, Generator
from viscoin_cli.training.gan import discriminator_kwargs_for, lazy_adam, phases_for
from viscoin_cli.training.losses import StyleGAN2Loss

LR, PL_WEIGHT, PL_DECAY = 0.0025, 2.0, 0.01
# 16 px digits, batch 4, 16 minibatches in one tick.
RUN = ["--dataset", "digits", "--resolution", "16", "--batch-size", "4", "--kimg", "0.064", "--tick-kimg", "0.064"]
RUN += ["--cbase", "256", "--cmax", "16", "--map", "1", "--grid-size", "4", "--device", "cpu", "--quiet"]


def tiny_nets(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return Generator(**TINY_G), Discriminator(**discriminator_kwargs_for(TINY_G))


def identity_augment() -> AugmentPipe:
    pipe = AugmentPipe(**PRESETS["bgc"])
    pipe.p.zero_()  # p = 0 returns the images themselves
    return pipe


def grads_of(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, with zeros for parameters the loss does not reach."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def assert_all_close(mine, reference, names, **tolerance) -> None:
    for name, a, b in zip(names, mine, reference, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}", **tolerance)


# --- lazy regularisation: k + 1 optimiser steps per k minibatches -----------------------------------


@pytest.mark.parametrize(
    ("options", "g_steps", "g_ratio"),
    [
        (["--pl-weight", "2", "--style-mixing", "0.5"], 20, 4 / 5),  # 16 Gmain + 4 Greg: 4 x (4 + 1)
        (["--pl-weight", "0"], 16, 4 / 5),  # an empty Greg steps nothing; Adam stays rescaled, as NVIDIA's
    ],
)
def test_lazy_regularisation_takes_k_plus_one_optimiser_steps(tmp_path, options, g_steps, g_ratio):
    result = run_cli("finetune-gan", *RUN, *options, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    state = load_state(tmp_path / "run" / "latest.state.safetensors")
    steps = {net: {int(s["step"]) for s in state[f"opt_{net}"]["state"].values()} for net in ("G", "D")}
    assert steps == {"G": {g_steps}, "D": {16 + 1}}  # D: 16 Dmain and the Dreg of minibatch 0
    for net, ratio in (("G", g_ratio), ("D", 16 / 17)):
        group = state[f"opt_{net}"]["param_groups"][0]
        assert group["lr"] == pytest.approx(LR * ratio)
        assert [float(b) for b in group["betas"]] == pytest.approx([0.0, 0.99**ratio])


def test_the_run_says_that_greg_is_empty_without_path_length(tmp_path):
    loud = [arg for arg in RUN if arg != "--quiet"]
    result = run_cli("finetune-gan", *loud, "--pl-weight", "0", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "phases Gmain, Greg, Dmain, Dreg (Greg empty: path length off)" in result.output


def test_phases_follow_nvidias_setup():
    G, D = tiny_nets()
    opt_G, opt_D = lazy_adam(G.parameters(), LR, 4), lazy_adam(D.parameters(), LR, 16)
    phases = phases_for("G", opt_G, 4) + phases_for("D", opt_D, 16)
    assert [(p.name, p.interval) for p in phases] == [("Gmain", 1), ("Greg", 4), ("Dmain", 1), ("Dreg", 16)]
    assert [(p.name, p.interval) for p in phases_for("G", opt_G, None)] == [("Gboth", 1)]
    assert opt_G.param_groups[0]["lr"] == pytest.approx(LR * 0.8)
    assert lazy_adam(G.parameters(), LR, None).param_groups[0]["betas"] == (0.0, 0.99)


# --- one Gmain + Greg cycle against NVIDIA's arithmetic -----------------------------------------------


def test_gmain_and_greg_match_a_hand_computation():
    G, D = tiny_nets()
    G_hand, D_hand = copy.deepcopy(G), copy.deepcopy(D)
    z = torch.randn(2, 4, G.z_dim)  # each phase its own latents
    reals = torch.zeros(4, 3, 16, 16)  # the G phases do not look at them

    # The loss object, stepped the way the training loop steps it (`Phase.run`).
    opt = lazy_adam(G.parameters(), LR, 4)
    loss = StyleGAN2Loss(
        G.mapping, G.synthesis, D, identity_augment(), style_mixing_prob=0.0, pl_weight=PL_WEIGHT, pl_decay=PL_DECAY
    )
    G.requires_grad_(False)
    D.requires_grad_(False)
    seen, step = [], opt.step

    def recording_step(*args, **kwargs):
        seen.append([p.grad.clone() for p in G.parameters()])  # every G parameter has a gradient
        return step(*args, **kwargs)

    opt.step = recording_step
    logged = []
    for phase, gen_z in zip(phases_for("G", opt, 4), z, strict=True):
        torch.manual_seed(1)  # the same noise as the hand computation
        logged.append(phase.run(loss, reals, gen_z))
    assert all(p.grad is None for p in D.parameters())

    # By hand: Adam with beta1 = 0 and lazy rescaling c = 4/5 (lr c, beta2^c), from a fresh state.
    names = [name for name, _ in G.named_parameters()]
    params = list(G_hand.parameters())
    lr, beta2 = LR * 4 / 5, 0.99 ** (4 / 5)
    second_moments = [torch.zeros_like(p) for p in params]

    def adam_step(t: int, grads: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v, g in zip(params, second_moments, grads, strict=True):
                v.mul_(beta2).add_((1 - beta2) * g * g)
                p.sub_(lr * g / ((v / (1 - beta2**t)).sqrt() + 1e-8))

    # Gmain: softplus(-D(G(z))), gain 1.
    torch.manual_seed(1)
    loss_G = F.softplus(-D_hand(G_hand.synthesis(G_hand.mapping(z[0], None)), None)).mean()
    grads_main = grads_of(loss_G, params)
    adam_step(1, grads_main)
    # Greg: path length on half the batch, pl_mean from 0 with decay 0.01, penalty x weight x interval 4.
    torch.manual_seed(1)
    ws = G_hand.mapping(z[1][:2], None)
    images = G_hand.synthesis(ws)
    pl_noise = torch.randn_like(images) / math.sqrt(16 * 16)
    (pl_grads,) = torch.autograd.grad((images * pl_noise).sum(), ws, create_graph=True)
    pl_lengths = pl_grads.square().sum(dim=2).mean(dim=1).sqrt()  # over w_dim, then the W+ vectors
    pl_mean = torch.tensor(0.0) + PL_DECAY * (pl_lengths.mean() - 0.0)  # lerp(0, mean, decay)
    pl_penalty = (pl_lengths - pl_mean).square()
    grads_reg = grads_of((pl_penalty * PL_WEIGHT).mean() * 4, params)
    adam_step(2, grads_reg)

    assert logged[0] == {"loss_G": pytest.approx(loss_G.item(), rel=1e-6)}
    assert logged[1] == {"loss_pl": pytest.approx(pl_penalty.mean().item(), rel=1e-5)}
    assert loss.pl_mean.item() == pytest.approx(pl_mean.item(), rel=1e-6)
    assert sum(g.abs().sum() for g in grads_reg) > 0
    assert_all_close(seen[0], grads_main, names, rtol=1e-5, atol=1e-7)
    assert_all_close(seen[1], grads_reg, names, rtol=1e-5, atol=1e-7)
    assert_all_close(list(G.parameters()), params, names, rtol=0, atol=1e-6)


def test_dmain_matches_a_hand_computation_and_returns_the_real_logits():
    G, D = tiny_nets()
    D_hand = copy.deepcopy(D)
    z, reals = torch.randn(4, G.z_dim), torch.rand(4, 3, 16, 16) * 2 - 1
    loss = StyleGAN2Loss(G.mapping, G.synthesis, D, identity_augment(), style_mixing_prob=0.0)
    G.requires_grad_(False)
    torch.manual_seed(1)
    logged = loss.accumulate_gradients("Dmain", reals, z, gain=1)

    torch.manual_seed(1)
    with torch.no_grad():
        fakes = G.synthesis(G.mapping(z, None))
    fake_logits, real_logits = D_hand(fakes, None), D_hand(reals, None)
    loss_fake, loss_real = F.softplus(fake_logits).mean(), F.softplus(-real_logits).mean()
    params = list(D_hand.parameters())
    assert set(logged) == {"loss_D_fake", "loss_D_real", "real_logits"}
    assert logged["loss_D_fake"].item() == pytest.approx(loss_fake.item(), rel=1e-6)
    assert logged["loss_D_real"].item() == pytest.approx(loss_real.item(), rel=1e-6)
    torch.testing.assert_close(logged["real_logits"], real_logits.detach())
    names = [name for name, _ in D.named_parameters()]
    assert_all_close(
        [p.grad for p in D.parameters()], grads_of(loss_fake + loss_real, params), names, rtol=1e-5, atol=1e-7
    )
    assert all(p.grad is None for p in G.parameters())


# --- R1 ------------------------------------------------------------------------------------------------


class QuadraticD(nn.Module):
    """D(x) = a·‖x‖²/2, so ∇_x D = a·x, R1 = γ/2·a²·‖x‖² and ∂R1/∂a = γ·a·‖x‖²."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, images: torch.Tensor, c: None) -> torch.Tensor:
        assert c is None
        return (self.a * images.square().sum([1, 2, 3]) / 2)[:, None]


def test_r1_matches_its_closed_form_through_the_augmentation():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    D, gamma, gain = QuadraticD(1.5), 0.5, 16
    loss = StyleGAN2Loss(nn.Identity(), nn.Identity(), D, identity_augment(), r1_gamma=gamma)
    logged = loss.accumulate_gradients("Dreg", x, torch.zeros(2, 1), gain=gain)
    norms = x.square().sum([1, 2, 3])  # ‖x‖² per image
    assert set(logged) == {"loss_r1"}  # the penalty without its weight, as the run logs it
    assert logged["loss_r1"].item() == pytest.approx((1.5**2 * norms).mean().item(), rel=1e-6)
    assert D.a.grad.item() == pytest.approx(gain * gamma * 1.5 * norms.mean().item(), rel=1e-6)


def test_r1_of_a_discriminator_matches_a_hand_double_backward():
    _, D = tiny_nets()
    D_hand = copy.deepcopy(D)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    gamma, gain = 0.8, 16
    loss = StyleGAN2Loss(nn.Identity(), nn.Identity(), D, identity_augment(), r1_gamma=gamma)
    logged = loss.accumulate_gradients("Dreg", x, torch.zeros(4, 1), gain=gain)

    x_hand = x.clone().requires_grad_(True)
    (r1_grads,) = torch.autograd.grad(D_hand(x_hand, None).sum(), x_hand, create_graph=True)
    r1 = r1_grads.square().sum([1, 2, 3])
    params = list(D_hand.parameters())
    assert logged["loss_r1"].item() == pytest.approx(r1.mean().item(), rel=1e-6)
    names = [name for name, _ in D.named_parameters()]
    expected = grads_of((r1 * gamma / 2).mean() * gain, params)
    assert_all_close([p.grad for p in D.parameters()], expected, names, rtol=1e-5, atol=1e-7)


def test_unknown_phase_is_refused():
    G, D = tiny_nets()
    with pytest.raises(ValueError, match="Gmain"):
        StyleGAN2Loss(G.mapping, G.synthesis, D).accumulate_gradients("Greg2", torch.zeros(1), torch.zeros(1), 1)
