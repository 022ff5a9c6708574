"""viscoin: concept-based interpretation of vision classifiers (VisCoIN)."""

__version__ = "0.1.0"
