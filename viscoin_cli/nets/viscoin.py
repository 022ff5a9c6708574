"""The VisCoIN model as one object: frozen f and G around the trained Ψ, Θ, Ω.

This is the Python API the interpretation and evaluation commands use:

    model, meta = load_viscoin("model.safetensors")
    out = model(images)                  # concept_maps, pooled, logits, support, ws, recon
    edited = out.concept_maps.clone(); edited[:, 42] *= 3
    images_3x = model.render(edited, out.support)

Only Ψ, Θ and Ω are saved in a `viscoin` checkpoint; f and G are loaded from the files it was trained
against, whose sha256 the checkpoint records and `load_viscoin` verifies.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta, build_from_config, load_checkpoint, load_into
from viscoin_cli.nets.classifier import Classifier, load_classifier
from viscoin_cli.nets.concept_model import ConceptModel, ConceptOutput, check_config_keys, freeze, verified_parent
from viscoin_cli.nets.concepts import ConceptExtractor, ConceptTranslator, InterpretableHead, default_support_ws

# VisCoIN's output: Φ [N, K, 3, 3], φ̄ [N, K], g(x), γ [N, K*9], f(x), and from forward() Ω(Φ, γ) and x̃.
VisCoINOutput = ConceptOutput


CONFIG_KEYS = ("num_concepts", "hidden", "support_ws")  # what a viscoin checkpoint's config holds


class VisCoIN(ConceptModel):
    method = "viscoin"

    def __init__(self, classifier: Classifier, generator: nn.Module, config: dict[str, Any]):
        check_config_keys(config, CONFIG_KEYS, "VisCoIN")
        super().__init__()
        self.config = dict(config)
        self.f = freeze(classifier)
        self.G = freeze(generator)
        support_ws = config.get("support_ws")
        if support_ws is None:
            support_ws = default_support_ws(generator.num_ws)
        self.psi = ConceptExtractor(
            classifier.tap_channels(), classifier.tap_strides(), config["num_concepts"], config["hidden"]
        )
        self.theta = InterpretableHead(config["num_concepts"], classifier.num_classes)
        self.omega = ConceptTranslator(
            config["num_concepts"], generator.num_ws, generator.w_dim, generator.mapping.w_avg, support_ws
        )
        self.config["support_ws"] = list(self.omega.support_ws)  # resolved: sorted, none negative

    def trained_parts(self) -> nn.ModuleDict:
        """What a viscoin checkpoint stores: Ψ, Θ, Ω (f and G live in their own files)."""
        return nn.ModuleDict({"psi": self.psi, "theta": self.theta, "omega": self.omega})

    def head_weight(self) -> torch.Tensor:
        return self.theta.linear.weight

    def encode(self, images: torch.Tensor) -> ConceptOutput:
        """Concepts and prediction for [-1, 1] images (no rendering)."""
        taps = self.f.forward_taps(images)
        concept_maps, support = self.psi(taps)
        pooled = self.theta.pool(concept_maps)
        return VisCoINOutput(concept_maps, pooled, self.theta.linear(pooled), support, taps["logits"])

    def translate(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return self.omega(concept_maps, support)

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """x̃ from (possibly edited) concept maps: G.synthesis(Ω(Φ, γ)), constant noise."""
        return self.G.synthesis(self.translate(concept_maps, support), noise_mode="const")

    def forward(self, images: torch.Tensor) -> ConceptOutput:
        out = self.encode(images)
        out.ws = self.translate(out.concept_maps, out.support)
        out.recon = self.G.synthesis(out.ws, noise_mode="const")
        return out


def check_compatible(classifier_meta: CheckpointMeta, generator_meta: CheckpointMeta, dataset: dict | None) -> None:
    """f, G and the data must agree on resolution, channels and classes; a one-line error otherwise."""
    g_res = generator_meta.config.get("img_resolution")
    g_channels = generator_meta.config.get("img_channels")
    f_data = classifier_meta.dataset or {}
    if dataset is not None:
        if g_res != dataset["resolution"]:
            raise UserError(
                f"{generator_meta.path} makes {g_res} px images but the dataset is {dataset['resolution']} px "
                f"(pass --resolution {g_res} or use a {dataset['resolution']} px generator)"
            )
        if g_channels != dataset["channels"]:
            raise UserError(
                f"{generator_meta.path} makes {g_channels}-channel images, the data has {dataset['channels']}"
            )
        if classifier_meta.config["num_classes"] != dataset["num_classes"]:
            raise UserError(
                f"{classifier_meta.path} predicts {classifier_meta.config['num_classes']} classes but "
                f"{dataset['name']} has {dataset['num_classes']}"
            )
        if f_data.get("class_names") and f_data["class_names"] != dataset["class_names"]:
            raise UserError(f"{classifier_meta.path} was trained on other classes than {dataset['name']}'s")
    if f_data.get("resolution") and f_data["resolution"] != g_res:
        raise UserError(
            f"{classifier_meta.path} was trained at {f_data['resolution']} px "
            f"but {generator_meta.path} makes {g_res} px"
        )


def load_viscoin(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    classifier: str | os.PathLike | None = None,
    generator: str | os.PathLike | None = None,
) -> tuple[VisCoIN, CheckpointMeta]:
    """A trained model, with f and G from the recorded paths (or the given ones), hashes verified."""
    from viscoin_cli.nets.stylegan2 import load_generator

    tensors, meta = load_checkpoint(path, kind="viscoin")
    parts = {
        role: verified_parent(meta, role, override)
        for role, override in (("classifier", classifier), ("generator", generator))
    }
    f, _ = load_classifier(parts["classifier"], device)
    G, _ = load_generator(parts["generator"], device)
    model = build_from_config(lambda **config: VisCoIN(f, G, config), meta.config, meta.path, "viscoin")
    load_into(model.trained_parts(), tensors, meta.path)
    return model.to(device).eval(), meta
