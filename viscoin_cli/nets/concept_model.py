"""What every concept model in the toolkit is to the interpretation and evaluation commands.

VisCoIN, FLINT and FLAEM all explain a frozen classifier f through K concepts, a linear head on the
pooled concepts, and a decoder that renders an image from (possibly edited) concepts. The commands use
only this interface, so each of them accepts every method:

    out = model.encode(images)             # ConceptOutput: concept_maps, pooled, logits, support, f_logits
    edited = out.concept_maps.clone(); edited[:, 42] *= 3
    images_3x = model.render(edited, out.support)
    weight = model.head_weight()           # [C, K]: the relevance weights W of logits = W·pooled + b

Concept maps are [N, K, h, w] (h = w = 1 for a method whose concepts are plain numbers); `pooled` is what
the head sees, and scaling or zeroing a map scales or zeroes its pooled value (max and mean pooling of
non-negative maps both do), which is what the λ-edits and faithfulness rely on. `support` is the part of
the decoder's input that is not a concept (VisCoIN's γ; an empty [N, 0] tensor for the others): edits
leave it untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import nn

from viscoin_cli.choices import Method
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import (
    CheckpointMeta,
    build_from_config,
    load_checkpoint,
    load_into,
    read_meta,
    sha256_file,
)

METHODS = tuple(str(method) for method in Method)  # the checkpoint kinds of trained concept models


@dataclass
class ConceptOutput:
    concept_maps: torch.Tensor  # Φ [N, K, h, w]
    pooled: torch.Tensor  # φ̄ [N, K], the head's input
    logits: torch.Tensor  # g(x) [N, C]
    support: torch.Tensor  # decoder input besides the concepts [N, S] (S may be 0)
    f_logits: torch.Tensor  # f(x) [N, C], from the same forward pass as the taps
    ws: torch.Tensor | None = None  # VisCoIN only: Ω(Φ, γ) [N, num_ws, w_dim]
    recon: torch.Tensor | None = None  # x̃ [N, 3, H, W] in [-1, 1], from forward()


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients; gradients still flow *through* the module to its inputs."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def check_config_keys(config: dict, known: tuple[str, ...], method: str) -> None:
    """A key we would silently ignore is a config we do not understand: a one-line error naming it."""
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise UserError(f"unknown {method} config key {unknown[0]!r} (expected {', '.join(known)})")


def find_parent(recorded: Path, model_path: Path, role: str) -> Path:
    """The recorded path, else a file of the same name next to the model (a copied or cloned folder), else
    `<role>.safetensors` next to it (the shipped layout: a parent trained under another file name, e.g. a GAN
    snapshot, is shipped as generator.safetensors). The caller checks the sha256 either way."""
    if recorded.is_file():
        return recorded
    for sibling in (Path(model_path).parent / recorded.name, Path(model_path).parent / f"{role}.safetensors"):
        if sibling.is_file():
            return sibling
    return recorded


def verified_parent(meta: CheckpointMeta, role: str, override: str | os.PathLike | None) -> Path:
    """The file a model was trained against (`override`, else where it was recorded), sha256 checked:
    a concept model only explains the very network it was trained with."""
    record = meta.parents.get(role)
    if record is None:
        raise UserError(f"{meta.path}: does not record its {role}")
    file = Path(override) if override is not None else find_parent(Path(record["path"]), meta.path, role)
    if not file.is_file():
        raise UserError(f"{meta.path}: its {role} {file} is missing (pass --{role} PATH to point at it)")
    if sha256_file(file) != record["sha256"]:
        raise UserError(f"{file}: is not the {role} {meta.path} was trained with (sha256 differs)")
    return file


class ConceptModel(nn.Module):
    """Base of the trained concept models: a frozen classifier `f` plus the method's trained parts."""

    method: ClassVar[str]  # one of METHODS, also the checkpoint kind
    f: nn.Module
    config: dict

    @property
    def num_concepts(self) -> int:
        return self.config["num_concepts"]

    def trained_parts(self) -> nn.ModuleDict:
        """What the method's checkpoint stores (never f, nor a frozen generator)."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.trained_parts().parameters())

    def train(self, mode: bool = True) -> ConceptModel:
        """Only the trained parts ever train; f (and any other frozen network) stays in eval mode."""
        for part in self.trained_parts().values():
            part.train(mode)
        self.training = mode
        return self

    def encode(self, images: torch.Tensor) -> ConceptOutput:
        """Concepts and prediction for [-1, 1] images (no rendering)."""
        raise NotImplementedError

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """The decoder's image in [-1, 1] for (possibly edited) concept maps and the untouched support."""
        raise NotImplementedError

    def head_weight(self) -> torch.Tensor:
        """W [C, K] of the linear head logits = W·pooled + b (relevance r = pooled·W / max|pooled·W|)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> ConceptOutput:
        out = self.encode(images)
        out.recon = self.render(out.concept_maps, out.support)
        return out


M = TypeVar("M", bound=ConceptModel)


def load_on_classifier(
    model_type: type[M], path: str | os.PathLike, device: str | torch.device, classifier: str | os.PathLike | None
) -> tuple[M, CheckpointMeta]:
    """A trained model of a method built as `model_type(f, config)` (the baselines): its checkpoint of kind
    `model_type.method`, f from the recorded path (or the given one) with its hash verified."""
    from viscoin_cli.nets.classifier import load_classifier

    tensors, meta = load_checkpoint(path, kind=model_type.method)
    f, _ = load_classifier(verified_parent(meta, "classifier", classifier), device)
    model = build_from_config(lambda **config: model_type(f, config), meta.config, meta.path, model_type.method)
    load_into(model.trained_parts(), tensors, meta.path)
    return model.to(device).eval(), meta


def load_concept_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    classifier: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
) -> tuple[ConceptModel, CheckpointMeta]:
    """Any trained concept model (VisCoIN, FLINT, FLAEM) by its checkpoint kind, parents verified by hash.

    `generator` only applies to VisCoIN (the baselines render with their own decoder); passing it for
    another method is a one-line error rather than silently ignored.
    """
    meta = read_meta(path, kind=METHODS)
    if meta.kind == "viscoin":
        from viscoin_cli.nets.viscoin import load_viscoin

        return load_viscoin(path, device, classifier=classifier, generator=generator)
    if generator is not None:
        raise UserError(
            f"{meta.path} is a {meta.kind} model, which renders with its own decoder: --generator does not apply"
        )
    if meta.kind == "flint":
        from viscoin_cli.nets.flint import load_flint

        return load_flint(path, device, classifier=classifier)
    from viscoin_cli.nets.flaem import load_flaem

    return load_flaem(path, device, classifier=classifier)
