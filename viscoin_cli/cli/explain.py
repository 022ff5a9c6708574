"""`viscoin explain`: why one image got its prediction, as a PNG card per image, JSON lines and an HTML index."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli.cli import _interpret as common
from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import RUNTIME, Run, grouped
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.io.outputs import check_output_folder
from viscoin_cli.shipped import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch

SUBJECTS = "What to explain"
MAX_TOP_K = 32  # a card row per concept: more would be a picture nobody reads (and K renders per image)


@dataclass
class Subject:
    """One image to explain: its JSON head, its card's file name, and how to load it (None: unreadable)."""

    head: dict[str, Any]
    card_name: str
    load: Callable[[], torch.Tensor]


@app.command("explain", rich_help_panel="Interpret")
@grouped
def explain(
    images: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[IMAGE]...",
            help="Image files to explain (any size, mode and format Pillow reads).",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        list[int] | None,
        typer.Option(
            "--index", metavar="<int>", help="A test-split sample to explain (repeatable).", rich_help_panel=SUBJECTS
        ),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--folder",
            help="Explain every image under this folder (recursively), in batches; files "
            "that cannot be decoded are reported and skipped.",
            rich_help_panel=SUBJECTS,
        ),
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", help=f"Concepts per image, by local relevance (1..{MAX_TOP_K}).")
    ] = 5,
    counterfactual: Annotated[
        bool,
        typer.Option(
            "--counterfactual",
            help="Also find, greedily, the fewest of the image's most relevant concepts (up to 16 with r > 0) whose "
            "removal flips g's class on the render, and show that render.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for the cards, index.html and explanations.jsonl.")] = Path(
        "explain"
    ),
    scale: common.Scale = None,
    model_path: o.Model = DEFAULT_MODEL,
    inputs: common.Inputs = common.INPUTS,
    batch_size: common.BatchSize = 16,
    run: Run = RUNTIME,
) -> None:
    """Explain single predictions: which concepts g used, where they sit, and what editing them does.

    For each image: g's and f's top predictions; the --top-k concepts by local relevance r (their
    activation a and contribution a·W[c,k] to the predicted class's logit); where each sits, as its concept
    map upsampled onto the image and as the gradient of its pooled activation with respect to the input;
    its λ strip (0, 1, 2, 4: λ = 1 is the reconstruction); and the change of g's and f's probability of the
    predicted class when it is zeroed (λ = 0) and doubled (λ = 2), both read on the rendered image against
    the reconstruction, as faithfulness reads them.

    Writes OUT/<image>.png (a card per image; test-N.png for --index), OUT/explanations.jsonl (a JSON line
    per image; skipped files as {"image", "error"} lines) and OUT/index.html (the cards, linked). With --json
    the JSON lines also go to stdout. Images are resized and centre-cropped to the model's resolution as its
    test split is; 16-bit gray is scaled, alpha is composited over black, CMYK and palettes are converted.

    Example: viscoin explain --index 3 --index 12 --counterfactual
             viscoin explain --folder photos/ --out photos-explained
    """
    from viscoin_cli.console import Progress, make_console

    files, indices = images or [], index or []
    common.check_positive(batch_size, "--batch-size")
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"--top-k {top_k}: expected a whole number in 1..{MAX_TOP_K}")
    common.check_scale(scale)
    if folder is not None and (files or indices):
        raise UserError("--folder explains a whole folder: it cannot be combined with IMAGE arguments or --index")
    if folder is None and not (files or indices):
        raise UserError("nothing to explain: pass IMAGE files, --index N or --folder DIR")
    facts = common.read_model(model_path)
    check_output_folder(out, "--out")
    console = make_console(quiet=run.quiet)

    found = _folder_files(folder) if folder is not None else []
    loaded = common.load(facts, inputs, run, test_split=bool(indices), images=files, indices=indices)
    subjects = _subjects(facts, loaded, files, indices, folder, found)
    k = min(top_k, facts.num_concepts)

    import torch

    from viscoin_cli.interpret.cards import write_card
    from viscoin_cli.interpret.explanation import explain_images
    from viscoin_cli.io.images import upscale_factor

    card_scale = scale or upscale_factor(facts.resolution)
    out.mkdir(parents=True, exist_ok=True)
    documents: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    title = f"{Path(model_path).name}: {facts.dataset['name']}, {facts.num_concepts} concepts"
    with open(out / "explanations.jsonl", "w") as lines, Progress(console, len(subjects), "explaining") as progress:
        for batch in _batches(subjects, batch_size):
            readable, pictures, unreadable = [], [], []
            for subject in batch:
                picture = _try_load(subject, unreadable)
                if picture is not None:
                    readable.append(subject)
                    pictures.append(picture)
            if readable:
                explanations = explain_images(
                    loaded.model,
                    torch.stack(pictures),
                    [s.head for s in readable],
                    facts.class_names,
                    loaded.rt,
                    k,
                    counterfactual,
                    batch_size,
                )
                for subject, explanation in zip(readable, explanations, strict=True):
                    write_card(explanation, out / subject.card_name, card_scale, Path(model_path).name)
                    explanation.document["card"] = subject.card_name
                    documents.append(explanation.document)
                    _emit(explanation.document, lines, run.json_out)
            for item in unreadable:
                _emit(item, lines, run.json_out)
            skipped += unreadable
            _write_index(out, title, documents, skipped)
            progress.advance(len(batch))
    if not documents:
        raise UserError(f"no image could be explained ({len(skipped)} unreadable; see {out / 'index.html'})")
    if not run.json_out:
        _summary(documents, skipped, out, per_image=folder is None)  # a folder's cards are listed in its index


def _folder_files(folder: Path) -> list[Path]:
    from viscoin_cli.data.folder import list_image_files

    found = list_image_files(folder)
    if not found:
        raise UserError(f"--folder {folder}: no image files in it (by extension)")
    return found


def _subjects(facts, loaded, files: list[Path], indices: Sequence[int], folder: Path | None, found: list[Path]):
    """What to explain, in order: the IMAGE files (already loaded), the test samples, or the folder's files
    (loaded batch by batch, each on its own so that one bad file skips only itself)."""
    from viscoin_cli.data.images import image_tensor, image_transform, read_rgb
    from viscoin_cli.interpret.cards import card_file_name

    subjects: list[Subject] = []
    taken: set[str] = set()

    def unique(name: str) -> str:
        stem, number = name[: -len(".png")], 2
        while name in taken:
            name, number = f"{stem}-{number}.png", number + 1
        taken.add(name)
        return name

    for row, path in enumerate(files):
        head = {"image": str(path)}
        subjects.append(Subject(head, unique(card_file_name(head)), lambda row=row: loaded.pictures[row]))
    for i in indices:
        label = loaded.test_set.labels[i]
        head = {"index": i, "label": label, "label_name": facts.class_names[label]}
        subjects.append(Subject(head, unique(card_file_name(head)), lambda i=i: loaded.test_set[i][0]))
    if folder is not None:
        transform = image_transform(facts.resolution, augment=False)
        channels = facts.dataset.get("channels", 3)
        for path in found:
            head = {"image": str(path)}
            name = unique(card_file_name(head, str(path.relative_to(folder))))
            subjects.append(Subject(head, name, lambda path=path: image_tensor(read_rgb(path), transform, channels)))
    return subjects


def _batches(subjects: list[Subject], size: int) -> Iterator[list[Subject]]:
    for first in range(0, len(subjects), size):
        yield subjects[first : first + size]


def _try_load(subject: Subject, skipped: list[dict[str, str]]) -> torch.Tensor | None:
    """The subject's image, or None with the reason recorded and said on stderr."""
    from viscoin_cli.data.images import UnreadableImage

    try:
        return subject.load()
    except UnreadableImage as reason:
        skipped.append({"image": subject.head["image"], "error": str(reason)})
        sys.stderr.write(f"warning: skipped {subject.head['image']}: {reason}\n")
        return None


def _emit(document: dict[str, Any], lines, to_stdout: bool) -> None:
    """One JSON line to explanations.jsonl (flushed: an interrupted run keeps what it explained), and to
    stdout with --json."""
    from viscoin_cli.console import json_line

    text = json_line(document)
    lines.write(text + "\n")
    lines.flush()
    if to_stdout:
        typer.echo(text)


def _write_index(out: Path, title: str, documents: list[dict[str, Any]], skipped: list[dict[str, str]]) -> None:
    from viscoin_cli.interpret.cards import index_html
    from viscoin_cli.io.checkpoint import atomic_write

    page = index_html(title, documents, skipped)
    atomic_write(out / "index.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def _summary(documents: list[dict[str, Any]], skipped: list[dict[str, str]], out: Path, per_image: bool) -> None:
    """One line per image when `per_image` (the result, shown even with --quiet), then where the index is."""
    from viscoin_cli.interpret.cards import source_name

    for doc in documents if per_image else []:
        concepts = ", ".join(f"{c['concept']} ({c['relevance']:+.2f})" for c in doc["concepts"])
        line = f"{source_name(doc)}: g {doc['g'][0]['name']} ({doc['g'][0]['probability']:.2f}), concepts {concepts}"
        if "counterfactual" in doc:
            cf = doc["counterfactual"]
            removed = ", ".join(map(str, cf["concepts"])) or "none"
            line += f"; without {removed}: {cf['to_name'] if cf['flipped'] else 'not flipped'}"
        typer.echo(f"{line} -> {out / doc['card']}")
    tail = f", {len(skipped)} skipped" if skipped else ""
    typer.echo(f"{len(documents)} explained{tail}: {out / 'index.html'}")
