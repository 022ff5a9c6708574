"""`viscoin relevance`: which concepts a prediction rests on (local) and what each class rests on (global)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.shipped import DEFAULT_MODEL

SUBJECTS = "What to explain"
CSV_COLUMNS = ("kind", "subject", "class", "class_name", "rank", "concept", "relevance", "activation")


@app.command("relevance", rich_help_panel="Interpret")
def relevance(
    model_path: o.Model = DEFAULT_MODEL,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image", metavar="<path>", help="An image file to explain (repeatable).", rich_help_panel=SUBJECTS
        ),
    ] = None,
    index: Annotated[
        list[int] | None,
        typer.Option(
            "--index",
            metavar="<int>",
            help="A test-split sample to explain, by index (repeatable).",
            rich_help_panel=SUBJECTS,
        ),
    ] = None,
    class_: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            metavar="<class>",
            help="A class (index or name) for global relevance (repeatable).",
            rich_help_panel=SUBJECTS,
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Concepts listed per image or class.")] = 5,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write every listed value to this CSV file (one row per concept)."),
    ] = None,
    classifier: common.ParentClassifier = None,
    generator: common.ParentGenerator = None,
    data_root: o.DataRoot = None,
    bbox_crop: o.BboxCrop = False,
    skip_bad_images: o.SkipBadImages = False,
    batch_size: common.BatchSize = 128,
    device: o.Device = "auto",
    precision: o.Precision = "fp32",
    workers: o.Workers = None,
    quiet: o.Quiet = False,
    json_out: o.Json = False,
) -> None:
    """Concept relevance: local for single images, global for classes (paper §3.5).

    Local relevance of concept k for an image x predicted as class c is φ̄_k(x)·W[c,k] / max_l |φ̄_l(x)·W[c,l]|,
    in [-1, 1]: its share of the evidence for the prediction (negative: evidence against). Global relevance of
    k for class c is its mean local relevance over the test images predicted as c. Each image or class lists
    its --top-k most relevant concepts with φ̄_k, the concept's activation (for a class: the mean activation).

    --image and --index explain single images; --class lists global relevance; with none of them, every
    class is listed. Images of another size are resized and centre-cropped to the model's resolution, as
    the test split is.

    Example: viscoin relevance --index 0 --index 7 --class 3 --top-k 3 --csv relevance.csv
    """
    from viscoin_cli.console import make_console, print_json

    images, indices, class_texts = image or [], index or [], class_ or []
    common.check_positive(top_k, "--top-k")
    common.check_positive(batch_size, "--batch-size")
    facts = common.read_model(model_path)
    names = facts.class_names
    classes = [common.parse_class(text, names) for text in class_texts]
    want_global = bool(classes) or not (images or indices)
    classes = classes if classes else list(range(len(names))) if want_global else []
    console = make_console(quiet=quiet)

    import torch

    from viscoin_cli.data.images import load_image_files
    from viscoin_cli.interpret.encode import encode_dataset
    from viscoin_cli.interpret.relevance import class_mean, global_relevance, local_relevance, top_concepts
    from viscoin_cli.runtime import setup_runtime

    test_set = None
    if indices or want_global:
        test_set = common.load_test_split(facts, data_root, bbox_crop, skip_bad_images)
        common.check_indices(indices, test_set)
    pictures = load_image_files(images, facts.resolution, facts.dataset.get("channels", 3)) if images else None
    rt = setup_runtime(device=device, precision=precision)
    model = common.load_model(facts, rt, classifier, generator)
    weight = model.theta.linear.weight.detach().float().cpu()
    k = min(top_k, facts.num_concepts)

    def ranked(scores: torch.Tensor, activations: torch.Tensor) -> list[dict[str, Any]]:
        values, order = top_concepts(scores, k)
        return [
            {"rank": rank, "concept": int(c), "relevance": float(v), "activation": float(activations[c])}
            for rank, (v, c) in enumerate(zip(values.tolist(), order.tolist(), strict=True), 1)
        ]

    full = None  # the whole test split, encoded once, when global relevance needs it
    if want_global:
        console.print(f"encoding the {len(test_set)} test images of {test_set.name} for global relevance")
        full = encode_dataset(
            model, test_set, rt, batch_size=batch_size, workers=o.default_workers(test_set.name, workers)
        )

    groups = []  # (encoded images, one {kind: subject, label...} per image)
    if pictures is not None:
        groups.append(
            (common.encode_images(model, pictures, None, rt, batch_size), [{"image": str(p)} for p in images])
        )
    if indices:
        labels = [test_set.labels[i] for i in indices]
        if full is not None:
            encoded = full.subset(torch.tensor(indices))
        else:
            pixels = common.split_images(test_set, indices)
            encoded = common.encode_images(model, pixels, torch.tensor(labels), rt, batch_size)
        heads = [{"index": i, "label": y, "label_name": names[y]} for i, y in zip(indices, labels, strict=True)]
        groups.append((encoded, heads))
    local_docs: list[dict[str, Any]] = []
    for encoded, heads in groups:
        local = local_relevance(encoded.pooled, weight, encoded.predicted)
        probabilities = encoded.logits.softmax(1)
        for row, head in enumerate(heads):
            predicted = int(encoded.predicted[row])
            local_docs.append(
                {
                    **head,
                    "predicted": predicted,
                    "predicted_name": names[predicted],
                    "probability": float(probabilities[row, predicted]),
                    "concepts": ranked(local[row], encoded.pooled[row]),
                }
            )

    global_docs: list[dict[str, Any]] = []
    if full is not None:
        predicted = full.predicted
        num_classes = len(names)
        relevance_cc = global_relevance(local_relevance(full.pooled, weight, predicted), predicted, num_classes)
        mean_activation = class_mean(full.pooled, predicted, num_classes)
        counts = torch.bincount(predicted, minlength=num_classes)
        for c in classes:
            global_docs.append(
                {
                    "class": c,
                    "class_name": names[c],
                    "samples": int(counts[c]),
                    # no test image predicted as c: no relevance to rank (rather than K zeros in index order)
                    "concepts": ranked(relevance_cc[c], mean_activation[c]) if counts[c] else [],
                }
            )

    document = {
        "model": str(facts.path),
        "dataset": facts.dataset["name"],
        "num_concepts": facts.num_concepts,
        "top_k": k,
        "local": local_docs,
        "global": global_docs,
    }
    if global_docs:
        document["split"] = {"name": "test", "size": len(test_set)}
    if csv_path is not None:
        _write_csv(csv_path, local_docs, global_docs)
        console.print(f"wrote {csv_path}")
    if json_out:
        print_json(document)
    else:
        _print_tables(document, names)


def _csv_rows(local_docs: list[dict[str, Any]], global_docs: list[dict[str, Any]]):
    def values(concept: dict[str, Any]) -> list[Any]:
        return [concept["rank"], concept["concept"], concept["relevance"], concept["activation"]]

    for doc in local_docs:
        kind = "image" if "image" in doc else "index"
        for concept in doc["concepts"]:
            yield [kind, doc[kind], doc["predicted"], doc["predicted_name"], *values(concept)]
    for doc in global_docs:
        for concept in doc["concepts"]:
            yield ["class", doc["class"], doc["class"], doc["class_name"], *values(concept)]


def _write_csv(path: Path, local_docs: list[dict[str, Any]], global_docs: list[dict[str, Any]]) -> None:
    """One row per listed (subject, concept): local rows carry the predicted class, global rows the class."""
    import csv

    from viscoin_cli.errors import UserError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(_csv_rows(local_docs, global_docs))
    except OSError as err:
        raise UserError(f"--csv {path}: cannot write ({err.strerror or err})") from None


def _print_tables(document: dict[str, Any], names: list[str]) -> None:
    """Local relevance: one table per image. Global: one table, a row per class, a column per rank."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False, markup=False)  # class names and paths may hold [brackets]
    for doc in document["local"]:
        subject = doc["image"] if "image" in doc else f"test image {doc['index']} (label {doc['label_name']})"
        out.print(f"{subject}: predicted {doc['predicted_name']} (p = {doc['probability']:.3f})", soft_wrap=True)
        table = Table()
        for column in ("rank", "concept", "relevance", "activation"):
            table.add_column(column, justify="right")
        for concept in doc["concepts"]:
            table.add_row(
                str(concept["rank"]),
                str(concept["concept"]),
                f"{concept['relevance']:+.3f}",
                f"{concept['activation']:.3f}",
            )
        out.print(table)
    if document["global"]:
        size = document["split"]["size"]
        out.print(
            f"global relevance: concept (relevance), averaged over the n of the {size} test images predicted as "
            "each class",
            soft_wrap=True,
        )
        table = Table()
        table.add_column("class", justify="left")
        table.add_column("n", justify="right")
        for rank in range(1, document["top_k"] + 1):
            table.add_column(f"#{rank}", justify="right")
        for doc in document["global"]:
            label = (
                doc["class_name"] if doc["class_name"] == str(doc["class"]) else f"{doc['class']} {doc['class_name']}"
            )
            cells = [f"{c['concept']} ({c['relevance']:+.2f})" for c in doc["concepts"]]
            cells += ["-"] * (document["top_k"] - len(cells))  # no test image predicted as the class
            table.add_row(label, str(doc["samples"]), *cells)
        out.print(table)
