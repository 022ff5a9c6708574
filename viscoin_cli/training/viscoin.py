"""Training VisCoIN's Ψ, Θ, Ω against a frozen classifier f and generator G (METHOD.md).

Every iteration takes n real training images (augmented) and n synthetic ones G(z) (no gradient, no
truncation): synthetic images need no label because the fidelity loss only asks g to agree with f.
All images are [-1, 1] for f, G, LPIPS and the pixel losses alike. Checkpoints, logs and grids happen at
multiples of `log_every`; each such block of iterations re-seeds from (seed, block), so a resumed run
draws the same data and noise as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

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
from viscoin_cli.training.gan import TickBatches
from viscoin_cli.training.losses import LossWeights, viscoin_loss
from viscoin_cli.training.run import RunFolder

# METHOD.md's table; digits: small K and hidden width, a budget that trains in minutes on a CPU.
# support_ws: the W+ vectors fed by the support vector γ (None: the paper's first 3 and last 2 of 14 at
# 256 px). At 32 px there are 8 and the first 3 already fix a digit's shape, so with the paper's choice the
# concepts drove only the middle three and zeroing them barely changed the render (measured on digits:
# faithfulness median at τ=0.2 only 4.4x its random baseline). On digits γ keeps just the last two.
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


def train_viscoin(opts: dict[str, Any], run: RunFolder, rt: Runtime, console: Console, *, resume: bool) -> dict:
    """Train Ψ, Θ, Ω as `opts` says, writing into `run`; returns the summary the CLI prints."""
    # --- setup -----------------------------------------------------------------------------------------
    f_meta, g_meta = read_meta(opts["classifier"], kind="classifier"), read_meta(opts["generator"], kind="generator")
    data_kw = dict(
        root=opts["data_root"],
        resolution=opts["resolution"] or g_meta.config["img_resolution"],
        skip_bad_images=opts["skip_bad_images"],
        bbox_crop=opts["bbox_crop"],
    )
    train_set = load_dataset(opts["dataset"], "train", augment=True, **data_kw)
    test_set = load_dataset(opts["dataset"], "test", **data_kw)
    check_compatible(f_meta, g_meta, train_set.facts())
    f, _ = load_classifier(opts["classifier"], rt.device)
    G, _ = load_generator(opts["generator"], rt.device)
    config = {"num_concepts": opts["num_concepts"], "hidden": opts["hidden"], "support_ws": opts.get("support_ws")}
    model = VisCoIN(f, G, config).to(rt.device)
    lpips = LPIPS(opts["lpips"], opts["lpips_weights"]).to(rt.device) if opts["lpips"] != "none" else None
    weights = LossWeights(opts["alpha"], opts["beta"] if lpips is not None else 0.0, opts["gamma_rc"], opts["delta"])
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=opts["lr"])
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
        console.print(f"resuming {run} at iteration {step}/{opts['iterations']}")
    net = DistributedDataParallel(model) if rt.distributed else model
    n_real, n_fake = opts["real_batch"] // rt.world_size, opts["synthetic_batch"] // rt.world_size
    if n_real < 1:
        raise UserError(f"--real-batch {opts['real_batch']} must be at least 1 per process ({rt.world_size})")
    test_loader = DataLoader(test_set, batch_size=64, num_workers=opts["workers"])
    parents = {"classifier": parent_record(opts["classifier"]), "generator": parent_record(opts["generator"])}
    facts = train_set.facts()
    block = opts["log_every"]
    console.print(
        f"VisCoIN with K={opts['num_concepts']} concepts on {opts['dataset']} ({len(train_set)} train "
        f"images), f={f_meta.path.name}, G={g_meta.path.name} ({G.img_resolution} px, {G.num_ws} W+), "
        f"LPIPS {opts['lpips'] if lpips is not None else 'off (beta = 0)'}, "
        f"{n_real}+{n_fake} images per step per process"
    )

    def save(step: int, final: bool = False) -> None:
        extra = {"iterations": step, "lpips": opts["lpips"], "loss_weights": weights.__dict__}
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
    while step < opts["iterations"]:
        steps = min(block, opts["iterations"] - step)
        chunk = step // block
        seed_everything(seed_for(opts["seed"], chunk, rt.rank))
        sampler = TickBatches(len(train_set), n_real, steps, seed_for(opts["seed"], chunk, rt.rank, 1))
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=opts["workers"],
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
        done = step >= opts["iterations"]
        if done:
            model.eval()
            accuracy = test_accuracy(model, test_loader, rt)
            record.update(accuracy)
        if rt.is_main:
            run.log(record)
            if step % opts["grid_every"] == 0 or done:
                with torch.no_grad():
                    pairs = torch.stack([images[:8].float().cpu(), out.recon[:8].detach().float().cpu()], 1)
                save_grid(pairs.flatten(0, 1), run.path / f"recon{step:07d}.png", columns=2 * min(4, len(images)))
            save(step, final=done)
        console.print(
            f"iteration {step}/{opts['iterations']}  "
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
