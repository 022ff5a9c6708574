"""`viscoin generate`: sample a generator with NVIDIA's seed convention."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import ImageFormat, NoiseMode
from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.shipped import DEFAULT_GENERATOR


def parse_seeds(text: str) -> list[int]:
    """`0-15`, `1,4,9` or a mix like `0-3,10` -> list of seeds (in order, duplicates kept)."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(f"--seeds {text!r}: expected seeds like 0-15 or 1,4,9")
        first = int(match[1])
        seeds.extend(range(first, int(match[2] or first) + 1))
    if any(seed >= 2**32 for seed in seeds):
        raise UserError(f"--seeds {text!r}: seeds must be below 2^32")
    return seeds


@app.command("generate", rich_help_panel="Generator")
def generate(
    generator: o.GeneratorPath = DEFAULT_GENERATOR,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, e.g. 0-15 or 1,4,9.")] = "0-15",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output file [default: generated.png, or .npy with --format npy].")
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
        typer.Option("--format", help="png: one image grid; npy: the raw [-1, 1] float array (N, C, H, W)."),
    ] = "png",
    columns: Annotated[int | None, typer.Option("--columns", min=1, help="Images per grid row.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
    device: o.Device = "auto",
) -> None:
    """Generate images from a generator checkpoint, one per seed.

    The latent for seed s is numpy.random.RandomState(s).randn(1, z_dim), as in NVIDIA's generate.py, so
    the same --seeds, --truncation and --noise-mode const give the same images as NVIDIA's code.

    Example: viscoin generate --generator ffhq.safetensors --seeds 0-15 --truncation 0.7 --out grid.png
    """
    import numpy as np
    import torch

    from viscoin_cli.console import warn_non_finite
    from viscoin_cli.io.checkpoint import non_finite_tensors
    from viscoin_cli.io.images import save_grid
    from viscoin_cli.nets.stylegan2 import load_generator
    from viscoin_cli.runtime import setup_runtime

    if not np.isfinite(truncation):
        raise UserError(f"--truncation {truncation}: must be a finite number")
    seed_list = parse_seeds(seeds)
    out = out or Path(f"generated.{fmt}")
    rt = setup_runtime(device=device)
    G, meta = load_generator(generator, rt.device)
    warn_non_finite(non_finite_tensors(G.state_dict()), str(meta.path))
    if G.c_dim and class_index is None:
        raise UserError(f"{meta.path} is a conditional generator: pass --class (0..{G.c_dim - 1})")
    if not G.c_dim and class_index is not None:
        raise UserError(f"{meta.path} is not a conditional generator: --class does not apply")
    if class_index is not None and class_index >= G.c_dim:
        raise UserError(f"--class {class_index}: the generator has {G.c_dim} classes")

    zs = torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in seed_list]))
    images = []
    with torch.no_grad():
        for z in zs.float().split(batch_size):
            c = None
            if G.c_dim:
                c = torch.zeros(len(z), G.c_dim, device=rt.device)
                c[:, class_index] = 1
            images.append(
                G(
                    z.to(rt.device),
                    c,
                    truncation_psi=truncation,
                    truncation_cutoff=truncation_cutoff,
                    noise_mode=str(noise_mode),
                )
                .float()
                .cpu()
            )
    images = torch.cat(images)
    if fmt == "npy":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, images.numpy())
    else:
        save_grid(images, out, columns=columns)
    typer.echo(f"{len(seed_list)} images ({G.img_resolution} px) -> {out}")
