"""`viscoin directions gan` (registered on `directions_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import LATENT_TRAINING_RUN, TrainingRun, grouped
from viscoin_cli.cli._training import run_training
from viscoin_cli.cli.directions import directions_app

METHOD = "Directions and reconstructor"
SHIFTS = "Shifts (ε in σ_W, W's spread per coordinate)"
OPT = "Optimisation"
MAX_DIRECTIONS = 1024  # as nets/latent_directions.py (kept here: option declarations import no torch)


@directions_app.command("gan")
@grouped
def gan(
    ctx: typer.Context,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="Generator G (from finetune-gan or import-gan), frozen [default: the shipped digits one].",
            show_default=False,
        ),
    ] = None,
    num_directions: Annotated[
        int | None,
        typer.Option(
            "--directions",
            min=2,
            max=MAX_DIRECTIONS,
            help="Number of directions K to discover (at most w_dim with --orthonormal) [default: 16 for the digits "
            "and shapes generators, else 32].",
            rich_help_panel=METHOD,
        ),
    ] = None,
    orthonormal: Annotated[
        bool,
        typer.Option(
            "--orthonormal",
            help="Keep the directions mutually orthogonal (QR), the paper's other option; default: each of unit "
            "length only.",
            rich_help_panel=METHOD,
        ),
    ] = False,
    reconstructor_width: Annotated[
        int,
        typer.Option(
            "--reconstructor-width",
            min=1,
            max=64,
            help="Width of the LeNet reconstructor R (2: classic LeNet, the paper's MNIST choice).",
            rich_help_panel=METHOD,
        ),
    ] = 2,
    shift_scale: Annotated[
        float,
        typer.Option(
            "--shift-scale",
            min=0.0,
            max=100.0,
            help="S: ε is drawn uniformly in [-S, S] (the paper's 6, in σ_W units here).",
            rich_help_panel=SHIFTS,
        ),
    ] = 6.0,
    min_shift: Annotated[
        float,
        typer.Option("--min-shift", min=0.0, help="Smallest |ε| (the paper's 0.5).", rich_help_panel=SHIFTS),
    ] = 0.5,
    iterations: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10_000_000,
            help="Training steps [default: 2500 for the digits and shapes generators, else 2000].",
            rich_help_panel=OPT,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=2,
            max=4096,
            help="Latents per step [default: 16 for the digits and shapes generators, else the paper's 32].",
            rich_help_panel=OPT,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Adam learning rate of A and R [default: 3e-3 for the digits and shapes generators, else the "
            "paper's 1e-4].",
            rich_help_panel=OPT,
        ),
    ] = None,
    eval_samples: Annotated[
        int,
        typer.Option(
            "--eval-samples",
            min=1,
            max=1_000_000,
            help="Fresh latents (never trained on) that measure R's accuracy at the end.",
            rich_help_panel=OPT,
        ),
    ] = 1024,
    log_every: Annotated[
        int, typer.Option(min=1, help="Steps between log lines and checkpoints.", rich_help_panel=OPT)
    ] = 100,
    seed: o.Seed = 0,
    run: TrainingRun = LATENT_TRAINING_RUN,
) -> None:
    """Discover interpretable directions in a generator's latent space, without labels (Voynov & Babenko 2020).

    A matrix of K directions in W (not W+: one w, the same shift on every W+ vector) and a reconstructor R train
    together against the frozen G: each step samples w = G.mapping(z) (no truncation), a direction k and a
    shift ε, renders G(w) and G(w + ε·σ_W·d_k) (constant noise), and R must tell k (cross-entropy) and ε (L1,
    weight 0.25) from the pair. Directions that change the image in distinct, recognisable ways win. ε is in
    units of σ_W, W's root-mean-square spread per coordinate (the paper's shifts are in units of its z ~ N(0, I),
    whose spread is 1). Adam, lr 1e-4, batch 32 as the paper, which trains 100 000 steps; for the small generators
    of digits and shapes the defaults are lr 3e-3, batch 16, 16 directions, 2500 steps (a CPU's budget: at lr
    1e-4 a few thousand steps barely move the directions from their random start).

    The run folder gets options.json, metrics.jsonl (loss, direction cross-entropy, ε error, accuracy),
    latest.safetensors (kind directions: A and R, with G as its parent), the resume state, strips.png (one
    row per direction: the same seeds at ε from -S to S) and summary.json with R's direction accuracy and ε
    error on held-out latents; on a dataset with attribute labels (shapes), also the directions' ground truth:
    for each attribute value, the direction (and sign) whose shift by S draws it in most of G's images that
    lack it, as an attribute probe trained on the dataset reads them (the shift test, as `compare --metrics
    ground-truth --directions` shows it).

    Example: viscoin directions gan --out runs/dirs-digits
    """
    from viscoin_cli.interpret.direction_table import truth_summary
    from viscoin_cli.training.directions import DirectionsConfig, train_directions

    run_training(
        ctx,
        run,
        locals(),
        DirectionsConfig,
        train_directions,
        name="directions-gan",
        describe=lambda summary: (
            f"direction accuracy {summary['reconstructor']['accuracy']:.4f}, ε error "
            f"{summary['reconstructor']['shift_mae']:.4f} σ_W (held out)\ndirections: {summary['directions']}\n"
            f"strips: {summary['strips']}" + "".join(f"\n{line}" for line in truth_summary(summary))
        ),
    )
