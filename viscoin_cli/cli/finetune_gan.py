"""`viscoin finetune-gan`: train StyleGAN2-ADA from scratch or fine-tune an imported generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError

NET = "Networks [default: the dataset's preset]"
OPT = "Optimisation [default: the dataset's preset]"
ADA = "Augmentation (ADA)"
LOG = "Logging and snapshots"
FID = "FID tracking"
FID_OPTIONS = ("fid_features", "fid_classifier", "inception_weights", "fid_images")

# digits: a small generator that learns recognisable digits on a 2-core CPU in ~20 minutes. Batch 16 (twice
# the steps of 32 for the same time), 32 channels, a minibatch-std group of 8 so D sees the variety of a
# batch, faster ADA for the 1437 images, and no path-length regularisation or style mixing (NVIDIA's
# small-image 'cifar' choice). Real data: NVIDIA's 'auto' configuration at 256 px with the paper's batch
# of 16 and ~2M real images shown (2000 kimg).
PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(
        z_dim=128,
        w_dim=128,
        map=2,
        cbase=2048,
        cmax=32,
        fp16_res=0,
        mbstd=8,
        batch_size=16,
        glr=0.0025,
        dlr=0.0025,
        ema_kimg=10.0,
        style_mixing=0.0,
        pl_weight=0.0,
        kimg=100.0,
        tick_kimg=2.0,
        snap=5,
        ada_kimg=50,
    ),
    "default": dict(
        z_dim=512,
        w_dim=512,
        map=2,
        cbase=16384,
        cmax=512,
        fp16_res=4,
        mbstd=4,
        batch_size=16,
        glr=0.0025,
        dlr=0.0025,
        ema_kimg=5.0,
        style_mixing=0.9,
        pl_weight=2.0,
        kimg=2000.0,
        tick_kimg=4.0,
        snap=50,
        ada_kimg=500,
    ),
}
TRANSFER_ADA_KIMG = 100  # faster p adaptation when fine-tuning (issue: transfer learning preset)


@app.command("finetune-gan", rich_help_panel="Generator")
def finetune_gan(
    ctx: typer.Context,
    dataset: o.Dataset = "digits",
    data_root: o.DataRoot = None,
    resolution: o.Resolution = None,
    skip_bad_images: o.SkipBadImages = False,
    bbox_crop: o.BboxCrop = False,
    mirror: Annotated[
        bool, typer.Option("--mirror", help="Random x-flips of the real images.", rich_help_panel=o.DATA)
    ] = False,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            "--resume-from", help="Fine-tune this generator checkpoint (e.g. from import-gan).", rich_help_panel=NET
        ),
    ] = None,
    discriminator: Annotated[
        Path | None,
        typer.Option(
            help="Discriminator to fine-tune with it [default: the one imported beside it].", rich_help_panel=NET
        ),
    ] = None,
    freeze_d: Annotated[
        int,
        typer.Option("--freeze-d", min=0, help="Freeze D's first N blocks (highest res first).", rich_help_panel=NET),
    ] = 0,
    cbase: Annotated[
        int | None,
        typer.Option(min=1, help="Channel base (channels at res r: min(cbase/r, cmax)).", rich_help_panel=NET),
    ] = None,
    cmax: Annotated[int | None, typer.Option(min=1, help="Maximum channels per layer.", rich_help_panel=NET)] = None,
    map_layers: Annotated[
        int | None, typer.Option("--map", min=1, help="Mapping network depth.", rich_help_panel=NET)
    ] = None,
    mbstd: Annotated[
        int | None,
        typer.Option(min=1, help="D's minibatch-std group size (divides the per-GPU batch).", rich_help_panel=NET),
    ] = None,
    kimg: Annotated[
        float | None, typer.Option(min=0.001, help="Training length in thousands of real images.", rich_help_panel=OPT)
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Global batch size.", rich_help_panel=OPT)] = None,
    gamma: Annotated[
        float | None, typer.Option(min=0.0, help="R1 weight [default: 0.0002·res²/batch].", rich_help_panel=OPT)
    ] = None,
    glr: Annotated[float | None, typer.Option(min=0.0, help="Generator learning rate.", rich_help_panel=OPT)] = None,
    dlr: Annotated[
        float | None, typer.Option(min=0.0, help="Discriminator learning rate.", rich_help_panel=OPT)
    ] = None,
    ema_kimg: Annotated[
        float | None, typer.Option(min=0.0, help="Half-life of the EMA generator in kimg.", rich_help_panel=OPT)
    ] = None,
    style_mixing: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Probability of mixing two latents in a batch.", rich_help_panel=OPT),
    ] = None,
    pl_weight: Annotated[
        float | None, typer.Option(min=0.0, help="Path-length regularisation weight (0: off).", rich_help_panel=OPT)
    ] = None,
    aug: Annotated[str, typer.Option(help="ada (adaptive p), fixed (--p) or noaug.", rich_help_panel=ADA)] = "ada",
    p: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Augmentation probability for --aug fixed.", rich_help_panel=ADA)
    ] = 0.2,
    target: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="ADA target for r_t = E[sign(D(real))].", rich_help_panel=ADA)
    ] = 0.6,
    ada_kimg: Annotated[
        int | None,
        typer.Option(
            min=1, help="kimg for p to go 0 -> 1 [default: 100 when fine-tuning, else 500].", rich_help_panel=ADA
        ),
    ] = None,
    tick_kimg: Annotated[
        float | None, typer.Option(min=0.001, help="kimg per tick (log line + checkpoint).", rich_help_panel=LOG)
    ] = None,
    snap: Annotated[
        int | None, typer.Option(min=1, help="Ticks between sample grids (and snapshots).", rich_help_panel=LOG)
    ] = None,
    keep_snapshots: Annotated[
        bool, typer.Option(help="Keep network-snapshot-KIMG.safetensors at every grid.", rich_help_panel=LOG)
    ] = False,
    grid_size: Annotated[int, typer.Option(min=1, help="Images in each sample grid.", rich_help_panel=LOG)] = 64,
    fid_features: Annotated[
        str | None,
        typer.Option(
            help="Track FID at every sample grid: classifier (features of --fid-classifier, offline) or "
            "inception (the standard network, pytorch-fid's weights file) [default: off].",
            rich_help_panel=FID,
        ),
    ] = None,
    fid_classifier: Annotated[
        Path | None,
        typer.Option(help="Classifier checkpoint whose features --fid-features classifier uses.", rich_help_panel=FID),
    ] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(help="pt_inception-2015-12-05-6726825d.pth [default: the torch hub cache].", rich_help_panel=FID),
    ] = None,
    fid_images: Annotated[
        int, typer.Option(min=2, help="Generated images per FID (reals: up to as many).", rich_help_panel=FID)
    ] = 2000,
    out: o.Out = None,
    resume: o.Resume = None,
    force: o.Force = False,
    device: o.Device = "auto",
    seed: o.Seed = 0,
    precision: o.Precision = "fp32",
    workers: o.Workers = None,
    quiet: o.Quiet = False,
    json_out: o.Json = False,
) -> None:
    """Train a StyleGAN2-ADA generator on a dataset, or fine-tune one (transfer learning).

    Non-saturating logistic loss, lazy R1 (every 16 steps) and path-length (every 4) regularisation, style
    mixing (both off in the digits preset), EMA generator, Adam(0, 0.99), and ADA's 'bgc' augmentation
    with p steered toward --target. The run folder gets options.json, metrics.jsonl (losses, p, r_t,
    kimg/s), fakes*.png grids, latest.safetensors (the EMA generator, what `train` and `generate` use),
    latest.D.safetensors and the resume state. Multi-GPU: torchrun --nproc_per_node=N $(which viscoin) finetune-gan ...

    Examples:
      viscoin finetune-gan --dataset digits                    # recognisable digits on a CPU
      viscoin import-gan lsuncar.pkl lsuncar.safetensors
      viscoin finetune-gan --dataset cars --data-root ~/data/cars --resume-from lsuncar.safetensors --mirror
    """
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.data import DATASET_NAMES
    from viscoin_cli.runtime import setup_runtime, shutdown_runtime
    from viscoin_cli.training.gan import train_gan
    from viscoin_cli.training.run import open_run

    given = o.explicit_options(ctx)
    if resume is not None:
        resumable = {"kimg", "snap", "tick_kimg", "keep_snapshots"} | set(FID_OPTIONS)
        opts = o.resumed_options(resume, given, resumable, names={"map_layers": "map"})
        dataset = opts.get("dataset", dataset)
    architecture = sorted(f"--{k.replace('_layers', '')}" for k in ("cbase", "cmax", "map_layers") if k in given)
    if resume_from is not None and architecture:
        raise UserError(f"{', '.join(architecture)}: a fine-tuned generator keeps the architecture of --resume-from")
    if dataset not in DATASET_NAMES:
        raise UserError(f"--dataset {dataset!r}: expected one of {', '.join(DATASET_NAMES)}")
    if aug not in ("ada", "fixed", "noaug"):
        raise UserError(f"--aug {aug!r}: expected ada, fixed or noaug")
    fid = {"fid_features": fid_features, "fid_classifier": fid_classifier, "inception_weights": inception_weights}
    fid = {k: str(v) if isinstance(v, Path) else v for k, v in fid.items()} | {"fid_images": fid_images}
    if resume is not None:
        fid = {k: opts.get(k, v) for k, v in fid.items()}
    if fid["fid_features"] not in (None, "classifier", "inception"):
        raise UserError(f"--fid-features {fid['fid_features']!r}: expected classifier or inception")
    if fid["fid_features"] == "classifier" and not fid["fid_classifier"]:
        raise UserError("--fid-features classifier needs --fid-classifier PATH (a pretrain-classifier checkpoint)")

    rt = setup_runtime(device=device, precision=precision, seed=seed if resume is None else opts.get("seed", seed))
    console = make_console(quiet=quiet, enabled=rt.is_main)
    try:
        run, resuming = open_run(rt, out=out, resume=resume, force=force, default_name=f"gan-{dataset}")
        if not resuming:
            preset = PRESETS["digits" if dataset == "digits" else "default"]
            pick = lambda value, key: preset[key] if value is None else value  # noqa: E731
            opts = {
                "dataset": dataset,
                "data_root": str(data_root) if data_root else None,
                "resolution": resolution,
                "skip_bad_images": skip_bad_images,
                "bbox_crop": bbox_crop,
                "mirror": mirror,
                "resume_from": str(resume_from) if resume_from else None,
                "discriminator": str(discriminator) if discriminator else None,
                "freeze_d": freeze_d,
                "z_dim": preset["z_dim"],
                "w_dim": preset["w_dim"],
                "map": pick(map_layers, "map"),
                "cbase": pick(cbase, "cbase"),
                "cmax": pick(cmax, "cmax"),
                "fp16_res": preset["fp16_res"],
                "mbstd": pick(mbstd, "mbstd"),
                "kimg": pick(kimg, "kimg"),
                "batch_size": pick(batch_size, "batch_size"),
                "gamma": gamma,
                "glr": pick(glr, "glr"),
                "dlr": pick(dlr, "dlr"),
                "ema_kimg": pick(ema_kimg, "ema_kimg"),
                "ema_rampup": 0.05,
                "style_mixing": pick(style_mixing, "style_mixing"),
                "pl_weight": pick(pl_weight, "pl_weight"),
                "aug": aug,
                "p": p,
                "target": target,
                "ada_kimg": ada_kimg or (TRANSFER_ADA_KIMG if resume_from else preset["ada_kimg"]),
                "tick_kimg": pick(tick_kimg, "tick_kimg"),
                "snap": pick(snap, "snap"),
                "keep_snapshots": keep_snapshots,
                "grid_size": grid_size,
                "seed": seed,
            }
            opts["G_kwargs"], opts["D_kwargs"] = _network_kwargs(opts, dataset)
        opts.update(fid)
        opts["workers"] = o.default_workers(dataset, workers)
        opts.update(device=str(rt.device), precision=precision, world_size=rt.world_size)
        if rt.is_main:
            run.write_options(opts)
        summary = train_gan(opts, run, rt, console, resume=resuming)
    finally:
        shutdown_runtime(rt)
    if not rt.is_main:
        return
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"{summary['kimg']:.1f} kimg in {summary['seconds']:.0f}s\ngenerator: {summary['generator']}")


def _network_kwargs(opts: dict[str, Any], dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """G and D constructor kwargs: the preset's for a new GAN, the checkpoints' own when fine-tuning."""
    from viscoin_cli.data import DEFAULT_RESOLUTION
    from viscoin_cli.io.checkpoint import read_meta
    from viscoin_cli.training.gan import discriminator_kwargs_for, network_kwargs

    if not opts["resume_from"]:
        return network_kwargs(opts, opts["resolution"] or DEFAULT_RESOLUTION[dataset], 3)
    g_meta = read_meta(opts["resume_from"], kind="generator")
    d_path = opts["discriminator"]
    if d_path is None and g_meta.extra.get("discriminator"):
        sibling = g_meta.path.parent / g_meta.extra["discriminator"]
        d_path = str(sibling) if sibling.is_file() else None
    opts["discriminator"] = d_path
    if opts["resolution"] is None:
        opts["resolution"] = g_meta.config["img_resolution"]
    d_kwargs = read_meta(d_path, kind="discriminator").config if d_path else discriminator_kwargs_for(g_meta.config)
    return g_meta.config, d_kwargs
