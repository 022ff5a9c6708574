"""`viscoin visualize`: see a concept by scaling its map and rendering the result (paper §3.5, App. E), or by
activation maximisation from its samples, as FLINT shows its attributes (interpret/am.py); or edit several
concepts at once (`--set 12=3 --set 40=0`) and see the render and what g and f make of it (interpret/edit.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._evaluation import VisMethod
from viscoin_cli.cli._groups import RUNTIME, Run, grouped
from viscoin_cli.cli._parse import parse_edit, resolve_lambdas
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.io.outputs import check_output_file, check_output_folder
from viscoin_cli.shipped import DEFAULT_MODEL

if TYPE_CHECKING:
    from viscoin_cli.interpret.am import AMSettings

WHAT = "What to show"
HOW = "How to show it"


def _output_file(out: Path | None, default_name: str) -> Path:
    if out is None:
        return check_output_file(Path(default_name), "--out")
    if out.is_dir():
        return check_output_file(out / default_name, "--out")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: expected a .png file name (or an existing folder)")
    return check_output_file(out, "--out")


def _how(
    method: VisMethod, lambda_: str | None, lambdas: str | None, am_steps: int | None
) -> tuple[list[float], AMSettings | None]:
    """The λ columns, and AM's settings (None for λ renders); options of the other method are one-line errors."""
    if method == VisMethod.render:
        if am_steps is not None:
            raise UserError("--am-steps applies to --method am")
        return resolve_lambdas(lambda_, lambdas), None
    for given, option in ((lambda_, "--lambda"), (lambdas, "--lambdas")):
        if given is not None:
            raise UserError(f"{option} does not apply to --method am (AM optimises the image, it scales no map)")
    from viscoin_cli.interpret.am import am_settings

    return [], am_settings(am_steps)


def _check_edit(
    concept: int | None, lambda_: str | None, lambdas: str | None, method: VisMethod, **more: object
) -> None:
    """--set is its own way of showing: each option of the other ways is a one-line error next to it."""
    given = {"--concept": concept, "--lambda": lambda_, "--lambdas": lambdas, **more}
    if method == VisMethod.am:
        given["--method am"] = True
    for option, value in given.items():
        if value is not None:
            raise UserError(f"--set edits the concepts it names: it cannot be combined with {option}")


def _check_what(concept: int | None, top_pairs: int | None, edit: bool, images: bool, cls: bool) -> None:
    """One-line errors for a missing concept and for sample choices that exclude each other."""
    if top_pairs is not None:
        common.check_positive(top_pairs, "--top-pairs")
        if images or cls:
            raise UserError(
                "--top-pairs picks classes and samples itself: it cannot be combined with --image or --class"
            )
    elif concept is None and not edit:
        raise UserError("--concept is required (or --set K=λ, or --top-pairs N)")
    if images and cls:
        raise UserError("--image and --class cannot be combined: --class picks test samples, --image replaces them")


def _output_folder(out: Path | None) -> Path:
    folder = out or Path("concept-pairs")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: --top-pairs writes one grid per pair into a folder, and this is a file")
    if folder.suffix.lower() == ".png":
        raise UserError(f"--out {folder}: --top-pairs writes one grid per pair into a folder, not a .png file")
    return check_output_folder(folder, "--out")


@app.command("visualize", rich_help_panel="Interpret")
@grouped
def visualize(
    concept: Annotated[
        int | None, typer.Option("--concept", help="The concept to show (0..K-1).", show_default=False)
    ] = None,
    lambda_: Annotated[
        str | None,
        typer.Option(
            "--lambda",
            metavar="<float>",
            help="Scale of the concept's map, within ±10 [default: 3].",
            show_default=False,
        ),
    ] = None,
    lambdas: Annotated[
        str | None,
        typer.Option(
            "--lambdas", metavar="<list>", help="A λ sweep instead of one value, e.g. 0,1,2,4.", show_default=False
        ),
    ] = None,
    edit: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="K=λ",
            help="Edit several concepts at once (repeatable): render each sample with Φ_K scaled by λ for every "
            "K=λ given, next to its reconstruction, and say what g and f predict on both renders (g's prediction "
            "after the edit is g applied to the edited render, as the faithfulness metric reads it). λ = 0 removes "
            "a concept; |λ| ≤ 10. Replaces --concept and --lambda(s).",
            rich_help_panel=WHAT,
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            "--samples", help="Test images shown (rows): where the concept (with --set: the first one) is most active."
        ),
    ] = 6,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            metavar="<class>",
            help="Take the samples from this class (index or name) [default: the class the concept is most relevant "
            "for].",
            rich_help_panel=WHAT,
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            metavar="<path>",
            help="Show these image files instead of test samples (repeatable).",
            rich_help_panel=WHAT,
        ),
    ] = None,
    top_pairs: Annotated[
        int | None,
        typer.Option(
            "--top-pairs",
            help="One grid for each of the N (class, concept) pairs of highest global relevance, written into the "
            "--out folder; --concept is not needed.",
            rich_help_panel=WHAT,
            show_default=False,
        ),
    ] = None,
    diff: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Three more columns per λ ≠ 1: added = max(x̃_λ − x̃_1, 0), removed = max(x̃_1 − x̃_λ, 0) and the "
            "per-pixel energy ‖x̃_λ − x̃_1‖² (gray); black = no change, white = the largest change in the row. "
            "With --method am: the same three views of AM's result − its start; with --set: of edited − "
            "reconstruction.",
            rich_help_panel=WHAT,
        ),
    ] = False,
    method: Annotated[
        VisMethod,
        typer.Option(
            "--method",
            help="render: scale the concept's map by λ and render with the model's decoder; am: activation "
            "maximisation, the input optimised to raise the concept with FLINT's regularisers (columns input, "
            "AM's start, AM's result; works for every model; slow on a CPU: about 30 s per 1000 steps for 3 images at "
            "32 px on one thread).",
            rich_help_panel=HOW,
        ),
    ] = VisMethod.render,
    am_steps: Annotated[
        int | None,
        typer.Option(
            "--am-steps",
            help="Activation maximisation steps (--method am) [default: 1000, as the VisCoIN paper].",
            rich_help_panel=HOW,
            show_default=False,
        ),
    ] = None,
    scale: common.Scale = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Write the bare grid for scripts: one pixel per image pixel, no title, headers or row labels.",
            rich_help_panel=HOW,
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="PNG file, or an existing folder, to write [default: concept-K.png; with --set, edit-K1-K2….png]; "
            "with --top-pairs, the folder [default: concept-pairs].",
            show_default=False,
        ),
    ] = None,
    model_path: o.Model = DEFAULT_MODEL,
    inputs: common.Inputs = common.INPUTS,
    batch_size: common.BatchSize = 128,
    run: Run = RUNTIME,
) -> None:
    """Show what a concept encodes: render images with its map scaled by λ (or several maps at once: --set).

    x̃_λ = G(Ω(Φ', γ)) where Φ'_k = λ·Φ_k and every other concept is untouched: λ = 1 is the plain
    reconstruction, λ = 0 removes the concept, λ up to 3-4 stays reliable. The PNG grid has one row per
    sample and the columns input, x̃_λ for each λ in increasing order (1 is always included), then the
    --diff views; small images are upscaled and the grid carries a title, column headers and row labels
    (the sample, g's predicted class and its probability), unless --raw. Samples: the --samples test
    images where the concept is most active among those predicted as its most relevant class (global
    relevance), or as --class, or the --image files (resized and centre-cropped to the model's resolution).

    --method am shows the concept as FLINT does instead: each sample, scaled by 0.5, is optimised for
    --am-steps steps to raise φ̄_k (Adam, total variation and range penalties, jitter; interpret/am.py).

    --set K=λ (repeatable) edits several concepts at once instead: the columns are input, reconstruction
    (all λ = 1), edited, then the --diff views of edited − reconstruction; each row says g's and f's class
    and probability on the reconstruction -> on the edited render. Both predictors read the rendered images
    (as the faithfulness metric does): "zeroing 12 flips g" means g no longer sees its class in the render.
    Samples are chosen for the first concept given.

    Examples: viscoin visualize --concept 42 --lambdas 0,1,2,4 --diff --out concept-42.png
              viscoin visualize --set 12=3 --set 40=0 --samples 4 --diff
    """
    from viscoin_cli.console import make_console

    images = image or []
    common.check_positive(samples, "--samples")
    common.check_positive(batch_size, "--batch-size")
    common.check_scale(scale, raw)
    if edit is not None:
        _check_edit(concept, lambda_, lambdas, method, **{"--top-pairs": top_pairs, "--am-steps": am_steps})
    _check_what(concept, top_pairs, edit is not None, bool(images), class_ is not None)
    lams, am = _how(method, lambda_, lambdas, am_steps) if edit is None else ([], None)
    facts = common.read_model(model_path)
    names = facts.class_names
    edits = parse_edit(edit, facts.num_concepts) if edit is not None else None
    if edits is not None:
        concept = next(iter(edits))  # the samples are chosen for the first concept edited
    if concept is not None and not 0 <= concept < facts.num_concepts:
        raise UserError(f"--concept {concept}: out of range (the model has concepts 0..{facts.num_concepts - 1})")
    cls = common.parse_class(class_, names) if class_ is not None else None
    if top_pairs is not None:
        folder = _output_folder(out)
    else:
        name = f"concept-{concept}" if edits is None else "edit-" + "-".join(map(str, edits))
        target = _output_file(out, f"{name}.png")
    console = make_console(quiet=run.quiet)
    if top_pairs is not None and concept is not None:
        console.print("note: --concept is ignored with --top-pairs")

    from rich.markup import escape

    from viscoin_cli.interpret.encode import encode_images
    from viscoin_cli.interpret.relevance import relevance_tables
    from viscoin_cli.interpret.visualize import ConceptGrids, best_pairs

    loaded = common.load(facts, inputs, run, test_split=not images, images=images)
    grids = ConceptGrids(loaded.model, names, lams, diff, batch_size, am, scale, raw, Path(model_path).name, edits)
    if am is not None:
        console.print(
            f"activation maximisation: {samples if not images else len(images)} images per grid, {am.steps} steps"
        )
    if images:
        encoded = encode_images(loaded.model, loaded.pictures, None, loaded.rt, batch_size)
        _report([grids.of_images(encoded, loaded.pictures, images, concept, target)], run.json_out, None)
        return

    encoded = loaded.encode_test(batch_size, run.workers, console)
    _, relevance = relevance_tables(loaded.model, encoded)
    if top_pairs is not None:
        pairs = best_pairs(relevance, top_pairs)
        paths = [folder / f"{rank:02d}-class-{c}-concept-{k}.png" for rank, (c, k) in enumerate(pairs, 1)]
    else:
        c = cls if cls is not None else int(relevance[:, concept].argmax())
        if cls is None and relevance[c, concept] <= 0:
            console.print(f"note: concept {concept} is relevant to no class (it is inactive or counts against)")
        pairs, paths = [(c, concept)], [target]
    docs = []
    noted: set[int] = set()  # one note per class, not one per pair
    for (c, k), path in zip(pairs, paths, strict=True):
        if c not in noted and not (encoded.predicted == c).any():
            noted.add(c)
            console.print(f"note: no test image is predicted as class {escape(names[c])}: showing images labelled so")
        docs.append(grids.of_class(encoded, loaded.test_set, relevance, c, k, samples, path))
    _report(docs, run.json_out, folder if top_pairs is not None else None)


def _report(docs: list[dict[str, Any]], json_out: bool, folder: Path | None) -> None:
    """One line per grid on stdout (the result, shown even with --quiet), or the one JSON document."""
    from viscoin_cli.console import print_json

    if json_out:
        print_json(docs[0] if folder is None else {"path": str(folder), "pairs": docs})
        return
    for doc in docs:
        if doc["method"] == "edit":
            _report_edit(doc)
            continue
        where = (
            f"class {doc['class_name']} (relevance {doc['class_relevance']:+.3f})"
            if doc["class"] is not None
            else f"{len(doc['samples'])} images"
        )
        if doc["method"] == "am":
            how = f"activation maximisation ({doc['am_steps']} steps)"
        else:
            how = "λ = " + ", ".join(f"{lam:g}" for lam in doc["lambdas"])
        typer.echo(f"concept {doc['concept']}, {where}, {how}: {len(doc['samples'])} rows -> {doc['path']}")


def _report_edit(doc: dict[str, Any]) -> None:
    """An edit grid's line, then per row what the edit did to g's and f's predictions."""
    from viscoin_cli.interpret.visualize import change_text, edit_name

    edit = edit_name({int(k): lam for k, lam in doc["edit"].items()})
    where = f"class {doc['class_name']}" if doc["class"] is not None else f"{len(doc['samples'])} images"
    flipped = sum(row["flipped"] for row in doc["samples"])
    typer.echo(f"edit {edit}, {where}: {len(doc['samples'])} rows, g flipped on {flipped} -> {doc['path']}")
    for row in doc["samples"]:
        source = f"test #{row['index']}" if "index" in row else row["image"]
        mark = "  (flipped)" if row["flipped"] else ""
        typer.echo(f"  {source}: g {change_text(row['g'])}, f {change_text(row['f'])}{mark}")
