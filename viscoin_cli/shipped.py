"""Where the shipped digits checkpoints live: the defaults of --model, --classifier and --generator.

Kept free of torch so that option declarations (and `viscoin --help`) can import it.
"""

from __future__ import annotations

from pathlib import Path

DIGITS_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "digits"
DEFAULT_CLASSIFIER = DIGITS_DIR / "classifier.safetensors"
DEFAULT_GENERATOR = DIGITS_DIR / "generator.safetensors"
DEFAULT_MODEL = DIGITS_DIR / "viscoin.safetensors"
