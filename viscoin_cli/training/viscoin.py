"""Training VisCoIN's Ψ, Θ, Ω against a frozen classifier f and generator G (paper §3, docs/method.md).

Every iteration takes n real training images (augmented) and n synthetic ones G(z) (no gradient, no
truncation): synthetic images need no label because the fidelity loss only asks g to agree with f.
All images are [-1, 1] for f, G, LPIPS and the pixel losses alike. Checkpoints, logs and grids happen at
multiples of `log_every`; each such block of iterations re-seeds from (seed, block), so a resumed run
draws the same data and noise as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from viscoin_cli.choices import LpipsNet
from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import load_dataset
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import load_state, parent_record, read_meta, save_checkpoint, save_state
from viscoin_cli.io.images import save_grid
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.lpips import LPIPS
from viscoin_cli.nets.stylegan2 import load_generator
from viscoin_cli.nets.viscoin import VisCoIN, check_compatible
from viscoin_cli.runtime import Runtime, all_reduce_sum, seed_everything, seed_for, seed_worker
from viscoin_cli.shipped import DEFAULT_CLASSIFIER, DEFAULT_GENERATOR
from viscoin_cli.training.config import TrainConfig
from viscoin_cli.training.losses import LossWeights, viscoin_loss
from viscoin_cli.training.run import RunFolder, TickBatches

# The paper's table per dataset (docs/method.md, "Hyperparameters"); digits: small K and Ψ width, a budget
# that trains in minutes on a CPU. support_ws: the W+ vectors fed by the support vector γ (None: the
# paper's first 3 and last 2 of 14 at 256 px). At 32 px there are 8 and the first 3 already fix a digit's
# shape, so with the paper's choice the concepts drove only the middle three and zeroing them barely
# changed the render (measured on digits: faithfulness median at τ=0.2 only 4.4x its random baseline). On
# digits γ keeps just the last two.
_FIELDS = (
    "num_concepts",
    "hidden",
    "alpha",
    "beta",
    "gamma_rc",
    "delta",
    "iterations",
    "real_batch",
    "synthetic_batch",
    "support_ws",
)
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {name: dict(zip(_FIELDS, values, strict=True)) for name, values in {
    #             K    hidden alpha beta gamma_rc delta iterations real synthetic support_ws
    "digits":   (64,  64,    0.5,  3.0, 0.1,     0.2,  2000,      16,  16,       [-2, -1]),
    "celebahq": (64,  512,   0.5,  3.0, 0.2,     2.0,  50_000,    8,   8,        None),
    "cub":      (256, 512,   0.5,  3.0, 0.1,     0.2,  100_000,   8,   8,        None),
    "cars":     (256, 512,   0.5,  3.0, 0.05,    0.2,  100_000,   8,   8,        None),
    "folder":   (256, 512,   0.5,  3.0, 0.1,     0.2,  100_000,   8,   8,        None),
}.items()}
# fmt: on


@dataclass(frozen=True)
class VisCoINConfig(TrainConfig):
    """`viscoin train`: f and G (frozen), Ψ/Θ/Ω sizes, the loss weights and the training budget."""

    classifier: str = ""
    generator: str = ""
    num_concepts: int = 64
    hidden: int = 64
    support_ws: list[int] | None = None
    alpha: float = 0.5
    beta: float = 3.0
    gamma_rc: float = 0.1
    delta: float = 0.2
    iterations: int = 2000
    real_batch: int = 16
    synthetic_batch: int = 16
    lr: float = 1e-4
    lpips: LpipsNet = LpipsNet.alex
    lpips_weights: str | None = None
    log_every: int = 100
    grid_every: int = 1000

    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"iterations", "log_every", "grid_every"})
    FLAGS: ClassVar[dict[str, str]] = {"num_concepts": "--concepts"}
    LENGTH: ClassVar[str | None] = "iterations"

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        return dict(PRESETS[dataset])

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        values = dict(values)
        if values.get("dataset", "digits") == "digits":  # the shipped f and G are digits' defaults
            values.setdefault("classifier", str(DEFAULT_CLASSIFIER))
            values.setdefault("generator", str(DEFAULT_GENERATOR))
        if "lpips" not in given:  # no pretrained LPIPS backbone offline: digits trains without it
            no_weights = values.get("dataset", "digits") == "digits" and values.get("lpips_weights") is None
            values["lpips"] = "none" if no_weights else "alex"
        if values["lpips"] == "none":
            values["beta"] = 0.0
        return values

    def check(self) -> None:
        if not self.classifier or not self.generator:
            raise UserError(f"--dataset {self.dataset}: --classifier and --generator are required (or --resume DIR)")
        if self.grid_every % min(self.log_every, self.grid_every):
            raise UserError("--grid-every must be a multiple of --log-every")

    @property
    def block(self) -> int:
        """Iterations between log lines and checkpoints (a grid always falls on one)."""
        return min(self.log_every, self.grid_every)


TERMS = ("fidelity", "rec_l2", "rec_l1", "rec_lpips", "rec_class", "sparsity", "orthogonality", "w_reg")


@torch.no_grad()
def test_accuracy(model: VisCoIN, loader: DataLoader, rt: Runtime) -> dict[str, float]:
    """Test accuracy of g and of f, and how often g agrees with f (no rendering needed)."""
    counts = torch.zeros(4, device=rt.device)  # g correct, f correct, agree, total
    for images, labels in loader:
        images, labels = images.to(rt.device), labels.to(rt.device)
        with rt.autocast():
            out = model.encode(images)
        g_pred, f_pred = out.logits.argmax(1), out.f_logits.argmax(1)
        counts += torch.stack(
            [
                (g_pred == labels).sum(),
                (f_pred == labels).sum(),
                (g_pred == f_pred).sum(),
                torch.tensor(len(labels), device=rt.device),
            ]
        ).float()
    g_correct, f_correct, agree, total = all_reduce_sum(counts.tolist(), rt)
    return {"g_accuracy": g_correct / total, "f_accuracy": f_correct / total, "agreement": agree / total}


def train_viscoin(cfg: VisCoINConfig, run: RunFolder, rt: Runtime, console: Console, *, resume: bool) -> dict:
    """Train Ψ, Θ, Ω as `cfg` says, writing into `run`; returns the summary the CLI prints."""
    # --- setup -----------------------------------------------------------------------------------------
    f_meta, g_meta = read_meta(cfg.classifier, kind="classifier"), read_meta(cfg.generator, kind="generator")
    data_kw = dict(
        root=cfg.data_root,
        resolution=cfg.resolution or g_meta.config["img_resolution"],
        skip_bad_images=cfg.skip_bad_images,
        bbox_crop=cfg.bbox_crop,
    )
    train_set = load_dataset(cfg.dataset, "train", augment=True, **data_kw)
    test_set = load_dataset(cfg.dataset, "test", **data_kw)
    check_compatible(f_meta, g_meta, train_set.facts())
    f, _ = load_classifier(cfg.classifier, rt.device)
    G, _ = load_generator(cfg.generator, rt.device)
    config = {"num_concepts": cfg.num_concepts, "hidden": cfg.hidden, "support_ws": cfg.support_ws}
    model = VisCoIN(f, G, config).to(rt.device)
    lpips = LPIPS(cfg.lpips, cfg.lpips_weights).to(rt.device) if cfg.lpips != "none" else None
    weights = LossWeights(cfg.alpha, cfg.beta if lpips is not None else 0.0, cfg.gamma_rc, cfg.delta)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    scaler = rt.grad_scaler()
    step = 0
    if resume:
        state = load_state(run.state, device=rt.device)
        model.trained_parts().load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        if rt.is_main:
            run.truncate_metrics("step", step)
        console.print(f"resuming {run} at iteration {step}/{cfg.iterations}")
    net = DistributedDataParallel(model) if rt.distributed else model
    n_real, n_fake = cfg.real_batch // rt.world_size, cfg.synthetic_batch // rt.world_size
    if n_real < 1:
        raise UserError(f"--real-batch {cfg.real_batch} must be at least 1 per process ({rt.world_size})")
    test_loader = DataLoader(test_set, batch_size=64, num_workers=cfg.workers)
    parents = {"classifier": parent_record(cfg.classifier), "generator": parent_record(cfg.generator)}
    facts = train_set.facts()
    block = cfg.block
    console.print(
        f"VisCoIN with K={cfg.num_concepts} concepts on {cfg.dataset} ({len(train_set)} train "
        f"images), f={f_meta.path.name}, G={g_meta.path.name} ({G.img_resolution} px, {G.num_ws} W+), "
        f"LPIPS {cfg.lpips if lpips is not None else 'off (beta = 0)'}, "
        f"{n_real}+{n_fake} images per step per process"
    )

    def save(step: int, final: bool = False) -> None:
        extra = {"iterations": step, "lpips": str(cfg.lpips), "loss_weights": weights.__dict__}
        if final:
            extra.update(accuracy)
        save_checkpoint(
            run.latest,
            model.trained_parts().state_dict(),
            kind="viscoin",
            config=model.config,
            dataset=facts,
            step=step,
            parents=parents,
            extra=extra,
        )
        save_state(
            run.state,
            {
                "model": model.trained_parts().state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
            },
            step=step,
        )

    # --- loop ------------------------------------------------------------------------------------------
    t_start = time.perf_counter()
    accuracy: dict[str, float] = {}
    record: dict[str, Any] = {}
    while step < cfg.iterations:
        steps = min(block, cfg.iterations - step)
        chunk = step // block
        seed_everything(seed_for(cfg.seed, chunk, rt.rank))
        sampler = TickBatches(len(train_set), n_real, steps, seed_for(cfg.seed, chunk, rt.rank, 1))
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=rt.device.type == "cuda",
            worker_init_fn=seed_worker,
        )
        sums = torch.zeros(len(TERMS) + 3, device=rt.device)  # terms, total, agreement, count
        t_block = time.perf_counter()
        net.train()
        with Progress(console, steps, f"iterations {step + 1}-{step + steps}") as progress:
            for i, (reals, _) in enumerate(loader):
                reals = reals.to(rt.device, non_blocking=True)
                with torch.no_grad():
                    fakes = G(torch.randn(n_fake, G.z_dim, device=rt.device), None, noise_mode="const")
                images = torch.cat([reals, fakes.float()]) if n_fake else reals
                with rt.autocast():
                    out = net(images)
                    f_logits_recon = model.f(out.recon)  # gradient flows through the frozen f into x̃
                    loss, terms = viscoin_loss(
                        images=images,
                        recon=out.recon.float(),
                        f_logits=out.f_logits.float(),
                        f_logits_recon=f_logits_recon.float(),
                        g_logits=out.logits.float(),
                        concept_maps=out.concept_maps,
                        ws=out.ws,
                        w_avg=model.omega.w_avg,
                        concept_conv=model.psi.concept_conv,
                        lpips=lpips,
                        weights=weights,
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                agree = (out.logits[: len(reals)].argmax(1) == out.f_logits[: len(reals)].argmax(1)).float().mean()
                sums += torch.stack(
                    [
                        *(terms[t].detach().float() for t in TERMS),
                        loss.detach().float(),
                        agree,
                        torch.ones((), device=rt.device),
                    ]
                )
                if i % 10 == 9 or i == steps - 1:
                    running = (sums[len(TERMS)] / sums[-1]).item()
                    if not math.isfinite(running):
                        raise UserError(
                            f"training diverged (loss {running}) near iteration {step + i + 1}; "
                            f"the last good checkpoint is in {run} (try a lower --lr)"
                        )
                    progress.advance(i + 1 - progress.done, loss=running)
        step += steps
        totals = all_reduce_sum(sums.tolist(), rt)
        count = totals[-1]
        record = {
            "step": step,
            **{t: totals[k] / count for k, t in enumerate(TERMS)},
            "loss": totals[len(TERMS)] / count,
            "train_agreement": totals[len(TERMS) + 1] / count,
            "seconds_per_iteration": (time.perf_counter() - t_block) / steps,
        }
        done = step >= cfg.iterations
        if done:
            model.eval()
            accuracy = test_accuracy(model, test_loader, rt)
            record.update(accuracy)
        if rt.is_main:
            run.log(record)
            if step % cfg.grid_every == 0 or done:
                with torch.no_grad():
                    pairs = torch.stack([images[:8].float().cpu(), out.recon[:8].detach().float().cpu()], 1)
                save_grid(pairs.flatten(0, 1), run.path / f"recon{step:07d}.png", columns=2 * min(4, len(images)))
            save(step, final=done)
        console.print(
            f"iteration {step}/{cfg.iterations}  "
            + format_metrics({k: record[k] for k in ("loss", "fidelity", "rec_l2", "rec_lpips", "train_agreement")})
        )

    summary = {
        "out": str(run.path),
        "model": str(run.latest),
        "iterations": step,
        "seconds": time.perf_counter() - t_start,
        **accuracy,
    }
    if accuracy:
        console.print(
            f"test accuracy: g {accuracy['g_accuracy']:.4f}, f {accuracy['f_accuracy']:.4f}, "
            f"agreement {accuracy['agreement']:.4f}"
        )
    return summary
