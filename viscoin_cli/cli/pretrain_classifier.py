"""`viscoin pretrain-classifier`: train the classifier f that VisCoIN explains."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError

MODEL = "Model and optimisation [default: the dataset's preset]"


def _parse_milestones(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        steps = sorted(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--lr-steps {text!r}: expected comma-separated epochs like 30,60 or none") from None
    if any(step < 1 for step in steps):
        raise UserError(f"--lr-steps {text!r}: epochs start at 1")
    return steps


@app.command("pretrain-classifier", rich_help_panel="Train")
def pretrain_classifier(
    ctx: typer.Context,
    dataset: o.Dataset = "digits",
    data_root: o.DataRoot = None,
    resolution: o.Resolution = None,
    skip_bad_images: o.SkipBadImages = False,
    bbox_crop: o.BboxCrop = False,
    arch: Annotated[str | None, typer.Option(help="resnet18, resnet34 or resnet50.", rich_help_panel=MODEL)] = None,
    width: Annotated[
        int | None,
        typer.Option(min=1, help="Channels of layer1 (64 = standard ResNet).", rich_help_panel=MODEL),
    ] = None,
    stem: Annotated[
        str | None,
        typer.Option(
            help="imagenet (7x7 stride-2 conv + max-pool) or small (3x3 conv, for ~32 px).", rich_help_panel=MODEL
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Initial weights: imagenet (torchvision's file from the torch hub cache), none, or a path "
            "(.pth state dict or .safetensors).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs.", rich_help_panel=MODEL)] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=2, help="Global batch size (split over torchrun processes).", rich_help_panel=MODEL),
    ] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Learning rate.", rich_help_panel=MODEL)] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam or sgd (momentum 0.9).", rich_help_panel=MODEL)] = None,
    lr_steps: Annotated[
        str | None,
        typer.Option(
            help="Epochs after which the lr is multiplied by 0.1, e.g. 30,60; or none.", rich_help_panel=MODEL
        ),
    ] = None,
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
    """Train the classifier f: a ResNet on [-1, 1] images, evaluated on the test split every epoch.

    Presets follow the paper (App. B.2): cub and folder Adam 1e-4 for 30 epochs, celebahq Adam 1e-3 for 10,
    cars SGD 0.1 decayed x0.1 after epochs 30 and 60 for 90, all from ImageNet ResNet50 weights. digits
    trains a small ResNet18 from scratch in a few CPU minutes. The run folder gets options.json,
    metrics.jsonl, latest/best checkpoints and the resume state. Multi-GPU: torchrun --nproc_per_node=N
    $(which viscoin) pretrain-classifier ...

    Example: viscoin pretrain-classifier --dataset cub --data-root ~/data/CUB_200_2011 --out runs/f-cub
    """
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.data import DATASET_NAMES
    from viscoin_cli.runtime import setup_runtime, shutdown_runtime
    from viscoin_cli.training.classifier import PRESETS, train_classifier
    from viscoin_cli.training.run import open_run

    given = o.explicit_options(ctx)
    if "lr_steps" in given:
        given["lr_steps"] = _parse_milestones(given["lr_steps"])
    if resume is not None:
        opts = o.resumed_options(resume, given, {"epochs"}, names={"lr_steps": "milestones"})
        dataset = opts.get("dataset", dataset)
    if dataset not in DATASET_NAMES:
        raise UserError(f"--dataset {dataset!r}: expected one of {', '.join(DATASET_NAMES)}")

    rt = setup_runtime(device=device, precision=precision, seed=seed if resume is None else opts.get("seed", seed))
    console = make_console(quiet=quiet, enabled=rt.is_main)
    try:
        run, resuming = open_run(rt, out=out, resume=resume, force=force, default_name=f"classifier-{dataset}")
        if not resuming:
            preset = PRESETS[dataset]
            pick = lambda value, key: preset[key] if value is None else value  # noqa: E731
            opts = {
                "dataset": dataset,
                "data_root": str(data_root) if data_root is not None else None,
                "resolution": resolution,
                "skip_bad_images": skip_bad_images,
                "bbox_crop": bbox_crop,
                "arch": pick(arch, "arch"),
                "width": pick(width, "width"),
                "stem": pick(stem, "stem"),
                "weights": pick(weights, "weights"),
                "epochs": pick(epochs, "epochs"),
                "batch_size": pick(batch_size, "batch_size"),
                "lr": pick(lr, "lr"),
                "optimizer": pick(optimizer, "optimizer"),
                "milestones": _parse_milestones(lr_steps) if lr_steps is not None else preset["milestones"],
                "weight_decay": preset["weight_decay"],
                "seed": seed,
            }
        opts["workers"] = o.default_workers(dataset, workers)
        opts.update(device=str(rt.device), precision=precision, world_size=rt.world_size)
        if rt.is_main:
            run.write_options(opts)
        summary = train_classifier(opts, run, rt, console, resume=resuming)
    finally:
        shutdown_runtime(rt)
    if not rt.is_main:
        return
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console

    Console(highlight=False).print(
        f"best test accuracy {summary['best_test_accuracy']:.4f} (final {summary['final_test_accuracy']:.4f}) "
        f"after {summary['epochs']} epochs in {summary['seconds']:.0f}s\n"
        f"best weights: {summary['best']}\nrun folder:   {summary['out']}"
    )
