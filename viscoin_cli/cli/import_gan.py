"""`viscoin import-gan`: convert an NVIDIA StyleGAN2(-ADA) pickle into our checkpoints, safely."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from viscoin_cli.choices import PickledGenerator
from viscoin_cli.cli import options as o
from viscoin_cli.cli.app import app
from viscoin_cli.errors import UserError
from viscoin_cli.io.outputs import check_output_file


@app.command("import-gan", rich_help_panel="Generator")
def import_gan(
    src: Annotated[Path, typer.Argument(help="NVIDIA pickle: stylegan2-ada-pytorch, stylegan3 (StyleGAN2) or TF.")],
    dest: Annotated[Path, typer.Argument(help="Generator checkpoint to write (.safetensors).")],
    which: Annotated[
        PickledGenerator, typer.Option("--which", help="Generator to keep: G_ema (the one to use) or G.")
    ] = "G_ema",
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    json_out: o.Json = False,
) -> None:
    """Import NVIDIA's StyleGAN2-ADA pickle without running any code from it.

    The pickle is read by a restricted unpickler that rebuilds only tensors and constructor arguments and
    refuses everything else. Writes DEST (the generator) and, when the pickle has one, DEST with the suffix
    .D.safetensors (the discriminator, for fine-tuning); the ADA probability p is kept in the metadata.

    Example: viscoin import-gan stylegan2-celebahq-256x256.pkl checkpoints/celebahq-G.safetensors
    """
    from viscoin_cli.console import print_json
    from viscoin_cli.io.checkpoint import save_checkpoint, sha256_file
    from viscoin_cli.io.nvidia_pickle import read_nvidia_pickle
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator

    check_output_file(dest, "DEST", (".safetensors",))
    d_dest = check_output_file(dest.with_name(dest.stem + ".D.safetensors"), "DEST")
    for path in (dest, d_dest):
        if path.exists() and not force:
            raise UserError(f"{path} exists: pass --force to overwrite it")
    pickle = read_nvidia_pickle(src)
    if which not in pickle.networks:
        raise UserError(f"{src}: has no {which} network (it has {', '.join(pickle.networks) or 'none'})")

    source = {"file": str(src.resolve()), "sha256": sha256_file(src), "format": pickle.source}
    g_data = pickle.networks[which]
    G = _build(Generator, g_data, src, which)
    facts = {"name": None, "class_names": None, "resolution": G.img_resolution, "channels": G.img_channels}
    has_d = "D" in pickle.networks
    D = _build(Discriminator, pickle.networks["D"], src, "D") if has_d else None
    extra = {"source": source, "augment_p": pickle.augment_p, "discriminator": d_dest.name if has_d else None}
    written: dict[str, str] = {}
    try:  # both files or neither: a failed write removes what this import already wrote
        save_checkpoint(dest, G.state_dict(), kind="generator", config=g_data.init_kwargs, dataset=facts, extra=extra)
        written["generator"] = str(dest)
        if D is not None:
            save_checkpoint(d_dest, D.state_dict(), kind="discriminator", config=pickle.networks["D"].init_kwargs,
                            dataset=facts, extra={"source": source, "augment_p": pickle.augment_p})  # fmt: skip
            written["discriminator"] = str(d_dest)
    except BaseException:
        for path in written.values():
            Path(path).unlink(missing_ok=True)
        raise
    summary = {
        **written,
        "source_format": pickle.source,
        "resolution": G.img_resolution,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "num_ws": G.num_ws,
        "c_dim": G.c_dim,
        "augment_p": pickle.augment_p,
    }
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"imported {which} ({pickle.source} pickle, {G.img_resolution} px, {G.num_ws} W+ vectors)")
        for role, path in written.items():
            typer.echo(f"{role}: {path}")


def _build(cls: type, data, src: Path, name: str):
    """Instantiate our network from the pickle's constructor arguments and load its weights strictly."""
    from viscoin_cli.console import warn_non_finite
    from viscoin_cli.io.checkpoint import build_from_config, load_into, non_finite_tensors

    net = build_from_config(cls, data.init_kwargs, src, name)
    load_into(net, data.state_dict, f"{src} ({name})")
    warn_non_finite(non_finite_tensors(net.state_dict()), f"{src} ({name})")
    return net.eval()
