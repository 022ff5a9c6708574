"""`viscoin finetune-gan`: train StyleGAN2-ADA from scratch or fine-tune an imported generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import Augment, FidFeatures
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import TRAINING_DATA, TRAINING_RUN, TrainingData, TrainingRun, grouped
from viscoin_cli.cli._training import run_training
from viscoin_cli.cli.app import app

NET = "Networks [default: the dataset's preset; with --resume-from, the checkpoints']"
OPT = "Optimisation [default: the dataset's preset]"
ADA = "Augmentation (ADA)"
LOG = "Logging and snapshots"
FID = "FID tracking"


@app.command("finetune-gan", rich_help_panel="Generator")
@grouped
def finetune_gan(
    ctx: typer.Context,
    data: TrainingData = TRAINING_DATA,
    mirror: Annotated[
        bool, typer.Option("--mirror", help="Random x-flips of the real images.", rich_help_panel=o.DATA)
    ] = False,
    pool: Annotated[
        bool,
        typer.Option(
            "--pool",
            help="shapes only: train on 50 000 fresh draws of the shapes dataset (seeded apart from its train "
            "and test splits) instead of its 4000-image train split; with that many reals D cannot memorise "
            "them, so --aug noaug goes with it.",
            rich_help_panel=o.DATA,
        ),
    ] = False,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            "--resume-from",
            help="Fine-tune this generator checkpoint (e.g. from import-gan). The network options given change the "
            "networks: tensors whose name and shape still match are copied, the others start fresh.",
            rich_help_panel=NET,
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
    map: Annotated[
        int | None,
        typer.Option("--map", min=1, help="Mapping network depth (the paper fine-tunes with 2).", rich_help_panel=NET),
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
    aug: Annotated[
        Augment, typer.Option(help="ada (adaptive p), fixed (--p) or noaug.", rich_help_panel=ADA)
    ] = Augment.ada,
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
    xflip_strength: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Multiplier of the x-flip probability among the augmentations (NVIDIA's xflip; 1: 'bgc', "
            "0: no x-flips; the paper uses 0.1 for Stanford Cars).",
            rich_help_panel=ADA,
        ),
    ] = 1.0,
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
        FidFeatures | None,
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
    compile: o.Compile = False,
    seed: o.Seed = 0,
    run: TrainingRun = TRAINING_RUN,
) -> None:
    """Train a StyleGAN2-ADA generator on a dataset, or fine-tune one (transfer learning).

    Non-saturating logistic loss, lazy R1 (every 16 minibatches) and path-length (every 4) regularisation,
    each its own optimiser step as in NVIDIA's code, style mixing (path length and style mixing are off in
    the digits preset), EMA generator, Adam(0, 0.99), and ADA's 'bgc' augmentation with p steered toward
    --target. Fine-tuning (--resume-from) builds the networks the options ask for (the checkpoints' own
    unless --map, --cbase, --cmax or --mbstd say otherwise) and copies every tensor whose name and shape
    match, as NVIDIA's resume does; it prints which start fresh. The run folder gets options.json,
    metrics.jsonl (losses, p, r_t, kimg/s), fakes*.png grids, latest.safetensors (the EMA generator, what
    `train` and `generate` use), latest.D.safetensors and the resume state. Multi-GPU: torchrun
    --nproc_per_node=N $(which viscoin) finetune-gan ...

    Examples:
      viscoin finetune-gan --dataset digits                    # recognisable digits on a CPU
      viscoin import-gan lsuncar.pkl lsuncar.safetensors
      viscoin finetune-gan --dataset cars --data-root ~/data/cars --resume-from lsuncar.safetensors --map 2 \\
          --xflip-strength 0.1 --mirror
    """
    from viscoin_cli.training.gan import GanConfig, prepare_networks, train_gan

    run_training(
        ctx,
        run,
        locals(),
        GanConfig,
        train_gan,
        name="gan",
        prepare=prepare_networks,
        describe=lambda summary: (
            f"{summary['kimg']:.1f} kimg in {summary['seconds']:.0f}s\ngenerator: {summary['generator']}"
        ),
    )
