"""`viscoin train`: train a concept model against a frozen classifier: VisCoIN (with a frozen generator), or
one of the paper's baselines, FLINT and FLAEM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import LpipsNet, Method
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
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="viscoin, or one of the paper's baselines on the same f: flint or flaem (they render with their "
            "own decoder: --generator and the VisCoIN options do not apply).",
            rich_help_panel=MODEL,
        ),
    ] = Method.viscoin,
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
    compile: o.Compile = False,
    seed: o.Seed = 0,
    run: TrainingRun = TRAINING_RUN,
) -> None:
    """Train VisCoIN: concepts Ψ, interpretable head Θ and concept translator Ω (f and G frozen), or a baseline.

    Loss: α·fidelity to f + reconstruction (L2 + L1 + β·LPIPS + γ_rc·CE(f(x̃), f(x))) + δ·sparsity +
    orthogonality + ‖Ω − w̄‖², with the paper's values per dataset (celebahq, cub, cars; digits: K=64, no
    LPIPS). Each iteration uses --real-batch augmented training images and --synthetic-batch G(z) images.
    The run folder gets options.json, metrics.jsonl (every loss term, agreement of g with f), recon*.png
    grids (input | reconstruction), latest.safetensors (the viscoin model) and the resume state.

    --method flint or flaem trains the paper's baselines on the same frozen f with their own losses,
    defaults and decoders (no generator; K as VisCoIN's preset): FLINT's attribute maps with Ψ's structure,
    FLAEM's concept encoder on f's last features. Every interpretation command accepts their models.

    Example: viscoin train --classifier runs/f-cub/best.safetensors --generator cub-G.safetensors \\
    --dataset cub --data-root ~/data/CUB_200_2011 --out runs/viscoin-cub
    """
    from viscoin_cli.training.concepts import train_concept_model

    if run.resume is not None:
        method = _resumed_method(run.resume, method, ctx)
    config_type = _config_type(method)
    _refuse_options_of_other_methods(ctx, config_type, method)
    run_training(
        ctx,
        run,
        locals(),
        config_type,
        train_concept_model,
        name=str(method),
        parsers={"support_ws": _parse_support_ws},
        describe=lambda summary: f"model: {summary['model']}",
    )


def _config_type(method: Method) -> type:
    """The typed config of a method's training (the config knows its recipe)."""
    if method == Method.flint:
        from viscoin_cli.training.flint import FlintConfig

        return FlintConfig
    if method == Method.flaem:
        from viscoin_cli.training.flaem import FlaemConfig

        return FlaemConfig
    from viscoin_cli.training.viscoin import VisCoINConfig

    return VisCoINConfig


def _resumed_method(folder: Path, typed: Method, ctx: typer.Context) -> Method:
    """The method of the run to resume, from its options.json (runs before --method existed: viscoin)."""
    from viscoin_cli.training.config import read_json

    options = Path(folder) / "options.json"
    saved = Method(read_json(options).get("method", "viscoin")) if options.is_file() else typed
    if "method" in o.explicit_options(ctx) and typed != saved:
        raise UserError(f"--method cannot change when resuming (the run used {saved})")
    return saved


def _refuse_options_of_other_methods(ctx: typer.Context, config_type: type, method: Method) -> None:
    """An option of another method (e.g. --generator with --method flint) is an error, not silently unused."""
    own = set(config_type.__dataclass_fields__) | set(TrainingRun.__dataclass_fields__)
    for name in o.explicit_options(ctx):
        if name not in own:
            flag = config_type.FLAGS.get(name, "--" + name.replace("_", "-"))
            raise UserError(f"{flag} does not apply to --method {method}")


def _parse_support_ws(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--support-ws {text!r}: expected comma-separated integers such as 0,1,2,-2,-1") from None
    if not indices:
        raise UserError(f"--support-ws {text!r}: expected at least one index")
    return indices
