"""StyleGAN2-ADA training and fine-tuning (Karras et al. 2020), one loop from top to bottom.

Each iteration runs four phases on one real and one generated minibatch, as NVIDIA's training loop does:
    Gmain  non-saturating logistic loss for G through D(augment(G(z)))
    Greg   path-length regularisation, every `G_REG_INTERVAL` iterations (lazy regularisation)
    Dmain  logistic loss for D on augmented fakes and reals
    Dreg   R1 penalty on augmented reals (through the augmentation), every `D_REG_INTERVAL` iterations
Lazy regularisation rescales Adam's lr and betas by interval/(interval+1). The EMA generator ramps up
its half-life with the images shown. ADA adjusts the augmentation probability p from the sign of D's
outputs on reals. Training is measured in kimg (thousands of real images shown to D); a "tick" is
`tick_kimg` of them: logging, checkpoints and sample grids happen at tick boundaries, and every tick
re-seeds from (seed, tick) so that a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import load_dataset
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import load_checkpoint, load_into, load_state, save_checkpoint, save_state
from viscoin_cli.io.images import save_grid
from viscoin_cli.metrics.fid import (
    FeatureExtractor,
    InceptionFeatures,
    classifier_extractor,
    feature_statistics,
    generator_fid,
)
from viscoin_cli.nets.augment import AdaController, AugmentPipe
from viscoin_cli.nets.stylegan2 import Discriminator, Generator
from viscoin_cli.runtime import Runtime, all_reduce_sum, seed_everything, seed_for, seed_worker, unwrap
from viscoin_cli.training.run import RunFolder

G_REG_INTERVAL = 4  # path-length regularisation every 4 iterations
D_REG_INTERVAL = 16  # R1 every 16 iterations
STYLE_MIXING = 0.9  # default probability of mixing two latents in a batch (NVIDIA's; 0 for tiny data)
PL_WEIGHT, PL_DECAY, PL_BATCH_SHRINK = 2.0, 0.01, 2  # PL_WEIGHT: default, 0 turns Greg off
ADA_INTERVAL = 4  # iterations between p updates
BGC = dict(
    xflip=1,
    rotate90=1,
    xint=1,
    scale=1,
    rotate=1,
    aniso=1,
    xfrac=1,
    brightness=1,
    contrast=1,
    lumaflip=1,
    hue=1,
    saturation=1,
)


def network_kwargs(opts: dict[str, Any], resolution: int, channels: int) -> tuple[dict, dict]:
    """Generator / Discriminator constructor kwargs (NVIDIA's names) for a new GAN."""
    synthesis = dict(
        channel_base=opts["cbase"],
        channel_max=opts["cmax"],
        num_fp16_res=opts["fp16_res"],
        conv_clamp=256 if opts["fp16_res"] else None,
    )
    g_kwargs = dict(
        z_dim=opts["z_dim"],
        c_dim=0,
        w_dim=opts["w_dim"],
        img_resolution=resolution,
        img_channels=channels,
        mapping_kwargs=dict(num_layers=opts["map"]),
        synthesis_kwargs=synthesis,
    )
    d_kwargs = discriminator_kwargs_for(g_kwargs)
    d_kwargs["epilogue_kwargs"] = dict(mbstd_group_size=opts["mbstd"])
    return g_kwargs, d_kwargs


def discriminator_kwargs_for(g_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A matching unconditional resnet D for a generator config (when no discriminator comes with it)."""
    synthesis = g_kwargs.get("synthesis_kwargs", {})
    return dict(
        c_dim=0,
        img_resolution=g_kwargs["img_resolution"],
        img_channels=g_kwargs["img_channels"],
        architecture="resnet",
        channel_base=synthesis.get("channel_base", 32768),
        channel_max=synthesis.get("channel_max", 512),
        num_fp16_res=synthesis.get("num_fp16_res", 0),
        conv_clamp=synthesis.get("conv_clamp"),
    )


class TickBatches(Sampler[list[int]]):
    """The real-image indices of one tick: uniform draws seeded by (seed, tick, rank), so data order
    depends only on where training is, not on how it got there (resume-exact)."""

    def __init__(self, length: int, batch: int, steps: int, seed: int):
        self.length, self.batch, self.steps, self.seed = length, batch, steps, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            yield torch.randint(self.length, (self.batch,), generator=generator).tolist()

    def __len__(self) -> int:
        return self.steps


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(flag)


def _freeze_discriminator_blocks(D: torch.nn.Module, count: int) -> list[str]:
    """Freeze the first `count` blocks of D, from the highest resolution down (transfer learning)."""
    blocks = sorted(
        (name for name, _ in D.named_children() if name.startswith("b") and name[1:].isdigit()),
        key=lambda name: -int(name[1:]),
    )
    frozen = blocks[:count]
    for name in frozen:
        for param in getattr(D, name).parameters():
            param.requires_grad_(False)
    return frozen


@torch.no_grad()
def _update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def _adam(params, lr: float, interval: int | None) -> torch.optim.Adam:
    """Adam(0, 0.99); with lazy regularisation every `interval` steps, lr and betas are rescaled."""
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


@torch.no_grad()
def sample_grid(G_ema: torch.nn.Module, zs: torch.Tensor, path: Path, batch: int = 32) -> Path:
    images = torch.cat([G_ema(z, None, noise_mode="const").cpu() for z in zs.split(batch)])
    return save_grid(images, path, columns=math.ceil(math.sqrt(len(images))))


def _fid_setup(opts: dict[str, Any], dataset, rt: Runtime) -> tuple[FeatureExtractor | None, tuple | None]:
    """The FID feature extractor and the real images' feature statistics, when FID tracking is on."""
    if not opts.get("fid_features"):
        return None, None
    if opts["fid_features"] == "inception":
        extractor: FeatureExtractor = InceptionFeatures(opts["inception_weights"])
    else:
        extractor = classifier_extractor(opts["fid_classifier"], rt.device)
    count = min(len(dataset), opts["fid_images"])
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(opts["seed"]))[:count]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=64, num_workers=opts["workers"])
    real_stats = feature_statistics(extractor.features((images for images, _ in loader), rt.device))
    return extractor, real_stats


def train_gan(opts: dict[str, Any], run: RunFolder, rt: Runtime, console: Console, *, resume: bool) -> dict[str, Any]:
    """Train (or fine-tune) a StyleGAN2-ADA generator as `opts` says, writing into `run`."""
    # --- setup -----------------------------------------------------------------------------------------
    dataset = load_dataset(
        opts["dataset"],
        "train",
        root=opts["data_root"],
        resolution=opts["resolution"],
        skip_bad_images=opts["skip_bad_images"],
        bbox_crop=opts["bbox_crop"],
    )
    resolution, channels = dataset.resolution, dataset.channels
    if resolution < 16 or resolution & (resolution - 1):
        raise UserError(f"--resolution {resolution}: StyleGAN2 needs a power of two >= 16")
    batch = opts["batch_size"]
    if batch % (rt.world_size * opts["mbstd"]) and batch // rt.world_size >= opts["mbstd"]:
        raise UserError(
            f"--batch-size {batch} must be a multiple of processes x --mbstd ({rt.world_size}x{opts['mbstd']})"
        )
    per_rank = batch // rt.world_size
    style_mixing = opts.get("style_mixing", STYLE_MIXING)
    pl_weight = opts.get("pl_weight", PL_WEIGHT)
    gamma = opts["gamma"] if opts["gamma"] is not None else 0.0002 * resolution**2 / batch  # NVIDIA's auto gamma

    g_kwargs, d_kwargs = opts["G_kwargs"], opts["D_kwargs"]
    G, D = Generator(**g_kwargs), Discriminator(**d_kwargs)
    if (G.img_resolution, G.img_channels) != (resolution, channels):
        raise UserError(
            f"the generator makes {G.img_resolution} px images with {G.img_channels} channels but the "
            f"dataset has {resolution} px, {channels} channels (set --resolution {G.img_resolution})"
        )
    if opts["resume_from"] and not resume:
        _load_pretrained(G, D, opts, console)
    G_ema = copy.deepcopy(G).eval()
    augment = AugmentPipe(**BGC)
    ada = AdaController(target=opts["target"], ada_kimg=opts["ada_kimg"], batch_size=batch, interval=ADA_INTERVAL)
    augment.p.fill_(opts["p"] if opts["aug"] == "fixed" else 0.0)
    frozen = _freeze_discriminator_blocks(D, opts["freeze_d"]) if opts["freeze_d"] else []
    for module in (G, D, G_ema, augment):
        module.to(rt.device)
    opt_G = _adam(G.parameters(), opts["glr"], G_REG_INTERVAL if pl_weight > 0 else None)
    opt_D = _adam([p for p in D.parameters() if p.requires_grad], opts["dlr"], D_REG_INTERVAL)
    pl_mean = torch.zeros((), device=rt.device)
    cur_nimg, tick = 0, 0
    if resume:
        state = load_state(run.state, device=rt.device)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        augment.p.copy_(state["augment_p"])
        ada.load_state_dict(state["ada"])
        pl_mean.copy_(state["pl_mean"])
        cur_nimg, tick = state["cur_nimg"], state["tick"]
        if rt.is_main:
            run.truncate_metrics("tick", tick)
        console.print(f"resuming {run} at {cur_nimg / 1000:.1f} kimg (tick {tick})")
    fid_extractor, real_stats = _fid_setup(opts, dataset, rt) if rt.is_main else (None, None)
    G_ddp = DistributedDataParallel(G, broadcast_buffers=False) if rt.distributed else G
    D_ddp = DistributedDataParallel(D, broadcast_buffers=False) if rt.distributed else D
    grid_z = torch.randn(opts["grid_size"], G.z_dim, generator=torch.Generator().manual_seed(opts["seed"]))
    dataset_facts = dataset.facts()
    total_nimg = int(opts["kimg"] * 1000)
    steps_per_tick = max(1, int(opts["tick_kimg"] * 1000) // batch)
    console.print(
        f"StyleGAN2 {resolution}px ({sum(p.numel() for p in G.parameters()) / 1e6:.2f}M G, "
        f"{sum(p.numel() for p in D.parameters()) / 1e6:.2f}M D) on {opts['dataset']} "
        f"({len(dataset)} images), batch {batch}, R1 gamma {gamma:.4g}, aug {opts['aug']}"
        + (f", frozen D blocks {', '.join(frozen)}" if frozen else "")
    )

    def run_G(z: torch.Tensor, ddp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and the W+ codes that made them, with style mixing."""
        net = G_ddp if ddp else G
        mapping, synthesis = unwrap(net).mapping, unwrap(net).synthesis
        ws = mapping(z, None)
        if style_mixing > 0:
            cutoff = torch.randint(1, ws.shape[1], (), device=ws.device)
            mix = torch.rand((), device=ws.device) < style_mixing
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, ws.shape[1]))
            mixed = mapping(torch.randn_like(z), None, skip_w_avg_update=True)
            ws = torch.where(torch.arange(ws.shape[1], device=ws.device)[None, :, None] < cutoff, ws, mixed)
        return synthesis(ws), ws

    # --- loop ------------------------------------------------------------------------------------------
    t_start = time.perf_counter()
    last: dict[str, float] = {}
    while cur_nimg < total_nimg:
        seed_everything(seed_for(opts["seed"], tick, rt.rank))
        sampler = TickBatches(len(dataset), per_rank, steps_per_tick, seed_for(opts["seed"], tick, rt.rank, 1))
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=opts["workers"],
            pin_memory=rt.device.type == "cuda",
            worker_init_fn=seed_worker,
        )
        sums = torch.zeros(6, device=rt.device)  # G loss, PL, D loss fake, D loss real, R1, count
        t_tick = time.perf_counter()
        with Progress(console, steps_per_tick, f"tick {tick + 1} ({cur_nimg / 1000:.1f} kimg)") as progress:
            for step, (reals, _) in enumerate(loader):
                batch_idx = cur_nimg // batch
                reals = reals.to(rt.device, non_blocking=True)
                if opts["mirror"]:
                    flip = torch.rand(reals.shape[0], 1, 1, 1, device=rt.device) < 0.5
                    reals = torch.where(flip, reals.flip(3), reals)
                z = torch.randn(per_rank, G.z_dim, device=rt.device)

                # Gmain: make D call fakes real.
                _set_requires_grad(G, True)
                _set_requires_grad(D, False)
                opt_G.zero_grad(set_to_none=True)
                with rt.autocast():
                    fakes, _ = run_G(z)
                    loss_G = F.softplus(-D_ddp(augment(fakes), None)).mean()
                loss_G.backward()
                sums[0] += loss_G.detach()
                # Greg: path-length regularisation (lazy: weighted by the interval).
                if pl_weight > 0 and batch_idx % G_REG_INTERVAL == 0:
                    pl_batch = max(1, per_rank // PL_BATCH_SHRINK)
                    fakes, ws = run_G(z[:pl_batch])
                    noise = torch.randn_like(fakes) / math.sqrt(fakes.shape[2] * fakes.shape[3])
                    (pl_grads,) = torch.autograd.grad((fakes * noise).sum(), ws, create_graph=True)
                    pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
                    pl_mean.copy_(pl_mean.lerp(pl_lengths.mean().detach(), PL_DECAY))
                    pl_penalty = (pl_lengths - pl_mean).square()
                    (fakes[:, 0, 0, 0] * 0 + pl_penalty * pl_weight).mean().mul(G_REG_INTERVAL).backward()
                    sums[1] += pl_penalty.mean().detach()
                opt_G.step()

                # Dmain: tell augmented reals from augmented fakes.
                _set_requires_grad(G, False)
                for param in D.parameters():
                    param.requires_grad_(True)
                for name in frozen:
                    _set_requires_grad(getattr(D, name), False)
                opt_D.zero_grad(set_to_none=True)
                with torch.no_grad():
                    fakes, _ = run_G(z, ddp=False)
                with rt.autocast():
                    fake_logits = D_ddp(augment(fakes), None)
                    real_logits = D_ddp(augment(reals), None)
                    loss_D_fake = F.softplus(fake_logits).mean()
                    loss_D_real = F.softplus(-real_logits).mean()
                (loss_D_fake + loss_D_real).backward()
                ada.accumulate(real_logits.detach())
                sums[2] += loss_D_fake.detach()
                sums[3] += loss_D_real.detach()
                # Dreg: R1 on the reals, through the augmentation (needs its double backward).
                if batch_idx % D_REG_INTERVAL == 0:
                    reals_r1 = reals.detach().requires_grad_(True)
                    r1_logits = D_ddp(augment(reals_r1), None)
                    (r1_grads,) = torch.autograd.grad(r1_logits.sum(), reals_r1, create_graph=True)
                    r1_penalty = r1_grads.square().sum([1, 2, 3])
                    (r1_logits * 0 + r1_penalty * (gamma / 2)).mean().mul(D_REG_INTERVAL).backward()
                    sums[4] += r1_penalty.mean().detach()
                opt_D.step()

                # EMA generator, with its half-life ramped up over the first images.
                cur_nimg += batch
                ema_nimg = opts["ema_kimg"] * 1000
                if opts["ema_rampup"]:
                    ema_nimg = min(ema_nimg, cur_nimg * opts["ema_rampup"])
                _update_ema(G_ema, G, 0.5 ** (batch / max(ema_nimg, 1e-8)))
                # ADA: nudge p toward the target overfitting heuristic r_t.
                if opts["aug"] == "ada" and (batch_idx + 1) % ADA_INTERVAL == 0:
                    augment.p.copy_(ada.update(augment.p, reduce=lambda t: all_reduce_sum(t, rt)))
                sums[5] += 1
                if step % 10 == 9 or step == steps_per_tick - 1:
                    loss_now = (sums[0] / sums[5]).item()
                    if not math.isfinite(loss_now):
                        raise UserError(
                            f"training diverged (G loss {loss_now}) at {cur_nimg / 1000:.1f} kimg; "
                            f"the last good checkpoint is in {run}"
                        )
                    progress.advance(step + 1 - progress.done, G=loss_now, p=float(augment.p))
                if cur_nimg >= total_nimg:
                    break

        # --- tick: log, checkpoint, grid ---------------------------------------------------------------
        tick += 1
        seconds = time.perf_counter() - t_tick
        n = max(sums[5].item(), 1.0)
        g_steps = math.ceil(n / G_REG_INTERVAL)
        d_steps = math.ceil(n / D_REG_INTERVAL)
        last = {
            "tick": tick,
            "kimg": cur_nimg / 1000,
            "loss_G": sums[0].item() / n,
            "loss_pl": sums[1].item() / g_steps,
            "loss_D_fake": sums[2].item() / n,
            "loss_D_real": sums[3].item() / n,
            "loss_r1": sums[4].item() / d_steps,
            "p": float(augment.p),
            "r_t": ada.last_rt,
            "pl_mean": pl_mean.item(),
            "sec_per_kimg": seconds / max(n * batch / 1000, 1e-9),
            "kimg_per_sec": n * batch / 1000 / seconds,
        }
        done = cur_nimg >= total_nimg
        snapshot = tick % opts["snap"] == 0 or done
        if snapshot and fid_extractor is not None:  # only rank 0 has an extractor
            last["fid"] = generator_fid(
                G_ema, fid_extractor, real_stats, opts["fid_images"], opts["seed"], device=rt.device
            )
            last["fid_features"] = fid_extractor.label
        if rt.is_main:
            run.log(last)
            meta = dict(
                kind="generator",
                config=g_kwargs,
                dataset=dataset_facts,
                step=cur_nimg,
                extra={"kimg": cur_nimg / 1000, "discriminator": "latest.D.safetensors"},
            )
            save_checkpoint(
                run.path / "latest.D.safetensors",
                D.state_dict(),
                kind="discriminator",
                config=d_kwargs,
                dataset=dataset_facts,
                step=cur_nimg,
                extra={"augment_p": float(augment.p)},
            )
            save_checkpoint(run.latest, G_ema.state_dict(), **meta)
            save_state(
                run.state,
                {
                    "G": G.state_dict(),
                    "D": D.state_dict(),
                    "G_ema": G_ema.state_dict(),
                    "opt_G": opt_G.state_dict(),
                    "opt_D": opt_D.state_dict(),
                    "augment_p": augment.p,
                    "ada": ada.state_dict(),
                    "pl_mean": pl_mean,
                    "cur_nimg": cur_nimg,
                    "tick": tick,
                },
                step=cur_nimg,
            )
            if snapshot:
                kimg_tag = f"{cur_nimg // 1000:06d}"
                sample_grid(G_ema, grid_z.to(rt.device), run.path / f"fakes{kimg_tag}.png")
                if opts["keep_snapshots"]:
                    save_checkpoint(run.path / f"network-snapshot-{kimg_tag}.safetensors", G_ema.state_dict(), **meta)
        console.print(
            f"tick {tick}  kimg {cur_nimg / 1000:.1f}  "
            + format_metrics({k: v for k, v in last.items() if k not in ("tick", "kimg")})
        )

    return {
        "out": str(run.path),
        "generator": str(run.latest),
        "kimg": cur_nimg / 1000,
        "seconds": time.perf_counter() - t_start,
        "last": last,
    }


def _load_pretrained(G: torch.nn.Module, D: torch.nn.Module, opts: dict[str, Any], console: Console) -> None:
    """Start from an imported or earlier generator (and its discriminator, when there is one)."""
    tensors, meta = load_checkpoint(opts["resume_from"], kind="generator")
    load_into(G, tensors, meta.path)
    console.print(f"generator weights from {meta.path}")
    if opts["discriminator"]:
        d_tensors, d_meta = load_checkpoint(opts["discriminator"], kind="discriminator")
        load_into(D, d_tensors, d_meta.path)
        console.print(f"discriminator weights from {d_meta.path}")
    else:
        console.print("no discriminator comes with this generator: D starts from scratch")
