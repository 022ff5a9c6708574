"""`viscoin train`: train VisCoIN's Ψ, Θ, Ω against a frozen classifier and generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_CLASSIFIER, DEFAULT_GENERATOR

MODEL = "VisCoIN [default: the dataset's preset]"
LOG = "Logging"


@app.command("train", rich_help_panel="Train")
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
    concepts: Annotated[int | None, typer.Option(min=2, help="Number of concepts K.", rich_help_panel=MODEL)] = None,
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
        str | None,
        typer.Option(help="LPIPS backbone: alex, vgg or none [default: alex; none for digits].", rich_help_panel=MODEL),
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
    """Train VisCoIN: concepts Ψ, interpretable head Θ and concept translator Ω (f and G frozen).

    Loss: α·fidelity to f + reconstruction (L2 + L1 + β·LPIPS + γ_rc·CE(f(x̃), f(x))) + δ·sparsity +
    orthogonality + ‖Ω − w̄‖², with the paper's values per dataset (celebahq, cub, cars; digits: K=64, no
    LPIPS). Each iteration uses --real-batch augmented training images and --synthetic-batch G(z) images.
    The run folder gets options.json, metrics.jsonl (every loss term, agreement of g with f), recon*.png
    grids (input | reconstruction), latest.safetensors (the viscoin model) and the resume state.

    Example: viscoin train --classifier runs/f-cub/best.safetensors --generator cub-G.safetensors \\
    --dataset cub --data-root ~/data/CUB_200_2011 --out runs/viscoin-cub
    """
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.data import DATASET_NAMES
    from viscoin_cli.runtime import setup_runtime, shutdown_runtime
    from viscoin_cli.training.run import open_run
    from viscoin_cli.training.viscoin import PRESETS, train_viscoin

    given = o.explicit_options(ctx)
    if resume is not None:
        opts = o.resumed_options(
            resume, given, {"iterations", "log_every", "grid_every"}, names={"concepts": "num_concepts"}
        )
        dataset = opts["dataset"]
    else:
        if dataset == "digits":
            classifier, generator = classifier or DEFAULT_CLASSIFIER, generator or DEFAULT_GENERATOR
        if classifier is None or generator is None:
            raise UserError(f"--dataset {dataset}: --classifier and --generator are required (or --resume DIR)")
    if dataset not in DATASET_NAMES:
        raise UserError(f"--dataset {dataset!r}: expected one of {', '.join(DATASET_NAMES)}")
    lpips = lpips or ("none" if dataset == "digits" and lpips_weights is None else "alex")
    if lpips not in ("alex", "vgg", "none"):
        raise UserError(f"--lpips {lpips!r}: expected alex, vgg or none")

    rt = setup_runtime(device=device, precision=precision, seed=seed if resume is None else opts["seed"])
    console = make_console(quiet=quiet, enabled=rt.is_main)
    try:
        run, resuming = open_run(rt, out=out, resume=resume, force=force, default_name=f"viscoin-{dataset}")
        if not resuming:
            preset = PRESETS[dataset]
            pick = lambda value, key: preset[key] if value is None else value  # noqa: E731
            opts = {
                "classifier": str(classifier),
                "generator": str(generator),
                "dataset": dataset,
                "data_root": str(data_root) if data_root else None,
                "resolution": resolution,
                "skip_bad_images": skip_bad_images,
                "bbox_crop": bbox_crop,
                "num_concepts": pick(concepts, "num_concepts"),
                "hidden": pick(hidden, "hidden"),
                "support_ws": _parse_support_ws(support_ws) if support_ws is not None else preset["support_ws"],
                "alpha": pick(alpha, "alpha"),
                "beta": pick(beta, "beta") if lpips != "none" else 0.0,
                "gamma_rc": pick(gamma_rc, "gamma_rc"),
                "delta": pick(delta, "delta"),
                "iterations": pick(iterations, "iterations"),
                "real_batch": pick(real_batch, "real_batch"),
                "synthetic_batch": pick(synthetic_batch, "synthetic_batch"),
                "lr": lr,
                "lpips": lpips,
                "lpips_weights": str(lpips_weights) if lpips_weights else None,
                "log_every": log_every,
                "grid_every": grid_every,
                "seed": seed,
            }
        opts["log_every"] = min(opts["log_every"], opts["grid_every"])
        if opts["grid_every"] % opts["log_every"]:
            raise UserError("--grid-every must be a multiple of --log-every")
        opts["workers"] = o.default_workers(dataset, workers)
        opts.update(device=str(rt.device), precision=precision, world_size=rt.world_size)
        if rt.is_main:
            run.write_options(opts)
        if opts["lpips"] == "none":
            console.print("LPIPS off: beta = 0 (pass --lpips alex with its weights to use it)")
        summary = train_viscoin(opts, run, rt, console, resume=resuming)
    finally:
        shutdown_runtime(rt)
    if not rt.is_main:
        return
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"model: {summary['model']}")


def _parse_support_ws(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--support-ws {text!r}: expected comma-separated integers such as 0,1,2,-2,-1") from None
    if not indices:
        raise UserError(f"--support-ws {text!r}: expected at least one index")
    return indices
