"""`viscoin pretrain-classifier`: train the classifier f that VisCoIN explains."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from viscoin_cli.choices import Arch, Optimizer, Stem
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import TRAINING_DATA, TRAINING_RUN, TrainingData, TrainingRun, grouped
from viscoin_cli.cli._training import run_training
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
@grouped
def pretrain_classifier(
    ctx: typer.Context,
    data: TrainingData = TRAINING_DATA,
    arch: Annotated[Arch | None, typer.Option(help="The ResNet.", rich_help_panel=MODEL)] = None,
    width: Annotated[
        int | None,
        typer.Option(min=1, help="Channels of layer1 (64 = standard ResNet).", rich_help_panel=MODEL),
    ] = None,
    stem: Annotated[
        Stem | None,
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
    optimizer: Annotated[Optimizer | None, typer.Option(help="SGD uses momentum 0.9.", rich_help_panel=MODEL)] = None,
    milestones: Annotated[
        str | None,
        typer.Option(
            "--lr-steps",
            help="Epochs after which the lr is multiplied by 0.1, e.g. 30,60; or none.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of each class of the training split held out (fixed by the data, not --seed) to choose "
            "best.safetensors by validation accuracy; 0: no hold-out, best is the last epoch. [default: 0.1]",
            rich_help_panel=MODEL,
        ),
    ] = None,
    seed: o.Seed = 0,
    run: TrainingRun = TRAINING_RUN,
) -> None:
    """Train the classifier f: a ResNet on [-1, 1] images, evaluated on a validation split held out of the
    training split (which chooses best.safetensors) and on the test split (reported only) every epoch.

    Presets follow the paper (App. B.2): cub and folder Adam 1e-4 for 30 epochs, celebahq Adam 1e-3 for 10,
    cars SGD 0.1 decayed x0.1 after epochs 30 and 60 for 90, all from ImageNet ResNet50 weights. digits
    trains a small ResNet18 from scratch in a few CPU minutes. The run folder gets options.json,
    metrics.jsonl, latest/best checkpoints and the resume state. Multi-GPU: torchrun --nproc_per_node=N
    $(which viscoin) pretrain-classifier ...

    Example: viscoin pretrain-classifier --dataset cub --data-root ~/data/CUB_200_2011 --out runs/f-cub
    """
    from viscoin_cli.training.classifier import ClassifierConfig, train_classifier

    run_training(
        ctx,
        run,
        locals(),
        ClassifierConfig,
        train_classifier,
        name="classifier",
        parsers={"milestones": _parse_milestones},
        describe=_describe,
    )


def _describe(summary: dict[str, Any]) -> str:
    def accuracy(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if summary["best_val_accuracy"] is None:
        chosen = (
            f"no validation split: best is the last epoch, test accuracy {accuracy(summary['final_test_accuracy'])}"
        )
    else:
        chosen = (
            f"best val accuracy {accuracy(summary['best_val_accuracy'])} at epoch {summary['best_epoch']} "
            f"(its test accuracy {accuracy(summary['best_epoch_test_accuracy'])}, "
            f"final {accuracy(summary['final_test_accuracy'])})"
        )
    return (
        f"{chosen} after {summary['epochs']} epochs in {summary['seconds']:.0f}s\n"
        f"best weights: {summary['best']}\nrun folder:   {summary['out']}"
    )
