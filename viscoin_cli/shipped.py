"""Where the shipped digits checkpoints live: the defaults of --model, --classifier and --generator.

They are kept once, in checkpoints/digits at the top of the repository. A wheel (`pip install .`, pipx)
carries them as package data in viscoin_cli/_checkpoints/digits (see pyproject.toml); an editable install
or a source checkout reads them from the repository. The installed copy wins when both exist.

Kept free of torch so that option declarations (and `viscoin --help`) can import it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
PACKAGED_DIR = _PACKAGE / "_checkpoints" / "digits"  # installed from a wheel
CHECKOUT_DIR = _PACKAGE.parent / "checkpoints" / "digits"  # editable install or source checkout


def _digits_dir() -> Path:
    """The packaged folder when there is one, else the checkout's (also when neither exists: errors name it)."""
    return PACKAGED_DIR if PACKAGED_DIR.is_dir() else CHECKOUT_DIR


DIGITS_DIR = _digits_dir()
DEFAULT_CLASSIFIER = DIGITS_DIR / "classifier.safetensors"
DEFAULT_GENERATOR = DIGITS_DIR / "generator.safetensors"
DEFAULT_MODEL = DIGITS_DIR / "viscoin.safetensors"
SHIPPED_BASELINES = (DIGITS_DIR / "flint.safetensors", DIGITS_DIR / "flaem.safetensors")  # FLINT, FLAEM on the same f
