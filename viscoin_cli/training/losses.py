"""The training objectives: VisCoIN's (paper Eq. 2-5; docs/method.md, "Training objective"), term by term,
and StyleGAN2-ADA's in NVIDIA's phases (`StyleGAN2Loss`, at the end).

    L = α·L_of + L_rec + L_reg
    L_of  = CE(g(x), f(x))                         soft cross-entropy against the frozen f's probabilities
    L_rec = ‖x − x̃‖²₂ + ‖x − x̃‖₁ + β·LPIPS(x, x̃) + γ_rc·CE(f(x̃), f(x))
    L_reg = δ·‖Φ(x)‖₁ + L_orth + ‖Ω(Φ(x), γ(x)) − w̄‖²₂

The norms are means over elements (pixels, concept-map entries, W+ coordinates) (choice: the paper
gives no normalisation; means keep the weights of the table comparable across K, resolution and num_ws).

`StyleGAN2Loss` below is the generator's training objective (`finetune-gan`), split into NVIDIA's phases.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from viscoin_cli.nets.concepts import orthogonality_loss


@dataclass(frozen=True)
class LossWeights:
    alpha: float = 0.5  # output fidelity
    beta: float = 3.0  # LPIPS (0 when LPIPS is off)
    gamma_rc: float = 0.1  # reconstruction-classification
    delta: float = 0.2  # sparsity


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """−Σ_c softmax(teacher)_c · log softmax(logits)_c, averaged over the batch."""
    return -(F.softmax(teacher_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def viscoin_loss(
    *,
    images: torch.Tensor,
    recon: torch.Tensor,
    f_logits: torch.Tensor,
    f_logits_recon: torch.Tensor,
    g_logits: torch.Tensor,
    concept_maps: torch.Tensor,
    ws: torch.Tensor,
    w_avg: torch.Tensor,
    concept_conv: nn.Conv2d,
    lpips: nn.Module | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and every term (unweighted) for logging.

    `f_logits` are f's on the inputs (the teacher, no gradient needed); `f_logits_recon` are f's on x̃ and
    must be computed with gradient, so that γ_rc·CE(f(x̃), f(x)) trains Ψ and Ω through the frozen f and G.
    """
    teacher = f_logits.detach()
    terms = {
        "fidelity": soft_cross_entropy(g_logits, teacher),
        "rec_l2": (images - recon).square().mean(),
        "rec_l1": (images - recon).abs().mean(),
        "rec_lpips": lpips(images, recon).mean() if lpips is not None else recon.new_zeros(()),
        "rec_class": soft_cross_entropy(f_logits_recon, teacher),
        "sparsity": concept_maps.abs().mean(),
        "orthogonality": orthogonality_loss(concept_conv),
        "w_reg": (ws - w_avg).square().mean(),
    }
    total = (
        weights.alpha * terms["fidelity"]
        + terms["rec_l2"]
        + terms["rec_l1"]
        + weights.beta * terms["rec_lpips"]
        + weights.gamma_rc * terms["rec_class"]
        + weights.delta * terms["sparsity"]
        + terms["orthogonality"]
        + terms["w_reg"]
    )
    return total, terms


# ---------------------------------------------------------------------------------------------------
# StyleGAN2-ADA (Karras et al. 2020; docs/method.md, "StyleGAN2-ADA training")

GAN_PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


def _synced(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's `no_sync()` for a pass whose gradients must not be all-reduced yet (or need none at all)."""
    if isinstance(module, DistributedDataParallel) and not sync:
        return module.no_sync()
    return contextlib.nullcontext()


class StyleGAN2Loss:
    """StyleGAN2-ADA's losses as NVIDIA's `training/loss.py` splits them into phases.

        Gmain  softplus(−D(A(G(z))))                                 non-saturating logistic loss for G
        Greg   w_pl·(‖J_wᵀ y‖ − a)²,  y ~ N(0, I)/√(H·W)               path-length penalty on a batch / shrink
        Dmain  softplus(D(A(G(z)))) + softplus(−D(A(x)))              logistic loss for D, fakes without gradient
        Dreg   γ/2·‖∇_x D(A(x))‖²                                     R1 on reals, through A (double backward)
        Gboth, Dboth: main and regularisation in one phase (one optimiser step), unregularised when w_pl or γ is 0.

    `accumulate_gradients` only calls backward: the caller zeroes the gradients, chooses which parameters
    require them and steps the optimiser. `gain` multiplies the phase's loss (the interval of a lazy
    regularisation phase, 1 otherwise). `a` (`pl_mean`) is an EMA of the path lengths with decay
    `pl_decay`; as in NVIDIA's code the gradient also flows through this step's update of it.

    G_mapping, G_synthesis and D may be DistributedDataParallel wrappers: a pass whose module is not being
    trained runs under `no_sync()`, and each phase has exactly one synchronised backward (NVIDIA's
    `ddp_sync`). `autocast` (e.g. `Runtime.autocast`) wraps the forward passes of the main losses; the
    regularisers, which differentiate twice, run in fp32. ADA's signs come from Dmain's real logits only
    (NVIDIA also counts Dreg's).
    """

    def __init__(
        self,
        G_mapping: nn.Module,
        G_synthesis: nn.Module,
        D: nn.Module,
        augment_pipe: nn.Module | None = None,
        *,
        style_mixing_prob: float = 0.9,
        r1_gamma: float = 10.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        pl_weight: float = 2.0,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        device: torch.device | str = "cpu",
    ):
        self.G_mapping, self.G_synthesis, self.D = G_mapping, G_synthesis, D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob, self.r1_gamma = style_mixing_prob, r1_gamma
        self.pl_batch_shrink, self.pl_decay, self.pl_weight = pl_batch_shrink, pl_decay, pl_weight
        self.autocast = autocast
        self.pl_mean = torch.zeros([], device=device)

    def run_G(self, z: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and the W+ codes that made them; with probability `style_mixing_prob` the W+ vectors from
        a random cutoff in [1, num_ws) on come from a second latent (mapped without updating w_avg)."""
        with _synced(self.G_mapping, sync):
            ws = self.G_mapping(z, None)
            if self.style_mixing_prob > 0:
                cutoff = torch.randint(1, ws.shape[1], (), device=ws.device)
                mix = torch.rand((), device=ws.device) < self.style_mixing_prob
                cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, ws.shape[1]))
                mixed = self.G_mapping(torch.randn_like(z), None, skip_w_avg_update=True)
                ws = torch.where(torch.arange(ws.shape[1], device=ws.device)[None, :, None] < cutoff, ws, mixed)
        with _synced(self.G_synthesis, sync):
            return self.G_synthesis(ws), ws

    def run_D(self, images: torch.Tensor, sync: bool) -> torch.Tensor:
        if self.augment_pipe is not None:
            images = self.augment_pipe(images)
        with _synced(self.D, sync):
            return self.D(images, None)

    def accumulate_gradients(
        self, phase: str, real_img: torch.Tensor, gen_z: torch.Tensor, gain: float
    ) -> dict[str, torch.Tensor]:
        """Backward the losses of `phase` times `gain`; returns the detached values to log (mean penalties
        without their weights: loss_G, loss_pl, loss_D_fake, loss_D_real, loss_r1) and, after Dmain, D's
        logits on the augmented reals (`real_logits`, for ADA)."""
        if phase not in GAN_PHASES:
            raise ValueError(f"phase {phase!r}: expected one of {', '.join(GAN_PHASES)}")
        do_Gmain, do_Dmain = phase in ("Gmain", "Gboth"), phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0
        logged: dict[str, torch.Tensor] = {}
        if do_Gmain:
            logged["loss_G"] = self._G_main(gen_z, gain, sync=not do_Gpl)  # Gboth: synchronised by Gpl
        if do_Gpl:
            logged["loss_pl"] = self._G_pl(gen_z, gain)
        if do_Dmain:
            logged["loss_D_fake"] = self._D_fake(gen_z, gain)
        if do_Dmain or do_Dr1:
            logged.update(self._D_real(real_img, gain, main=do_Dmain, r1=do_Dr1))
        return logged

    def _G_main(self, gen_z: torch.Tensor, gain: float, sync: bool) -> torch.Tensor:
        with self.autocast():
            gen_img, _ = self.run_G(gen_z, sync=sync)
            gen_logits = self.run_D(gen_img, sync=False)  # D is not trained here
        loss = F.softplus(-gen_logits.float()).mean()
        loss.mul(gain).backward()
        return loss.detach()

    def _G_pl(self, gen_z: torch.Tensor, gain: float) -> torch.Tensor:
        batch = max(1, gen_z.shape[0] // self.pl_batch_shrink)
        gen_img, gen_ws = self.run_G(gen_z[:batch], sync=True)
        pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
        (pl_grads,) = torch.autograd.grad((gen_img * pl_noise).sum(), gen_ws, create_graph=True)
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        pl_penalty = (pl_lengths - pl_mean).square()
        # The zero term puts every synthesis parameter into the graph (DDP expects a gradient for each).
        (gen_img[:, 0, 0, 0] * 0 + pl_penalty * self.pl_weight).mean().mul(gain).backward()
        return pl_penalty.mean().detach()

    def _D_fake(self, gen_z: torch.Tensor, gain: float) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            gen_img, _ = self.run_G(gen_z, sync=False)
        with self.autocast():
            gen_logits = self.run_D(gen_img, sync=False)  # synchronised by the reals' backward
        loss = F.softplus(gen_logits.float()).mean()
        loss.mul(gain).backward()
        return loss.detach()

    def _D_real(self, real_img: torch.Tensor, gain: float, *, main: bool, r1: bool) -> dict[str, torch.Tensor]:
        """Dmain's real term and/or R1, in one synchronised backward."""
        real_img_tmp = real_img.detach().requires_grad_(r1)
        with contextlib.nullcontext() if r1 else self.autocast():
            real_logits = self.run_D(real_img_tmp, sync=True)
        loss = real_logits.float() * 0  # keeps every D parameter in the graph
        logged: dict[str, torch.Tensor] = {}
        if main:
            loss_real = F.softplus(-real_logits.float())
            loss = loss + loss_real
            logged.update(loss_D_real=loss_real.mean().detach(), real_logits=real_logits.detach())
        if r1:
            (r1_grads,) = torch.autograd.grad(real_logits.sum(), real_img_tmp, create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            loss = loss + r1_penalty[:, None] * (self.r1_gamma / 2)
            logged["loss_r1"] = r1_penalty.mean().detach()
        loss.mean().mul(gain).backward()
        return logged
