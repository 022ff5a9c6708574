"""`viscoin directions classifier` (registered on `directions_app`): concepts as encoding/decoding direction
pairs in a classifier's activations (interpret/direction_pairs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli.choices import DatasetName
from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._evaluation import check_capture_threshold
from viscoin_cli.cli._groups import SEEDED_RUNTIME, Run, grouped
from viscoin_cli.cli.directions import directions_app
from viscoin_cli.cli.evaluate import CaptureThreshold
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_CLASSIFIER

FIT = "Directions"
LAYER_HELP = (
    "Where to look: pooled (f's pooled features, what its last linear layer reads), or a feature map "
    "(layer2, layer3, layer4_penultimate), where each spatial position is one activation vector."
)


@directions_app.command("classifier")
@grouped
def classifier_directions(
    classifier: o.ClassifierPath = DEFAULT_CLASSIFIER,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for directions.safetensors, directions.png and directions.json.", show_default=False
        ),
    ] = ...,  # type: ignore[assignment]
    force: Annotated[bool, typer.Option("--force", help="Overwrite the files of an earlier run in --out.")] = False,
    layer: Annotated[
        str,
        typer.Option(
            "--layer", metavar="<pooled|layer2|layer3|layer4_penultimate>", help=LAYER_HELP, rich_help_panel=FIT
        ),
    ] = "pooled",
    directions: Annotated[
        int,
        typer.Option(
            "--directions", help="Direction pairs K to find (clusters); URA drops those f ignores.", rich_help_panel=FIT
        ),
    ] = 16,
    samples: Annotated[
        int,
        typer.Option(
            "--samples",
            help="Activation vectors to fit on, from the training split (pooled: one per image; a feature map: "
            "random positions of at most as many images); at most 200000.",
            rich_help_panel=FIT,
        ),
    ] = 20_000,
    test_images: Annotated[
        int,
        typer.Option("--test-images", help="Test images evaluated (a random subset when more).", rich_help_panel=FIT),
    ] = 1000,
    top_images: Annotated[
        int, typer.Option("--top-images", help="Most aligned test images shown per direction.", rich_help_panel=FIT)
    ] = 8,
    capture_threshold: CaptureThreshold = 0.9,
    dataset: Annotated[
        DatasetName | None,
        typer.Option(
            "--dataset", help="The classifier's dataset [default: the one it records].", rich_help_panel=o.DATA
        ),
    ] = None,
    data_root: o.DataRoot = None,
    bbox_crop: o.BboxCrop = False,
    skip_bad_images: o.SkipBadImages = False,
    batch_size: common.BatchSize = 64,
    run: Run = SEEDED_RUNTIME,
) -> None:
    """Concepts as encoding/decoding direction pairs in the classifier's activations (Doumanoglou et al., 2025).

    Decoding directions (read a concept's presence: <d, a>) come from clustering the activation vectors by
    direction; encoding directions (how the concept is written into a: its signal vector) from their
    covariance; Uncertainty Region Alignment keeps the directions that f's later layers use near its decision
    boundaries. Fitted on the training split; evaluated on the test split: per direction its most aligned
    images (directions.png, a row each), the logits' change per unit of it, and the counterfactual of removing
    it (flip rate, mean drop of the predicted class's probability); overall, faithfulness: each image's
    relevant directions removed, median drop beside as many random directions removed. On a dataset with
    attribute labels (shapes, cub with its attribute files), ground truth as `evaluate ground-truth` scores
    concept models: per attribute value, the direction whose test-image score predicts it best (ROC AUC) and
    whether that reaches --capture-threshold (no render test: directions edit activations, not images).

    Example: viscoin directions classifier --layer pooled --directions 16 --out runs/directions-digits
    """
    from viscoin_cli.console import make_console, print_json
    from viscoin_cli.interpret.direction_pairs import DirectionConfig

    config = DirectionConfig(
        layer=layer,
        directions=directions,
        samples=samples,
        test_images=test_images,
        top_images=top_images,
        seed=run.seed,
    ).check()
    common.check_positive(batch_size, "--batch-size")
    check_capture_threshold(capture_threshold)
    _check_out(out, force)
    facts = _classifier_facts(classifier)
    name = str(dataset.value if dataset is not None else facts["name"])
    console = make_console(quiet=run.quiet)

    from viscoin_cli.data import load_dataset
    from viscoin_cli.interpret.direction_pairs import (
        direction_ground_truth,
        evaluate_direction_pairs,
        fit_direction_pairs,
        write_outputs,
    )
    from viscoin_cli.metrics.ground_truth import labelled
    from viscoin_cli.nets.classifier import load_classifier
    from viscoin_cli.runtime import setup_runtime

    data = {"root": data_root, "resolution": int(facts["resolution"]), "bbox_crop": bbox_crop}
    train_set = load_dataset(name, "train", skip_bad_images=skip_bad_images, **data)
    test_set = load_dataset(name, "test", skip_bad_images=skip_bad_images, **data)
    if train_set.class_names != list(facts["class_names"]):
        raise UserError(f"{classifier} was trained on other classes than those of the {name} data")
    rt = setup_runtime(device=run.device, precision=run.precision, seed=run.seed)
    f, _ = load_classifier(classifier, rt.device)
    workers = o.default_workers(name, run.workers)
    pairs = fit_direction_pairs(f, train_set, config, rt, batch_size, workers, log=console.print)
    console.print(f"evaluating {len(pairs)} direction pairs on the test split")
    evaluation = evaluate_direction_pairs(f, pairs, test_set, config, rt, batch_size, workers)
    out.mkdir(parents=True, exist_ok=True)
    labels = labelled(test_set, evaluation.indices)  # the evaluated images'
    ground_truth = direction_ground_truth(evaluation.scores, labels, capture_threshold)
    document = write_outputs(out, pairs, evaluation, config, classifier, test_set, facts, ground_truth)
    if run.json_out:
        print_json(document)
    else:
        _print_summary(document)


def _check_out(out: Path, force: bool) -> None:
    """--out must be a folder we can write, and empty unless --force (then our files in it are overwritten)."""
    from viscoin_cli.io.outputs import check_output_folder

    check_output_folder(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty: pass --force to overwrite the directions written there")


def _classifier_facts(path: Path) -> dict[str, Any]:
    """The classifier's dataset facts from its header; the missing shipped classifier gets a hint."""
    from viscoin_cli.io.checkpoint import read_meta

    if not path.exists() and path.resolve() == DEFAULT_CLASSIFIER.resolve():
        raise UserError(f"the shipped digits classifier {path} is missing: pass --classifier PATH")
    meta = read_meta(path, kind="classifier")
    facts = meta.dataset or {}
    if not {"name", "class_names", "resolution"} <= set(facts):
        raise UserError(f"{meta.path}: the checkpoint does not record its dataset")
    return dict(facts)


def _print_summary(document: dict[str, Any]) -> None:
    """One line per direction, faithfulness beside random, the ground truth if any, where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)
    table = Table(title=f"{document['directions']} direction pairs at {document['layer']} (D = {document['dim']})")
    for column in ("dir", "URA/rnd", "promotes", "demotes", "flips", "Δp", "top images"):
        table.add_column(column, justify="right")
    for row in document["per_direction"]:
        table.add_row(
            str(row["direction"]),
            f"{row['ura_ratio']:.2f}",
            f"{row['promotes'][0]['name']} ({row['promotes'][0]['logit']:+.2f})",
            f"{row['demotes'][0]['name']} ({row['demotes'][0]['logit']:+.2f})",
            f"{row['counterfactual']['flip_rate']:.3f}",
            f"{row['counterfactual']['mean_probability_drop']:+.3f}",
            ",".join(str(i) for i in row["top_images"][:3]),
        )
    console.print(table)
    for threshold, values in document["faithfulness"].items():
        console.print(
            f"faithfulness τ = {threshold}: median Δp {values['median']:+.4f} (random {values['random_median']:+.4f}), "
            f"mean {values['mean']:+.4f} (random {values['random_mean']:+.4f}), "
            f"{values['mean_directions_removed']:.2f} directions removed per image, {values['samples']} images",
            soft_wrap=True,
        )
    if document["ground_truth"] is not None:
        _print_ground_truth(console, document)
    for path in document["files"].values():
        console.print(f"wrote {path}", soft_wrap=True)


def _print_ground_truth(console, document: dict[str, Any]) -> None:
    """A row per attribute value: its best direction (with the class it promotes most), that AUC, captured."""
    from rich.table import Table

    gt = document["ground_truth"]
    promotes = {row["direction"]: row["promotes"][0]["name"] for row in document["per_direction"]}
    table = Table(title=f"ground truth (✓ captured: AUC ≥ {gt['threshold']:g})")
    for column in ("attribute", "value", "best direction", "promotes", "AUC", "✓"):
        table.add_column(column, justify="left" if column in ("attribute", "value", "promotes") else "right")
    for name, attribute in gt["per_attribute"].items():
        for i, (value, entry) in enumerate(attribute["values"].items()):
            found = entry["concept"] is not None
            table.add_row(
                name if i == 0 else "",
                value,
                str(entry["concept"]) if found else "—",
                promotes[entry["concept"]] if found else "",
                f"{entry['auc']:.3f}" if found else "—",
                "✓" if entry["captured"] else "",
            )
    console.print(table)
    mean = "—" if gt["mean_auc"] is None else f"{gt['mean_auc']:.4f}"
    console.print(
        f"ground truth: mean best AUC {mean} over {gt['attributes']} attributes, {gt['captured']} of "
        f"{gt['targets']} values captured, {gt['attributes_captured']} of {gt['attributes']} attributes wholly "
        f"({gt['samples']} test images; no render test for directions)",
        soft_wrap=True,
    )
