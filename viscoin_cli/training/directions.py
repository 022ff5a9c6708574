"""`viscoin directions gan`: unsupervised interpretable directions in a frozen generator's W space
(Voynov & Babenko, ICML 2020; docs/method.md, "Directions in G").

Every step draws z, w = G.mapping(z) (no truncation), a direction k uniform in [0, K) and a shift ε uniform in
[-S, S] with |ε| raised to at least the minimum shift, renders x = G.synthesis(w) and x' = G.synthesis(w +
ε·σ_W·d_k) (constant noise), and trains the direction matrix A and the reconstructor R together to tell k
(cross-entropy) and ε (L1, weight 0.25) from the pair. Only x' depends on A, so x is rendered without a graph.

ε is measured in σ_W, W's root-mean-square spread per coordinate around its mean (measured once from 4096
mapped latents): the paper's S = 6 and minimum 0.5 are in units of its latent z ~ N(0, I), whose spread per
coordinate is 1, so in σ_W they move w as far, relative to the cloud of W, as the paper moves z.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import DATASET_NAMES
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import atomic_write, load_state, parent_record, read_meta, save_checkpoint, save_state
from viscoin_cli.io.images import save_grid, upscale_factor
from viscoin_cli.nets.concept_model import freeze
from viscoin_cli.nets.latent_directions import MAX_DIRECTIONS, GanDirections, LatentDirections, Reconstructor
from viscoin_cli.runtime import Runtime, seed_for
from viscoin_cli.training.config import TrainConfig, with_shipped_parent
from viscoin_cli.training.run import RunFolder

SCALE_SAMPLES = 4096  # mapped latents that measure σ_W
STRIP_SEEDS = (0, 1, 2)  # the latents of the strips, by NVIDIA's seed convention (as `viscoin generate`)
STRIP_SHIFTS = 5  # columns per seed: ε evenly from -S to S
_SCALE_STREAM, _HELD_OUT_STREAM = 1 << 40, 1 << 41  # seeds no training block uses
# The embedded datasets' small generators: the paper's lr 1e-4 barely moves A from its random start in the few
# thousand steps a CPU gives (digits, 2 500 steps: held-out accuracy 0.07 at 200 steps, 0.96 at 2 500 with
# 3e-3); 16 directions at batch 16. Other generators keep the paper's values (the fields' defaults).
PRESETS: dict[str, dict[str, Any]] = {
    name: {"num_directions": 16, "batch_size": 16, "lr": 3e-3, "iterations": 2500} for name in ("digits", "shapes")
}


@dataclass(frozen=True)
class DirectionsConfig(TrainConfig):
    """`viscoin directions gan`: the generator, K, the shift distribution, the optimiser and the budget."""

    method: str = "gan"
    generator: str = ""
    num_directions: int = 32
    orthonormal: bool = False
    iterations: int = 2000
    batch_size: int = 32
    shift_scale: float = 6.0  # S, in σ_W
    min_shift: float = 0.5  # in σ_W
    shift_weight: float = 0.25  # weight of the ε regression beside the direction's cross-entropy
    lr: float = 1e-4  # both A and R, as the paper's code
    reconstructor_width: int = 2  # 2: the paper's LeNet
    log_every: int = 100
    eval_samples: int = 1024  # held-out pairs that measure R at the end

    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"iterations", "log_every", "eval_samples"})
    FLAGS: ClassVar[dict[str, str]] = {"num_directions": "--directions"}
    LENGTH: ClassVar[str | None] = "iterations"

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG003
        values = with_shipped_parent(values, "generator")
        if values.get("generator"):  # the run is named after, and records, the dataset G was trained on
            facts = read_meta(values["generator"], kind="generator").dataset or {}
            if facts.get("name") in DATASET_NAMES:
                values["dataset"] = facts["name"]
        for key, value in PRESETS.get(values.get("dataset", ""), {}).items():  # G's dataset decides the preset
            values.setdefault(key, value)
        return values

    def check(self) -> None:
        super().check()
        if self.method != "gan":
            raise UserError(f"method {self.method!r} cannot be trained by directions gan")
        if not self.generator:
            raise UserError("--generator is required")
        if not 2 <= self.num_directions <= MAX_DIRECTIONS:
            raise UserError(f"--directions {self.num_directions}: expected 2..{MAX_DIRECTIONS}")
        if not 0 < self.shift_scale <= 100 or not math.isfinite(self.shift_scale):
            raise UserError(f"--shift-scale {self.shift_scale:g}: expected a number in (0, 100] (in σ_W)")
        if not 0 <= self.min_shift < self.shift_scale:
            raise UserError(f"--min-shift {self.min_shift:g}: expected at least 0 and below --shift-scale")
        if not 0 < self.lr <= 1:
            raise UserError(f"--lr {self.lr:g}: expected a number in (0, 1]")
        if not 1 <= self.eval_samples <= 1_000_000:
            raise UserError(f"--eval-samples {self.eval_samples}: expected 1..1000000")


# --- the pieces of one step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftSampler:
    """The paper's shift distribution: k uniform in [0, K), ε uniform in [-S, S], |ε| raised to `minimum`."""

    num_directions: int
    scale: float
    minimum: float

    def __call__(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.randint(self.num_directions, (n,), device=device)
        eps = (2 * torch.rand(n, device=device) - 1) * self.scale
        small = eps.abs() < self.minimum
        eps = torch.where(small, torch.where(eps < 0, -self.minimum, self.minimum), eps)
        return k, eps


@dataclass(frozen=True)
class ReconstructorLoss:
    """CE(logits, k) + shift_weight·|ε̂ − ε| (batch means): R must name the direction and its shift."""

    shift_weight: float = 0.25

    def __call__(
        self, logits: torch.Tensor, predicted: torch.Tensor, k: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {
            "direction": F.cross_entropy(logits.float(), k),
            "shift": (predicted.float() - eps).abs().mean(),
        }
        return terms["direction"] + self.shift_weight * terms["shift"], terms


def image_pairs(
    G: nn.Module, directions: LatentDirections, z: torch.Tensor, k: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G(w), G(w + ε·σ_W·d_k)) for w = G.mapping(z); only the shifted image carries a graph (to A)."""
    with torch.no_grad():
        ws = G.mapping(z, None)
        images = G.synthesis(ws, noise_mode="const")
    return images, G.synthesis(directions.shift(ws, k, eps), noise_mode="const")


def measure_w_scale(G: nn.Module, seed: int, device: torch.device, samples: int = SCALE_SAMPLES) -> float:
    """σ_W: the root-mean-square over W's coordinates of their standard deviation (mapped latents, no truncation)."""
    generator = torch.Generator(device).manual_seed(seed_for(seed, _SCALE_STREAM))
    with torch.no_grad():
        w = G.mapping(torch.randn(samples, G.z_dim, generator=generator, device=device), None)[:, 0]
    return float(w.float().var(dim=0).mean().sqrt())


@torch.no_grad()
def evaluate(
    G: nn.Module, model: GanDirections, sampler: ShiftSampler, samples: int, batch: int, seed: int, rt: Runtime
) -> dict[str, Any]:
    """R on `samples` fresh pairs that training never drew: direction accuracy and ε's mean absolute error."""
    model.eval()
    correct = error = 0.0
    per_direction = torch.zeros(2, sampler.num_directions)  # correct, count
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        torch.manual_seed(seed_for(seed, _HELD_OUT_STREAM))
        for start in range(0, samples, batch):
            n = min(batch, samples - start)
            z = torch.randn(n, G.z_dim, device=rt.device)
            k, eps = sampler(n, rt.device)
            with rt.autocast():
                logits, predicted = model.reconstructor(*image_pairs(G, model.directions, z, k, eps))
            hits = (logits.argmax(1) == k).float()
            correct += float(hits.sum())
            error += float((predicted.float() - eps).abs().sum())
            per_direction.index_add_(1, k.cpu(), torch.stack([hits.cpu(), torch.ones(n)]))
    return {
        "accuracy": correct / samples,
        "shift_mae": error / samples,
        "accuracy_per_direction": (per_direction[0] / per_direction[1].clamp(min=1)).tolist(),
        "eval_samples": samples,
    }


def train_steps(
    G: nn.Module,
    model: GanDirections,
    optimizers: list[torch.optim.Optimizer],
    sampler: ShiftSampler,
    loss_fn: ReconstructorLoss,
    *,
    steps: int,
    batch: int,
    rt: Runtime,
    scaler: torch.amp.GradScaler | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """`steps` steps of the joint training of A and R (G frozen); the means of the loss terms and accuracy.

    Draws come from the global RNG, which the caller seeds (the run re-seeds per block: resume-exact).
    """
    model.train()
    scaler = scaler or torch.amp.GradScaler(rt.device.type, enabled=False)
    sums = torch.zeros(4, device=rt.device)  # loss, direction CE, shift L1, accuracy
    for i in range(steps):
        z = torch.randn(batch, G.z_dim, device=rt.device)
        k, eps = sampler(batch, rt.device)
        with rt.autocast():
            logits, predicted = model.reconstructor(*image_pairs(G, model.directions, z, k, eps))
        loss, terms = loss_fn(logits, predicted, k, eps)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        accuracy = (logits.argmax(1) == k).float().mean()
        sums += torch.stack([loss.detach(), terms["direction"].detach(), terms["shift"].detach(), accuracy])
        if progress is not None and (i % 10 == 9 or i == steps - 1):
            running = float(sums[0]) / (i + 1)
            if not math.isfinite(running):
                raise UserError(f"training diverged (loss {running}); try a lower --lr")
            progress.advance(i + 1 - progress.done, loss=running)
    means = (sums / steps).tolist()
    return dict(zip(("loss", "direction_ce", "shift_l1", "train_accuracy"), means, strict=True))


# --- the strips -----------------------------------------------------------------------------------------


@torch.no_grad()
def write_strips(G: nn.Module, directions: LatentDirections, shift_scale: float, path: Path, title: str) -> Path:
    """One row per direction: for each of STRIP_SEEDS, the image at STRIP_SHIFTS values of ε from -S to S."""
    device = directions.raw.device
    z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in STRIP_SEEDS]))
    ws = G.mapping(z.float().to(device), None)
    shifts = torch.linspace(-shift_scale, shift_scale, STRIP_SHIFTS, device=device)
    rows = []
    for k in range(directions.num_directions):
        moved = [
            directions.shift(w[None].expand(len(shifts), -1, -1), torch.full_like(shifts, k, dtype=torch.long), shifts)
            for w in ws
        ]
        rows.append(G.synthesis(torch.cat(moved), noise_mode="const").float().cpu())
    headers = [f"seed {s}\neps {float(e):+.2g}" for s in STRIP_SEEDS for e in shifts]  # the label font is ASCII
    labels = [f"direction {k}" for k in range(directions.num_directions)]
    scale = upscale_factor(G.img_resolution, target=64)
    return save_grid(
        torch.cat(rows), path, columns=len(headers), scale=scale, title=title, column_labels=headers, row_labels=labels
    )


# --- the run ----------------------------------------------------------------------------------------------


def train_directions(
    cfg: DirectionsConfig, run: RunFolder, rt: Runtime, console: Console, *, resume: bool
) -> dict[str, Any]:
    """Train A and R against the frozen generator `cfg.generator`, writing into `run`; returns the summary."""
    from viscoin_cli.interpret.direction_truth import directions_ground_truth
    from viscoin_cli.nets.stylegan2 import load_generator

    if rt.distributed:
        raise UserError("directions gan runs as one process (the generator's forward dominates; no torchrun)")
    g_meta = read_meta(cfg.generator, kind="generator")
    G, _ = load_generator(cfg.generator, rt.device)
    G = freeze(G)
    if cfg.orthonormal and cfg.num_directions > G.w_dim:
        raise UserError(f"--directions {cfg.num_directions} --orthonormal: W has only {G.w_dim} dimensions")
    directions = LatentDirections(cfg.num_directions, G.w_dim, cfg.orthonormal)
    reconstructor = Reconstructor(cfg.num_directions, G.img_channels, cfg.reconstructor_width, G.img_resolution)
    model = GanDirections(directions, reconstructor).to(rt.device)
    optimizers = [torch.optim.Adam(part.parameters(), lr=cfg.lr) for part in (directions, reconstructor)]
    scaler = rt.grad_scaler()
    sampler = ShiftSampler(cfg.num_directions, cfg.shift_scale, cfg.min_shift)
    loss_fn = ReconstructorLoss(cfg.shift_weight)
    parents = {"generator": parent_record(cfg.generator)}
    step = 0
    if resume:
        trained_on = read_meta(run.latest, kind="directions").parents.get("generator", {}).get("sha256")
        if trained_on != parents["generator"]["sha256"]:
            raise UserError(f"{cfg.generator}: is not the generator the run in {run} was trained with (sha256 differs)")
        state = load_state(run.state, device=rt.device)
        model.load_state_dict(state["model"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        run.truncate_metrics("step", step)
        console.print(f"resuming {run} at iteration {step}/{cfg.iterations}")
    else:
        directions.scale.fill_(measure_w_scale(G, cfg.seed, rt.device))
    scale = float(directions.scale)
    console.print(
        f"{cfg.num_directions} {'orthonormal' if cfg.orthonormal else 'unit-norm'} directions in W of "
        f"{g_meta.path.name} ({G.img_resolution} px, w_dim {G.w_dim}); ε uniform in ±{cfg.shift_scale:g} σ_W "
        f"(σ_W = {scale:.4g}), |ε| ≥ {cfg.min_shift:g}; batch {cfg.batch_size}"
    )
    config = {
        "method": "gan",
        **model.config,
        "shift_scale": cfg.shift_scale,
        "min_shift": cfg.min_shift,
        "w_space": "W",  # one w shifted on every W+ vector
    }

    def save(final: dict[str, Any]) -> None:
        extra = {"iterations": step, "w_scale": scale, "shift_weight": cfg.shift_weight, "lr": cfg.lr, **final}
        save_checkpoint(
            run.latest,
            model.state_dict(),
            kind="directions",
            config=config,
            dataset=g_meta.dataset,
            step=step,
            parents=parents,
            extra=extra,
        )
        state = {
            "model": model.state_dict(),
            "optimizers": [optimizer.state_dict() for optimizer in optimizers],
            "scaler": scaler.state_dict(),
            "step": step,
        }
        save_state(run.state, state, step=step)

    t_start = time.perf_counter()
    record: dict[str, Any] = {}
    while step < cfg.iterations:
        steps = min(cfg.log_every, cfg.iterations - step)
        rt.reseed(cfg.seed, step // cfg.log_every)
        t_block = time.perf_counter()
        with Progress(console, steps, f"iterations {step + 1}-{step + steps}") as progress:
            means = train_steps(
                G,
                model,
                optimizers,
                sampler,
                loss_fn,
                steps=steps,
                batch=cfg.batch_size,
                rt=rt,
                scaler=scaler,
                progress=progress,
            )
        step += steps
        record = {"step": step, **means, "seconds_per_iteration": (time.perf_counter() - t_block) / steps}
        run.log(record)
        save({})
        console.print(
            f"iteration {step}/{cfg.iterations}  " + format_metrics({k: v for k, v in record.items() if k != "step"})
        )

    held_out = evaluate(G, model, sampler, cfg.eval_samples, 2 * cfg.batch_size, cfg.seed, rt)  # no graphs
    save({"held_out": {k: v for k, v in held_out.items() if k != "accuracy_per_direction"}})
    strips = write_strips(
        G,
        directions,
        cfg.shift_scale,
        run.path / "strips.png",
        f"{g_meta.path.name} · {cfg.num_directions} directions in W · eps in units of sigma_W = {scale:.3g}",
    )
    console.print(
        f"held-out reconstructor: direction accuracy {held_out['accuracy']:.4f} (chance {1 / cfg.num_directions:.4f}), "
        f"ε mean absolute error {held_out['shift_mae']:.4f} σ_W"
    )
    summary = {
        "out": str(run.path),
        "directions": str(run.latest),
        "strips": str(strips),
        "method": "gan",
        "num_directions": cfg.num_directions,
        "orthonormal": cfg.orthonormal,
        "iterations": step,
        "w_scale": scale,
        "shift_scale": cfg.shift_scale,
        "seconds": time.perf_counter() - t_start,
        "final_train": {k: v for k, v in record.items() if k != "step"},
        "reconstructor": held_out,
    }
    try:  # which attribute each direction draws, where the dataset records them (shapes)
        summary["ground_truth"] = directions_ground_truth(
            run.latest, generator=cfg.generator, device=rt.device, batch_size=2 * cfg.batch_size, seed=cfg.seed
        )
    except UserError as err:
        summary["ground_truth"], summary["ground_truth_reason"] = None, str(err)
    summary_file = run.path / "summary.json"
    atomic_write(summary_file, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary
