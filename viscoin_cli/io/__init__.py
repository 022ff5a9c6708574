"""File formats: our checkpoints, NVIDIA pickle import, image grids."""
