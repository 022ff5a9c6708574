"""`viscoin train`: train VisCoIN's Ψ, Θ, Ω against a frozen classifier and generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import LpipsNet
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import TRAINING_RUN, TrainingRun, grouped
from viscoin_cli.cli._training import run_training
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError

MODEL = "VisCoIN [default: the dataset's preset]"
LOG = "Logging"


@app.command("train", rich_help_panel="Train")
@grouped
def train(
    ctx: typer.Context,
    classifier: Annotated[
        Path | None,
        typer.Option(
            "--classifier", help="Classifier f (from pretrain-classifier) [default for digits: the shipped one]."
        ),
    ] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator", help="Generator G (from finetune-gan or import-gan) [default for digits: the shipped one]."
        ),
    ] = None,
    dataset: o.Dataset = "digits",
    data_root: o.DataRoot = None,
    resolution: Annotated[
        int | None, typer.Option(help="Image size [default: the generator's].", rich_help_panel=o.DATA)
    ] = None,
    skip_bad_images: o.SkipBadImages = False,
    bbox_crop: o.BboxCrop = False,
    num_concepts: Annotated[
        int | None, typer.Option("--concepts", min=2, help="Number of concepts K.", rich_help_panel=MODEL)
    ] = None,
    hidden: Annotated[int | None, typer.Option(min=1, help="Channels inside Ψ.", rich_help_panel=MODEL)] = None,
    support_ws: Annotated[
        str | None,
        typer.Option(
            "--support-ws",
            help="W+ vectors driven by the support vector γ instead of the concepts: comma-separated indices, "
            "negative from the end [default: the preset's; paper: 0,1,2,-2,-1; digits: -2,-1].",
            rich_help_panel=MODEL,
        ),
    ] = None,
    alpha: Annotated[float | None, typer.Option(min=0.0, help="Output-fidelity weight.", rich_help_panel=MODEL)] = None,
    beta: Annotated[float | None, typer.Option(min=0.0, help="LPIPS weight.", rich_help_panel=MODEL)] = None,
    gamma_rc: Annotated[
        float | None, typer.Option(min=0.0, help="Reconstruction-classification weight.", rich_help_panel=MODEL)
    ] = None,
    delta: Annotated[float | None, typer.Option(min=0.0, help="Sparsity weight.", rich_help_panel=MODEL)] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="Training iterations.", rich_help_panel=MODEL)] = None,
    real_batch: Annotated[
        int | None, typer.Option(min=1, help="Real images per iteration.", rich_help_panel=MODEL)
    ] = None,
    synthetic_batch: Annotated[
        int | None, typer.Option(min=0, help="Generated images G(z) per iteration.", rich_help_panel=MODEL)
    ] = None,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.", rich_help_panel=MODEL)] = 1e-4,
    lpips: Annotated[
        LpipsNet | None,
        typer.Option(help="LPIPS backbone [default: alex; none for digits].", rich_help_panel=MODEL),
    ] = None,
    lpips_weights: Annotated[
        Path | None,
        typer.Option(
            help="torchvision AlexNet/VGG16 weights file [default: the torch hub cache].", rich_help_panel=MODEL
        ),
    ] = None,
    log_every: Annotated[
        int, typer.Option(min=1, help="Iterations between log lines and checkpoints.", rich_help_panel=LOG)
    ] = 100,
    grid_every: Annotated[
        int, typer.Option(min=1, help="Iterations between reconstruction grids.", rich_help_panel=LOG)
    ] = 1000,
    seed: o.Seed = 0,
    run: TrainingRun = TRAINING_RUN,
) -> None:
    """Train VisCoIN: concepts Ψ, interpretable head Θ and concept translator Ω (f and G frozen).

    Loss: α·fidelity to f + reconstruction (L2 + L1 + β·LPIPS + γ_rc·CE(f(x̃), f(x))) + δ·sparsity +
    orthogonality + ‖Ω − w̄‖², with the paper's values per dataset (celebahq, cub, cars; digits: K=64, no
    LPIPS). Each iteration uses --real-batch augmented training images and --synthetic-batch G(z) images.
    The run folder gets options.json, metrics.jsonl (every loss term, agreement of g with f), recon*.png
    grids (input | reconstruction), latest.safetensors (the viscoin model) and the resume state.

    Example: viscoin train --classifier runs/f-cub/best.safetensors --generator cub-G.safetensors \\
    --dataset cub --data-root ~/data/CUB_200_2011 --out runs/viscoin-cub
    """
    from viscoin_cli.training.viscoin import VisCoINConfig, train_viscoin

    run_training(
        ctx,
        run,
        locals(),
        VisCoINConfig,
        train_viscoin,
        name="viscoin",
        parsers={"support_ws": _parse_support_ws},
        describe=lambda summary: f"model: {summary['model']}",
    )


def _parse_support_ws(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--support-ws {text!r}: expected comma-separated integers such as 0,1,2,-2,-1") from None
    if not indices:
        raise UserError(f"--support-ws {text!r}: expected at least one index")
    return indices
