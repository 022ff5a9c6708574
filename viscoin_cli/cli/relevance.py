"""`viscoin relevance`: which concepts a prediction rests on (local) and what each class rests on (global)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import RUNTIME, Run, grouped
from viscoin_cli.cli.app import app
from viscoin_cli.io.outputs import check_output_file
from viscoin_cli.shipped import DEFAULT_MODEL

SUBJECTS = "What to explain"


@app.command("relevance", rich_help_panel="Interpret")
@grouped
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
    inputs: common.Inputs = common.INPUTS,
    batch_size: common.BatchSize = 128,
    run: Run = RUNTIME,
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
    if csv_path is not None:
        check_output_file(csv_path, "--csv")
    facts = common.read_model(model_path)
    names = facts.class_names
    classes = [common.parse_class(text, names) for text in class_texts]
    want_global = bool(classes) or not (images or indices)
    classes = classes if classes else list(range(len(names))) if want_global else []
    console = make_console(quiet=run.quiet)

    from viscoin_cli.interpret.explain import Explainer

    loaded = common.load(facts, inputs, run, test_split=bool(indices) or want_global, images=images, indices=indices)
    k = min(top_k, facts.num_concepts)
    explainer = Explainer(loaded.model, loaded.rt, names, k, batch_size)
    # the whole test split, encoded once, when global relevance needs it
    full = loaded.encode_test(batch_size, run.workers, console, " for global relevance") if want_global else None
    local_docs = explainer.images(loaded.pictures, images) if images else []
    local_docs += explainer.samples(loaded.test_set, indices, full) if indices else []
    global_docs = explainer.classes(full, classes) if full is not None else []
    document = {
        "model": str(facts.path),
        "dataset": facts.dataset["name"],
        "num_concepts": facts.num_concepts,
        "top_k": k,
        "local": local_docs,
        "global": global_docs,
    }
    if global_docs:
        document["split"] = {"name": "test", "size": len(loaded.test_set)}
    if csv_path is not None:
        _write_csv(csv_path, local_docs, global_docs)
        console.print(f"wrote {csv_path}")
    if run.json_out:
        print_json(document)
    else:
        _print_tables(document)


def _write_csv(path: Path, local_docs: list[dict[str, Any]], global_docs: list[dict[str, Any]]) -> None:
    """The documents as CSV rows (explain.csv_rows); an unwritable path is a one-line error."""
    import csv

    from viscoin_cli.errors import UserError
    from viscoin_cli.interpret.explain import CSV_COLUMNS, csv_rows

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(csv_rows(local_docs, global_docs))
    except OSError as err:
        raise UserError(f"--csv {path}: cannot write ({err.strerror or err})") from None


def _print_tables(document: dict[str, Any]) -> None:
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
