"""LPIPS (Zhang et al. 2018) through the `lpips` package, with its backbone weights from a local file.

The package ships its small linear heads, but takes the AlexNet/VGG16 backbone from torchvision, which
would download it. We build the network with a random backbone (no download) and copy the backbone
weights from `--lpips-weights PATH` or torchvision's file in the torch hub cache.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from viscoin_cli.errors import UserError

BACKBONES = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"), "vgg": ("vgg16", "vgg16-397923af.pth")}


def find_lpips_backbone(kind: str) -> Path:
    """torchvision's ImageNet file for the LPIPS backbone in the torch hub cache, or a one-line error."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    name = BACKBONES[kind][1]
    if (folder / name).is_file():
        return folder / name
    raise UserError(
        f"LPIPS ({kind}) needs torchvision's {name}: put it into {folder}/, pass --lpips-weights PATH, "
        f"or pass --lpips none to train without the LPIPS term"
    )


class LPIPS(nn.Module):
    """Perceptual distance between [-1, 1] image batches: [N] values, differentiable, parameters frozen."""

    def __init__(self, kind: str = "alex", weights: str | os.PathLike | None = None):
        super().__init__()
        import lpips
        import torchvision

        if kind not in BACKBONES:
            raise UserError(f"--lpips {kind!r}: expected alex, vgg or none")
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(net=kind, pnet_rand=True, verbose=False)
        if weights != "random":  # "random" keeps the random backbone: tests only
            path = Path(weights) if weights else find_lpips_backbone(kind)
            if not path.is_file():
                raise UserError(f"--lpips-weights {path}: no such file")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                features = getattr(torchvision.models, BACKBONES[kind][0])().features
                features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if "features." in k})
            except Exception as err:
                raise UserError(
                    f"{path}: not torchvision {BACKBONES[kind][0]} weights ({type(err).__name__})"
                ) from None
            for block in self.net.net.children():  # the slices hold the backbone's layers by index
                for index, layer in block.named_children():
                    layer.load_state_dict(features[int(index)].state_dict())
        self.kind = kind
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Checks `mode` as `nn.Module.train` does, then stays in eval mode whatever it asks: LPIPS is a fixed
        metric and its dropout must stay off."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        return super().train(False)

    def forward(self, images: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.net(images, other).flatten()
