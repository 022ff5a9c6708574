"""viscoin: concept-based interpretation of vision classifiers (VisCoIN)."""

import os

__version__ = "0.1.0"


def prefer_huge_pages() -> None:
    """Ask torch, before it loads, to put tensors of 2 MB and more on transparent huge pages.

    The large activations a StyleGAN2 step allocates and frees then fault in 512x fewer pages: on 2 CPU
    cores a paper256 G training step at 256 px takes 0.7x the time. torch reads the setting once, at start;
    a value the user set wins.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
