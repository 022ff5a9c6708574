"""Where the shipped checkpoints live: the defaults of --model, --classifier and --generator.

Each embedded dataset with shipped models has a folder, checkpoints/<dataset> at the top of the repository
(digits: the defaults of every command; shapes: the defaults when `--dataset shapes` is given to a
training command or the pipeline). A wheel (`pip install .`, pipx) carries them as package data in
viscoin_cli/_checkpoints/<dataset> (see pyproject.toml); an editable install or a source checkout reads
them from the repository. The installed copy wins when both exist.

Kept free of torch so that option declarations (and `viscoin --help`) can import it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
PACKAGED_ROOT = _PACKAGE / "_checkpoints"  # installed from a wheel
CHECKOUT_ROOT = _PACKAGE.parent / "checkpoints"  # editable install or source checkout
SHIPPED_DATASETS = ("digits", "shapes")
FILES = {
    "classifier": "classifier.safetensors",
    "generator": "generator.safetensors",
    "viscoin": "viscoin.safetensors",
    "flint": "flint.safetensors",
    "flaem": "flaem.safetensors",
}


def shipped_dir(dataset: str) -> Path:
    """The packaged folder of a dataset's models when there is one, else the checkout's (also when neither
    exists: errors name it)."""
    packaged = PACKAGED_ROOT / dataset
    return packaged if packaged.is_dir() else CHECKOUT_ROOT / dataset


def shipped_file(dataset: str, role: str) -> Path | None:
    """A shipped checkpoint (role: classifier, generator, viscoin, flint, flaem) of an embedded dataset, or None
    when the dataset has none (a real dataset, or the file is not there)."""
    if dataset not in SHIPPED_DATASETS:
        return None
    path = shipped_dir(dataset) / FILES[role]
    return path if path.is_file() else None


def default_parent(dataset: str, role: str) -> Path | None:
    """The classifier or generator a training command or the pipeline uses on `dataset` when none is given:
    digits' shipped one (named in the error when it is missing), another embedded dataset's when it is
    there, else None (a real dataset: the user trains or passes one)."""
    if dataset == "digits":
        return shipped_dir("digits") / FILES[role]
    return shipped_file(dataset, role)


DIGITS_DIR = shipped_dir("digits")
DEFAULT_CLASSIFIER = DIGITS_DIR / FILES["classifier"]
DEFAULT_GENERATOR = DIGITS_DIR / FILES["generator"]
DEFAULT_MODEL = DIGITS_DIR / FILES["viscoin"]
SHIPPED_BASELINES = (DIGITS_DIR / FILES["flint"], DIGITS_DIR / FILES["flaem"])  # FLINT, FLAEM on the same f
