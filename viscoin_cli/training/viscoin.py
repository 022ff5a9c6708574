"""VisCoIN's part of concept-model training (paper §3, docs/method.md): Ψ, Θ, Ω against a frozen f and G.

Every iteration takes n real training images (augmented) and n synthetic ones G(z) (no gradient, no
truncation): synthetic images need no label because the fidelity loss only asks g to agree with f.
All images are [-1, 1] for f, G, LPIPS and the pixel losses alike. The loop itself is
`viscoin_cli.training.concepts.train_concept_model`, shared with the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from viscoin_cli.choices import LpipsNet, Method
from viscoin_cli.data import EMBEDDED
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import parent_record, read_meta
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.concept_model import ConceptOutput
from viscoin_cli.nets.lpips import LPIPS
from viscoin_cli.nets.stylegan2 import load_generator
from viscoin_cli.nets.viscoin import VisCoIN, check_compatible
from viscoin_cli.runtime import Runtime, maybe_compile
from viscoin_cli.training.concepts import ConceptTrainConfig, load_splits
from viscoin_cli.training.config import with_shipped_parent
from viscoin_cli.training.losses import LossWeights, viscoin_loss

# The paper's table per dataset (docs/method.md, "Hyperparameters"); digits: small K and Ψ width, a budget
# that trains in minutes on a CPU. support_ws: the W+ vectors fed by the support vector γ (None: the
# paper's first 3 and last 2 of 14 at 256 px). At 32 px there are 8 and the first 3 already fix a digit's
# shape, so with the paper's choice the concepts drove only the middle three and zeroing them barely
# changed the render (measured on digits: faithfulness median at τ=0.2 only 4.4x its random baseline). On
# digits γ keeps just the last two.
_FIELDS = (
    "num_concepts",
    "hidden",
    "alpha",
    "beta",
    "gamma_rc",
    "delta",
    "iterations",
    "real_batch",
    "synthetic_batch",
    "support_ws",
)
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {name: dict(zip(_FIELDS, values, strict=True)) for name, values in {
    #             K    hidden alpha beta gamma_rc delta iterations real synthetic support_ws
    "digits":   (64,  64,    0.5,  3.0, 0.1,     0.2,  2000,      16,  16,       [-2, -1]),
    "shapes":   (64,  64,    0.5,  3.0, 0.1,     0.2,  2000,      16,  16,       [-2, -1]),
    "celebahq": (64,  512,   0.5,  3.0, 0.2,     2.0,  50_000,    8,   8,        None),
    "cub":      (256, 512,   0.5,  3.0, 0.1,     0.2,  100_000,   8,   8,        None),
    "cars":     (256, 512,   0.5,  3.0, 0.05,    0.2,  100_000,   8,   8,        None),
    "folder":   (256, 512,   0.5,  3.0, 0.1,     0.2,  100_000,   8,   8,        None),
}.items()}
# fmt: on


@dataclass(frozen=True)
class VisCoINConfig(ConceptTrainConfig):
    """`viscoin train` (--method viscoin): f and G (frozen), Ψ/Θ/Ω sizes, the loss weights and the budget."""

    generator: str = ""
    hidden: int = 64
    support_ws: list[int] | None = None
    alpha: float = 0.5
    beta: float = 3.0
    gamma_rc: float = 0.1
    delta: float = 0.2
    synthetic_batch: int = 16
    lpips: LpipsNet = LpipsNet.alex
    lpips_weights: str | None = None
    method: Method = Method.viscoin

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        return dict(PRESETS[dataset])

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        values = with_shipped_parent(super().resolve(values, given), "generator")
        if "lpips" not in given:  # no pretrained LPIPS backbone offline: the embedded datasets train without it
            no_weights = values.get("dataset", "digits") in EMBEDDED and values.get("lpips_weights") is None
            values["lpips"] = "none" if no_weights else "alex"
        if values["lpips"] == "none":
            values["beta"] = 0.0
        return values

    def check(self) -> None:
        if not self.generator:
            raise UserError(f"--dataset {self.dataset}: --classifier and --generator are required (or --resume DIR)")
        super().check()

    def recipe(self, rt: Runtime) -> VisCoINTraining:
        return VisCoINTraining(self, rt)


TERMS = ("fidelity", "rec_l2", "rec_l1", "rec_lpips", "rec_class", "sparsity", "orthogonality", "w_reg")


class VisCoINTraining:
    """VisCoIN's model, data and step loss for the shared loop."""

    terms = TERMS
    shown = ("fidelity", "rec_l2", "rec_lpips")

    def __init__(self, cfg: VisCoINConfig, rt: Runtime):
        f_meta, g_meta = read_meta(cfg.classifier, kind="classifier"), read_meta(cfg.generator, kind="generator")
        self.train_set, self.test_set = load_splits(cfg, cfg.resolution or g_meta.config["img_resolution"])
        check_compatible(f_meta, g_meta, self.train_set.facts())
        f, _ = load_classifier(cfg.classifier, rt.device)
        self.G, _ = load_generator(cfg.generator, rt.device)
        config = {"num_concepts": cfg.num_concepts, "hidden": cfg.hidden, "support_ws": cfg.support_ws}
        self.model = VisCoIN(f, self.G, config).to(rt.device)
        self.f_recon = maybe_compile(f, cfg.compile)  # f on x̃, with gradient: the step's other big forward
        self.lpips_net = LPIPS(cfg.lpips, cfg.lpips_weights).to(rt.device) if cfg.lpips != "none" else None
        self.weights = LossWeights(cfg.alpha, cfg.beta if self.lpips_net is not None else 0.0, cfg.gamma_rc, cfg.delta)
        self.lpips = str(cfg.lpips)
        self.n_fake = cfg.synthetic_batch // rt.world_size
        self.parents = {"classifier": parent_record(cfg.classifier), "generator": parent_record(cfg.generator)}
        self.description = (
            f"VisCoIN with K={cfg.num_concepts} concepts on {cfg.dataset} ({len(self.train_set)} train "
            f"images), f={f_meta.path.name}, G={g_meta.path.name} ({self.G.img_resolution} px, {self.G.num_ws} W+), "
            f"LPIPS {cfg.lpips if self.lpips_net is not None else 'off (beta = 0)'}, "
            f"{cfg.real_batch // rt.world_size}+{self.n_fake} images per step per process"
        )

    def loss(
        self,
        net: torch.nn.Module,
        reals: torch.Tensor,
        labels: torch.Tensor,  # noqa: ARG002 - the fidelity to f needs none
        rt: Runtime,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, ConceptOutput]:
        """Reals and G(z) fakes through Ψ, Θ, Ω, G; the fidelity to f needs no label."""
        model, G = self.model, self.G
        with torch.no_grad():
            fakes = G(rt.shard_randn(self.n_fake, G.z_dim), None, noise_mode="const")
        images = torch.cat([reals, fakes.float()]) if self.n_fake else reals
        with rt.autocast():
            out = net(images)
            f_logits_recon = self.f_recon(out.recon)  # gradient flows through the frozen f into x̃
            loss, terms = viscoin_loss(
                images=images,
                recon=out.recon.float(),
                f_logits=out.f_logits.float(),
                f_logits_recon=f_logits_recon.float(),
                g_logits=out.logits.float(),
                concept_maps=out.concept_maps,
                ws=out.ws,
                w_avg=model.omega.w_avg,
                concept_conv=model.psi.concept_conv,
                lpips=self.lpips_net,
                weights=self.weights,
            )
        return loss, terms, images, out

    def extra(self) -> dict[str, Any]:
        return {"lpips": self.lpips, "loss_weights": self.weights.__dict__}
