"""`viscoin generate`: sample a generator with NVIDIA's seed convention."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import ImageFormat, NoiseMode
from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.io.outputs import check_output_file
from viscoin_cli.shipped import DEFAULT_GENERATOR

# One command's bounds, so that no --seeds value asks for unbounded memory, disk or time: a grid is held in
# memory (and PNG/JPEG cannot be written in parts), a .npy array is streamed to disk batch by batch.
MAX_SEEDS = 1_000_000
MAX_GRID_PIXELS = 2**26  # 67 Mpx: 1024 images at 256 px, 65536 at 32 px


def parse_seeds(text: str) -> list[int]:
    """`0-15`, `1,4,9` or a mix like `0-3,10` -> list of seeds (in order, duplicates kept)."""
    ranges: list[range] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(f"--seeds {text!r}: expected seeds like 0-15 or 1,4,9")
        first = int(match[1])
        ranges.append(range(first, int(match[2] or first) + 1))
    if any(r.stop > 2**32 for r in ranges):
        raise UserError(f"--seeds {text!r}: seeds must be below 2^32")
    count = sum(len(r) for r in ranges)  # counted before the list is built: 0-99999999 is 800 MB of ints
    if count > MAX_SEEDS:
        raise UserError(f"--seeds {text!r}: {count} images, more than the {MAX_SEEDS} one command makes")
    return [seed for r in ranges for seed in r]


def check_grid_size(count: int, resolution: int) -> None:
    """A grid is built in memory: refuse one above MAX_GRID_PIXELS before any image is made."""
    pixels = count * resolution * resolution
    if pixels > MAX_GRID_PIXELS:
        raise UserError(
            f"--seeds: a grid of {count} images at {resolution} px is {pixels / 1e6:.0f} Mpx, above the "
            f"{MAX_GRID_PIXELS / 1e6:.0f} Mpx one grid may have: use --format npy (streamed to disk) or fewer seeds"
        )


def check_disk_space(path: Path, size: int) -> None:
    """Refuse an array that cannot fit on the disk it goes to, before making it."""
    import shutil

    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if size > free:
        need, have = size / 2**30, free / 2**30
        raise UserError(f"--out {path}: the array needs {need:.1f} GiB, the disk has {have:.1f} GiB free")


@app.command("generate", rich_help_panel="Generator")
def generate(
    generator: o.GeneratorPath = DEFAULT_GENERATOR,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, e.g. 0-15 or 1,4,9.")] = "0-15",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output file: .png or .jpg grid, .npy with --format npy [default: generated.png / .npy]."
        ),
    ] = None,
    truncation: Annotated[float, typer.Option("--truncation", help="Truncation psi (1 = none).")] = 1.0,
    truncation_cutoff: Annotated[
        int | None, typer.Option("--truncation-cutoff", min=0, help="Truncate only the first N W+ vectors.")
    ] = None,
    noise_mode: Annotated[
        NoiseMode, typer.Option("--noise-mode", help="Noise inputs of the synthesis layers.")
    ] = "const",
    class_index: Annotated[
        int | None, typer.Option("--class", min=0, help="Class index for a conditional generator.")
    ] = None,
    fmt: Annotated[
        ImageFormat,
        typer.Option(
            "--format",
            help="png: one image grid (PNG, or JPEG for a .jpg --out; at most 67 Mpx); npy: the raw [-1, 1] "
            "float32 array (N, C, H, W), written to disk batch by batch.",
        ),
    ] = "png",
    columns: Annotated[int | None, typer.Option("--columns", min=1, help="Images per grid row.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
    device: o.Device = "auto",
) -> None:
    """Generate images from a generator checkpoint, one per seed.

    The latent for seed s is numpy.random.RandomState(s).randn(1, z_dim), as in NVIDIA's generate.py, so
    the same --seeds, --truncation and --noise-mode const give the same images as NVIDIA's code. One
    command makes at most 1,000,000 images; a grid holds at most 67 Mpx (use --format npy for more).

    Example: viscoin generate --generator ffhq.safetensors --seeds 0-15 --truncation 0.7 --out grid.png
    """
    import numpy as np
    import torch

    from viscoin_cli.console import Progress, make_console, warn_non_finite
    from viscoin_cli.io.checkpoint import atomic_write, non_finite_tensors
    from viscoin_cli.io.images import GRID_FORMATS, save_grid
    from viscoin_cli.nets.stylegan2 import load_generator
    from viscoin_cli.runtime import setup_runtime

    if not np.isfinite(truncation):
        raise UserError(f"--truncation {truncation}: must be a finite number")
    seed_list = parse_seeds(seeds)
    out = check_output_file(
        out or Path(f"generated.{fmt}"), "--out", (".npy",) if fmt == "npy" else tuple(GRID_FORMATS)
    )
    rt = setup_runtime(device=device)
    G, meta = load_generator(generator, rt.device)
    warn_non_finite(non_finite_tensors(G.state_dict()), str(meta.path))
    if G.c_dim and class_index is None:
        raise UserError(f"{meta.path} is a conditional generator: pass --class (0..{G.c_dim - 1})")
    if not G.c_dim and class_index is not None:
        raise UserError(f"{meta.path} is not a conditional generator: --class does not apply")
    if class_index is not None and class_index >= G.c_dim:
        raise UserError(f"--class {class_index}: the generator has {G.c_dim} classes")
    shape = (len(seed_list), G.img_channels, G.img_resolution, G.img_resolution)
    if fmt == "npy":
        check_disk_space(out, 4 * math.prod(shape))
    else:
        check_grid_size(len(seed_list), G.img_resolution)

    @torch.no_grad()
    def batches():
        """The images of seed_list, `batch_size` at a time, as float32 CPU tensors."""
        for first in range(0, len(seed_list), batch_size):
            chunk = seed_list[first : first + batch_size]
            z = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in chunk]))
            c = None
            if G.c_dim:
                c = torch.zeros(len(chunk), G.c_dim, device=rt.device)
                c[:, class_index] = 1
            kwargs = dict(truncation_psi=truncation, truncation_cutoff=truncation_cutoff, noise_mode=str(noise_mode))
            yield G(z.float().to(rt.device), c, **kwargs).float().cpu()

    console = make_console(quiet=False)
    with Progress(console, len(seed_list), "generating") as progress:

        def made():
            for images in batches():
                yield images
                progress.advance(len(images))

        if fmt == "npy":
            atomic_write(out, lambda tmp: _write_array(tmp, shape, made()))
        else:
            save_grid(torch.cat(list(made())), out, columns=columns)
    typer.echo(f"{len(seed_list)} images ({G.img_resolution} px) -> {out}")


def _write_array(path: Path, shape: tuple[int, ...], batches) -> None:
    """Stream float32 batches into a .npy file of `shape` without holding the array in memory."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    done = 0
    for images in batches:
        array[done : done + len(images)] = images.numpy()
        done += len(images)
    array.flush()
    del array
