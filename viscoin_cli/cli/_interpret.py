"""What the commands that explain a trained model share: its options, its facts, its test split, classes and
user images, and the model loaded on its runtime.

Kept free of torch at import time (option declarations import it); the heavy imports happen on call.
The underscore keeps `load_commands` from taking this module for a command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from viscoin_cli.cli import options as o
from viscoin_cli.cli._groups import Run, option_group
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from viscoin_cli.data.images import ImageDataset
    from viscoin_cli.interpret.encode import Encoded
    from viscoin_cli.runtime import Runtime

ParentClassifier = Annotated[
    Path | None,
    typer.Option("--classifier", help="The model's classifier f, when it moved [default: the path the model records]."),
]
ParentGenerator = Annotated[
    Path | None,
    typer.Option("--generator", help="The model's generator G, when it moved [default: the path the model records]."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.", rich_help_panel=o.RUNTIME)]
Scale = Annotated[
    int | None,
    typer.Option(
        "--scale",
        help="Upscale each image K times (nearest neighbour) [default: the smallest K giving tiles of at least "
        "128 px: 4 at 32 px, 1 at 256 px].",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Inputs:
    """Where the model's parents and its data are, when not where the model records them."""

    classifier: Path | None = None
    generator: Path | None = None
    data_root: Path | None = None
    bbox_crop: bool = False
    skip_bad_images: bool = False

    @property
    def data_options(self) -> dict[str, bool]:
        return {"bbox_crop": self.bbox_crop, "skip_bad_images": self.skip_bad_images}


INPUTS = option_group(
    Inputs,
    classifier=(ParentClassifier, None),
    generator=(ParentGenerator, None),
    data_root=(o.DataRoot, None),
    bbox_crop=(o.BboxCrop, False),
    skip_bad_images=(o.SkipBadImages, False),
)


@dataclass
class ModelFacts:
    """What the model file says about itself, read from its header without loading any weights."""

    path: Path
    num_concepts: int
    dataset: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset["class_names"])

    @property
    def resolution(self) -> int:
        return int(self.dataset["resolution"])


def read_model(path: Path) -> ModelFacts:
    """The model's header: K and its dataset facts. The missing shipped model gets a hint on what to do."""
    from viscoin_cli.io.checkpoint import read_meta

    if not path.exists() and path.resolve() == DEFAULT_MODEL.resolve():
        raise UserError(
            f"the shipped digits model {path} is missing: train one with `viscoin train` and pass --model PATH"
        )
    from viscoin_cli.nets.concept_model import METHODS

    meta = read_meta(path, kind=METHODS)
    facts = meta.dataset or {}
    if not {"name", "class_names", "resolution"} <= set(facts) or "num_concepts" not in meta.config:
        raise UserError(f"{meta.path}: the checkpoint does not record its dataset and concepts")
    return ModelFacts(meta.path, int(meta.config["num_concepts"]), dict(facts))


def load_model(facts: ModelFacts, rt: Runtime, inputs: Inputs):
    """The concept model (VisCoIN, FLINT or FLAEM; parents from their recorded paths, or the given ones), in
    eval mode on rt.device."""
    from viscoin_cli.nets.concept_model import load_concept_model

    model, _ = load_concept_model(facts.path, rt.device, classifier=inputs.classifier, generator=inputs.generator)
    return model


def parse_class(text: str, class_names: list[str], option: str = "--class") -> int:
    """A class given by name or index. An exact name wins over an index (folder datasets may be named
    by numbers that are not their indices); then a case-insensitive name; then an index."""
    if text in class_names:
        return class_names.index(text)
    folded = [i for i, name in enumerate(class_names) if name.casefold() == text.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        index = int(stripped)
        if 0 <= index < len(class_names):
            return index
        raise UserError(f"{option} {text}: class index out of range (the model has classes 0..{len(class_names) - 1})")
    shown = ", ".join(repr(name) for name in class_names[:3])
    raise UserError(
        f"{option} {text!r}: no such class (expected an index 0..{len(class_names) - 1} or a name: {shown}, ...)"
    )


def load_test_split(facts: ModelFacts, inputs: Inputs) -> ImageDataset:
    """The test split of the model's dataset, at the model's resolution."""
    from viscoin_cli.data import load_dataset

    root = inputs.data_root
    test_set = load_dataset(
        facts.dataset["name"], "test", root=root, resolution=facts.resolution, **inputs.data_options
    )
    if test_set.class_names != facts.class_names:
        raise UserError(f"{facts.path} was trained on other classes than those of the data in {root}")
    return test_set


def check_indices(indices: Sequence[int], test_set: ImageDataset, option: str = "--index") -> None:
    for index in indices:
        if not 0 <= index < len(test_set):
            raise UserError(
                f"{option} {index}: out of range (the test split of {test_set.name} has {len(test_set)} images, "
                f"0..{len(test_set) - 1})"
            )


@dataclass
class Loaded:
    """A model ready to explain, on its runtime, with the test split and the image files a command asked for."""

    model: Any
    rt: Runtime
    test_set: ImageDataset | None
    pictures: torch.Tensor | None

    def encode_test(self, batch_size: int, workers: int | None, console: Console, purpose: str = "") -> Encoded:
        """The whole test split, encoded once (what global relevance and the sample choice read)."""
        from viscoin_cli.interpret.encode import encode_dataset

        test_set = self.test_set
        console.print(f"encoding the {len(test_set)} test images of {test_set.name}{purpose}")
        workers = o.default_workers(test_set.name, workers)
        return encode_dataset(self.model, test_set, self.rt, batch_size=batch_size, workers=workers)


def load(
    facts: ModelFacts, inputs: Inputs, run: Run, *, test_split: bool, images: list[Path], indices: Sequence[int] = ()
) -> Loaded:
    """The data first (a wrong --data-root, --index or image fails before the model loads), then the runtime
    and the model."""
    from viscoin_cli.data.images import load_image_files
    from viscoin_cli.runtime import setup_runtime

    test_set = None
    if test_split:
        test_set = load_test_split(facts, inputs)
        check_indices(indices, test_set)
    pictures = load_image_files(images, facts.resolution, facts.dataset.get("channels", 3)) if images else None
    rt = setup_runtime(device=run.device, precision=run.precision)
    return Loaded(load_model(facts, rt, inputs), rt, test_set, pictures)


def check_scale(scale: int | None, raw: bool = False) -> None:
    """One-line errors for a --scale out of 1..MAX_SCALE, or given with --raw (which is never upscaled)."""
    from viscoin_cli.io.images import MAX_SCALE  # imports torch: not at module level (`--help` stays fast)

    if scale is None:
        return
    if raw:
        raise UserError("--scale does not apply to --raw (a raw grid has one pixel per image pixel)")
    if not 1 <= scale <= MAX_SCALE:
        raise UserError(f"--scale {scale}: expected a whole number in 1..{MAX_SCALE}")


def check_positive(value: int, option: str) -> None:
    """A count option must be at least 1 (checked here, not by click, for a one-line error)."""
    if value < 1:
        raise UserError(f"{option} {value}: must be at least 1")
