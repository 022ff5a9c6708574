"""The classifier f: a ResNet taking [-1, 1] images, with the feature taps VisCoIN reads.

The network is our own copy of torchvision's (`viscoin_cli.nets.resnet`: same parameter names, so
ImageNet weights load as they are, without importing torchvision). Two knobs make small variants for
small images: `width` (channels of layer1; 64 in the standard nets) and `stem` ("imagenet": 7x7 stride-2
conv + max-pool; "small": one 3x3 stride-1 conv, for 32 px inputs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta, build_from_config, load_checkpoint, load_into
from viscoin_cli.nets.resnet import STEMS, BasicBlock, Bottleneck, ResNet

ARCHS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
# torchvision's official ImageNet files, as torch.hub caches them (first = preferred).
IMAGENET_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}
TAPS = ("layer2", "layer3", "layer4_penultimate")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(ResNet):
    """ResNet on [-1, 1] input; `forward_taps` returns the named hidden layers and the logits together."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000, width: int = 64, stem: str = "imagenet"):
        if arch not in ARCHS:
            raise UserError(f"unknown classifier architecture {arch!r}: expected one of {', '.join(ARCHS)}")
        if stem not in STEMS:
            raise UserError(f"unknown stem {stem!r}: expected one of {', '.join(STEMS)}")
        if width < 1 or num_classes < 2:
            raise UserError(f"classifier needs width >= 1 and at least 2 classes (got {width}, {num_classes})")
        block, layers = ARCHS[arch]
        super().__init__(block, layers, num_classes=num_classes, width=width, stem=stem)
        self.arch, self.width, self.stem, self.num_classes = arch, width, stem, num_classes
        # ImageNet normalisation lives inside the model: callers always pass [-1, 1] images.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "num_classes": self.num_classes, "width": self.width, "stem": self.stem}

    def tap_channels(self) -> dict[str, int]:
        expansion = ARCHS[self.arch][0].expansion
        w = self.width * expansion
        return {"layer2": 2 * w, "layer3": 4 * w, "layer4_penultimate": 8 * w}

    def tap_strides(self) -> dict[str, int]:
        """Input pixels per feature-map pixel for each tap (the maps' size is resolution // stride)."""
        stem = 4 if self.stem == "imagenet" else 1
        return {"layer2": 2 * stem, "layer3": 4 * stem, "layer4_penultimate": 8 * stem}

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [N, 3, H, W] in [-1, 1] -> {"layer2", "layer3", "layer4_penultimate", "pooled", "logits"}."""
        x = ((x + 1) * 0.5 - self.mean) / self.std
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        h = self.layer1(h)
        layer2 = self.layer2(h)
        layer3 = self.layer3(layer2)
        penultimate = self.layer4[:-1](layer3)
        h = self.layer4[-1](penultimate)
        pooled = torch.flatten(self.avgpool(h), 1)
        return {
            "layer2": layer2,
            "layer3": layer3,
            "layer4_penultimate": penultimate,
            "pooled": pooled,
            "logits": self.fc(pooled),
        }

    def forward_from(self, layer: str, activation: torch.Tensor) -> torch.Tensor:
        """The logits when the forward pass resumes from a (possibly edited) activation at tap `layer`.

        What an intervention on a hidden layer needs: `forward_from(name, forward_taps(x)[name])` equals
        `forward(x)`, so any change in the logits comes from the edit alone.
        """
        if layer not in (*TAPS, "pooled"):
            raise ValueError(f"unknown tap {layer!r}: expected one of {', '.join((*TAPS, 'pooled'))}")
        h = activation
        if layer == "layer2":
            h = self.layer3(h)
        if layer in ("layer2", "layer3"):
            h = self.layer4[:-1](h)
        if layer != "pooled":
            h = torch.flatten(self.avgpool(self.layer4[-1](h)), 1)
        return self.fc(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)["logits"]


# ---------------------------------------------------------------------------------------------------
# Initial weights


def hub_checkpoint_dir() -> Path:
    """Where torch.hub caches downloaded weights ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(arch: str) -> Path:
    """The ImageNet weights file for `arch` in the torch hub cache, or a one-line error saying what to put where."""
    folder = hub_checkpoint_dir()
    for name in IMAGENET_FILES[arch]:
        if (folder / name).is_file():
            return folder / name
    wanted = IMAGENET_FILES[arch][0]
    raise UserError(
        f"ImageNet weights for {arch} not found: put torchvision's {wanted} into {folder}/ "
        f"(or pass --weights PATH, or --weights none to train from scratch)"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a torchvision .pth (read with weights_only) or a .safetensors file."""
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        return load_checkpoint(path, kind="classifier")[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"--weights {path}: not a readable PyTorch weights file ({type(err).__name__})") from None
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights {path}: does not contain a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_initial_weights(model: Classifier, weights: str | os.PathLike) -> str:
    """Initialise `model` from "none", "imagenet" (hub cache) or a file; returns what was used, for the log.

    The final layer is kept only when its shape fits (ImageNet's 1000-way fc never does).
    """
    if str(weights) == "none":
        return "none (random init)"
    if str(weights) == "imagenet":
        if model.width != 64 or model.stem != "imagenet":
            raise UserError(f"--weights imagenet needs the standard {model.arch} (width 64, imagenet stem)")
        path = find_imagenet_weights(model.arch)
    else:
        path = Path(weights)
    state = _read_state_dict(path)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("fc.") and own[k].shape != v.shape)}
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    wrong = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise UserError(
            f"--weights {path}: not weights for this {model.arch} "
            f"({len(missing) + len(wrong)} mismatches, e.g. {example})"
        )
    model.load_state_dict(state, strict=False)
    return str(path)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Classifier, CheckpointMeta]:
    """Rebuild a trained classifier from its checkpoint alone, in eval mode."""
    tensors, meta = load_checkpoint(path, kind="classifier")
    model = build_from_config(Classifier, meta.config, meta.path, "classifier")
    load_into(model, tensors, meta.path)
    return model.to(device).eval(), meta
