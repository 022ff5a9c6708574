"""StyleGAN2-ADA training and fine-tuning (Karras et al. 2020; docs/method.md, "StyleGAN2-ADA training").

`GanConfig` is a run's options.json; `train_gan` is the loop, one function from top to bottom. Every
minibatch runs the phases of NVIDIA's `training_loop.py`, each its own forward/backward pass (the losses of
`training.losses.StyleGAN2Loss`) followed by its own optimiser step:
    Gmain  every minibatch                           non-saturating logistic loss through D(A(G(z)))
    Greg   when batch_idx % 4 == 0, loss times 4     path-length regularisation
    Dmain  every minibatch                           logistic loss on augmented fakes and reals
    Dreg   when batch_idx % 16 == 0, loss times 16   R1 on augmented reals, through the augmentation
So over k minibatches (k = 4 for G, 16 for D) each optimiser takes k + 1 steps, and lazy regularisation
rescales its Adam for that: lr·k/(k+1), betas^(k/(k+1)). With path-length regularisation off
(`pl_weight` 0, as in the digits preset) Greg is empty and steps nothing, but G's Adam keeps the rescaling,
as NVIDIA's loop does (its `G_reg_interval` stays 4, e.g. in its 'cifar' configuration). Every phase draws
its own latents z, as NVIDIA's loop does; the phases of D share the minibatch of reals.

After the phases, the EMA generator follows G with a half-life ramped up with the images shown, and every
4 minibatches ADA moves the augmentation probability p from the sign of D's outputs on the reals.
Training is measured in kimg (thousands of real images shown to D); a "tick" is `tick_kimg` of them:
logging, checkpoints and sample grids happen at tick boundaries, and every tick re-seeds from
(seed, tick), so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from viscoin_cli.choices import Augment, FidFeatures
from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import DEFAULT_RESOLUTION, check_pool, load_dataset
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import (
    CheckpointMeta,
    build_from_config,
    load_checkpoint,
    load_into,
    load_state,
    read_meta,
    save_checkpoint,
    save_state,
)
from viscoin_cli.io.images import save_grid
from viscoin_cli.metrics.fid import (
    FeatureExtractor,
    InceptionFeatures,
    classifier_extractor,
    feature_statistics,
    generator_fid,
)
from viscoin_cli.nets.augment import PRESETS as AUGMENT_PRESETS
from viscoin_cli.nets.augment import AdaController, AugmentPipe
from viscoin_cli.nets.stylegan2 import (
    Discriminator,
    DiscriminatorEpilogue,
    Generator,
    MappingNetwork,
    SynthesisNetwork,
)
from viscoin_cli.runtime import Runtime, all_reduce_sum, maybe_compile
from viscoin_cli.training.config import TrainConfig
from viscoin_cli.training.losses import StyleGAN2Loss
from viscoin_cli.training.run import RunFolder, RunLoader, run_ticks

G_REG_INTERVAL = 4  # path-length regularisation every 4 minibatches
D_REG_INTERVAL = 16  # R1 every 16 minibatches
PL_DECAY, PL_BATCH_SHRINK = 0.01, 2
ADA_INTERVAL = 4  # minibatches between p updates
LOSS_KEYS = ("loss_G", "loss_pl", "loss_D_fake", "loss_D_real", "loss_r1")  # what a tick logs, as means

# digits: a small generator that learns recognisable digits on a 2-core CPU in ~20 minutes. Batch 16 (twice
# the steps of 32 for the same time), 32 channels, a minibatch-std group of 8 so D sees the variety of a
# batch, faster ADA for the 1437 images, and no path-length regularisation or style mixing (NVIDIA's
# small-image 'cifar' choice). Real data: NVIDIA's 'auto' configuration at 256 px with the paper's batch
# of 16 and ~2M real images shown (2000 kimg). shapes (embedded, 32 px) starts from digits' preset.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(
        z_dim=128,
        w_dim=128,
        map=2,
        cbase=2048,
        cmax=32,
        fp16_res=0,
        mbstd=8,
        batch_size=16,
        glr=0.0025,
        dlr=0.0025,
        ema_kimg=10.0,
        style_mixing=0.0,
        pl_weight=0.0,
        kimg=100.0,
        tick_kimg=2.0,
        snap=5,
        ada_kimg=50,
    ),
    "default": dict(
        z_dim=512,
        w_dim=512,
        map=2,
        cbase=16384,
        cmax=512,
        fp16_res=4,
        mbstd=4,
        batch_size=16,
        glr=0.0025,
        dlr=0.0025,
        ema_kimg=5.0,
        style_mixing=0.9,
        pl_weight=2.0,
        kimg=2000.0,
        tick_kimg=4.0,
        snap=50,
        ada_kimg=500,
    ),
}
# shapes: digits' networks and budget, a stronger R1 and no x-flips. Measured on 2 CPU cores: with digits'
# preset as it is (auto gamma 0.0128) G collapsed onto one ring-shaped object from ~60 kimg; gamma 0.4 kept
# the samples varied to 40 kimg (FID 79 against the shapes classifier's features, still blobs). Position
# is an attribute of shapes, so ADA does not mirror it either.
PRESETS["shapes"] = {**PRESETS["digits"], "gamma": 0.4, "xflip_strength": 0.0}
TRANSFER_ADA_KIMG = 100  # fine-tuning: p adapts faster (the pretrained D overfits a small dataset quickly)
# Network options that, when fine-tuning, default to the --resume-from checkpoints' values: given, they change
# the networks built, and only the tensors that still match are copied (`copy_matching`).
RESUME_OVERRIDES = ("cbase", "cmax", "map", "mbstd")


@dataclass(frozen=True)
class GanConfig(TrainConfig):
    """`finetune-gan`: networks, optimisation, ADA, logging and FID tracking. Field names are options.json's
    keys; the defaults are the `default` preset, so a run written before a field existed keeps its value."""

    mirror: bool = False
    pool: bool = False  # shapes: train on its 50 000-image pool split, not the 4000-image train split
    resume_from: str | None = None  # generator checkpoint to fine-tune
    discriminator: str | None = None  # its discriminator (None: D starts from scratch)
    freeze_d: int = 0
    z_dim: int = 512
    w_dim: int = 512
    # When fine-tuning, map, cbase, cmax and mbstd are None between `create` and `prepare_networks` unless given:
    # the checkpoints' values, which `prepare_networks` writes in (and z_dim, w_dim, fp16_res likewise).
    map: int | None = 2
    cbase: int | None = 16384
    cmax: int | None = 512
    fp16_res: int = 4
    mbstd: int | None = 4
    kimg: float = 2000.0
    batch_size: int = 16
    gamma: float | None = None  # R1 weight; None: NVIDIA's 0.0002·res²/batch
    glr: float = 0.0025
    dlr: float = 0.0025
    ema_kimg: float = 5.0
    ema_rampup: float | None = 0.05
    style_mixing: float = 0.9
    pl_weight: float = 2.0
    aug: Augment = Augment.ada
    p: float = 0.2
    target: float = 0.6
    ada_kimg: int = 500
    xflip_strength: float = 1.0  # multiplies the x-flip probability of the 'bgc' pipeline (NVIDIA's `xflip`)
    tick_kimg: float = 4.0
    snap: int = 50
    keep_snapshots: bool = False
    grid_size: int = 64
    G_kwargs: dict[str, Any] = field(default_factory=dict)  # Generator(**G_kwargs), filled by `prepare_networks`
    D_kwargs: dict[str, Any] = field(default_factory=dict)
    fid_features: FidFeatures | None = None
    fid_classifier: str | None = None
    inception_weights: str | None = None
    fid_images: int = 2000
    compile: bool = False  # torch.compile G's synthesis and D (`maybe_compile`)

    RESUMABLE: ClassVar[frozenset[str]] = frozenset(  # the length of training, logging, FID tracking, --compile
        (
            "kimg",
            "snap",
            "tick_kimg",
            "keep_snapshots",
            "fid_features",
            "fid_classifier",
            "inception_weights",
            "fid_images",
            "compile",
        )
    )
    LENGTH: ClassVar[str | None] = "kimg"
    LENGTH_PER_STEP: ClassVar[float] = 1e-3  # the resume state counts real images shown

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        return dict(PRESETS[dataset if dataset in PRESETS else "default"])

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        values = dict(values)
        if values.get("resume_from"):
            for name in RESUME_OVERRIDES:  # not given: the checkpoints' (filled in by `prepare_networks`)
                values[name] = given.get(name)
            if "ada_kimg" not in given:
                values["ada_kimg"] = TRANSFER_ADA_KIMG
        return values

    def check(self) -> None:
        super().check()
        if self.fid_features == FidFeatures.classifier and not self.fid_classifier:
            raise UserError("--fid-features classifier needs --fid-classifier PATH (a pretrain-classifier checkpoint)")
        if self.xflip_strength < 0:
            raise UserError(f"--xflip-strength {self.xflip_strength:g}: must be at least 0")
        if self.pool:
            check_pool(str(self.dataset))


def prepare_networks(cfg: GanConfig) -> GanConfig:
    """A new run's G and D constructor kwargs: the preset's for a new GAN. When fine-tuning, the checkpoints'
    own (then also the discriminator beside the generator, and the generator's resolution) with the network
    options given (--map, --cbase, --cmax, --mbstd) written over them: NVIDIA's resume builds the networks the
    options ask for. The config's network fields then say what the networks are."""
    if not cfg.resume_from:
        g_kwargs, d_kwargs = network_kwargs(cfg, cfg.resolution or DEFAULT_RESOLUTION[cfg.dataset], 3)
        return replace(cfg, G_kwargs=g_kwargs, D_kwargs=d_kwargs)
    g_meta = read_meta(cfg.resume_from, kind="generator")
    d_path = cfg.discriminator
    if d_path is None and g_meta.extra.get("discriminator"):
        sibling = g_meta.path.parent / str(g_meta.extra["discriminator"])
        d_path = str(sibling) if sibling.is_file() else None
    if d_path is not None:
        d_source: object = d_path
        d_kwargs = copy.deepcopy(read_meta(d_path, kind="discriminator").config)
    else:
        d_source = g_meta.path
        d_kwargs = build_from_config(lambda **g: discriminator_kwargs_for(g), g_meta.config, g_meta.path, "generator")
    resolution = cfg.resolution if cfg.resolution is not None else _img_resolution(g_meta)
    g_kwargs = _override(copy.deepcopy(g_meta.config), g_meta.path, "generator", _g_overrides(cfg))
    d_kwargs = _override(d_kwargs, d_source, "discriminator", _d_overrides(cfg))
    return replace(
        cfg,
        discriminator=d_path,
        resolution=resolution,
        G_kwargs=g_kwargs,
        D_kwargs=d_kwargs,
        **_network_fields(cfg, g_kwargs, d_kwargs),
    )


def _g_overrides(cfg: GanConfig) -> dict[tuple[str, ...], int]:
    """The network options given, as paths into the generator's kwargs."""
    given = {
        ("mapping_kwargs", "num_layers"): cfg.map,
        ("synthesis_kwargs", "channel_base"): cfg.cbase,
        ("synthesis_kwargs", "channel_max"): cfg.cmax,
    }
    return {path: value for path, value in given.items() if value is not None}


def _d_overrides(cfg: GanConfig) -> dict[tuple[str, ...], int]:
    """... and into the discriminator's: --cbase and --cmax apply to both networks, as in NVIDIA's train.py."""
    given = {
        ("channel_base",): cfg.cbase,
        ("channel_max",): cfg.cmax,
        ("epilogue_kwargs", "mbstd_group_size"): cfg.mbstd,
    }
    return {path: value for path, value in given.items() if value is not None}


def _override(kwargs: Any, source: object, what: str, values: dict[tuple[str, ...], int]) -> Any:
    """`kwargs` with `values` written at their paths (nested objects made where missing). A config that is
    not a JSON object is returned as it is: building the network reports it."""
    if not isinstance(kwargs, dict):
        return kwargs
    for path, value in values.items():
        node = kwargs
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"{source}: {what} config not understood ({key} is not a JSON object)")
        node[path[-1]] = value
    return kwargs


def _network_fields(cfg: GanConfig, g_kwargs: Any, d_kwargs: Any) -> dict[str, int]:
    """The config's network fields as the kwargs say (the constructors' defaults where they are silent), so a
    fine-tuning run's options.json describes the networks it trains. Where the kwargs hold no integer for a
    field (a bad config, which building the network reports; mbstd None), it keeps its value or its default."""

    def default(cls: type, name: str) -> int:
        return inspect.signature(cls).parameters[name].default

    sources: dict[str, tuple[Any, tuple[str, ...], int | None]] = {
        "z_dim": (g_kwargs, ("z_dim",), None),
        "w_dim": (g_kwargs, ("w_dim",), None),
        "map": (g_kwargs, ("mapping_kwargs", "num_layers"), default(MappingNetwork, "num_layers")),
        "cbase": (g_kwargs, ("synthesis_kwargs", "channel_base"), default(SynthesisNetwork, "channel_base")),
        "cmax": (g_kwargs, ("synthesis_kwargs", "channel_max"), default(SynthesisNetwork, "channel_max")),
        "fp16_res": (g_kwargs, ("synthesis_kwargs", "num_fp16_res"), default(SynthesisNetwork, "num_fp16_res")),
        "mbstd": (
            d_kwargs,
            ("epilogue_kwargs", "mbstd_group_size"),
            default(DiscriminatorEpilogue, "mbstd_group_size"),
        ),
    }
    found = {}
    for name, (kwargs, path, fallback) in sources.items():
        value = _lookup(kwargs, path, fallback)
        if value is None:
            value = getattr(cfg, name)
        found[name] = value if value is not None else GanConfig.__dataclass_fields__[name].default
    return found


def _lookup(kwargs: Any, path: tuple[str, ...], default: int | None) -> int | None:
    """The integer at `path` in nested kwargs, `default` where a key is missing, None where it is no integer."""
    value = kwargs
    for key in path:
        if not isinstance(value, Mapping):
            return None
        if key not in value:
            return default
        value = value[key]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _img_resolution(meta: CheckpointMeta) -> int:
    value = meta.config.get("img_resolution") if isinstance(meta.config, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{meta.path}: generator config not understood (no integer img_resolution)")
    return value


def network_kwargs(cfg: GanConfig, resolution: int, channels: int) -> tuple[dict, dict]:
    """Generator / Discriminator constructor kwargs (NVIDIA's names) for a new GAN."""
    synthesis = dict(
        channel_base=cfg.cbase,
        channel_max=cfg.cmax,
        num_fp16_res=cfg.fp16_res,
        conv_clamp=256 if cfg.fp16_res else None,
    )
    g_kwargs = dict(
        z_dim=cfg.z_dim,
        c_dim=0,
        w_dim=cfg.w_dim,
        img_resolution=resolution,
        img_channels=channels,
        mapping_kwargs=dict(num_layers=cfg.map),
        synthesis_kwargs=synthesis,
    )
    d_kwargs = discriminator_kwargs_for(g_kwargs)
    d_kwargs["epilogue_kwargs"] = dict(mbstd_group_size=cfg.mbstd)
    return g_kwargs, d_kwargs


def discriminator_kwargs_for(g_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A matching unconditional resnet D for a generator config (when no discriminator comes with it)."""
    synthesis = g_kwargs.get("synthesis_kwargs", {})
    return dict(
        c_dim=0,
        img_resolution=g_kwargs["img_resolution"],
        img_channels=g_kwargs["img_channels"],
        architecture="resnet",
        channel_base=synthesis.get("channel_base", 32768),
        channel_max=synthesis.get("channel_max", 512),
        num_fp16_res=synthesis.get("num_fp16_res", 0),
        conv_clamp=synthesis.get("conv_clamp"),
    )


# ---------------------------------------------------------------------------------------------------
# Phases and optimisers


@dataclass
class Phase:
    """One of NVIDIA's training phases: the loss it runs, the optimiser it steps and how often it runs
    (every `interval` minibatches, with its loss multiplied by `interval`)."""

    name: str
    opt: torch.optim.Optimizer
    interval: int = 1

    def run(self, loss: StyleGAN2Loss, real_img: torch.Tensor, gen_z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero the gradients, backward the phase's loss times its interval with gradients on for the
        parameters it trains only, and step its optimiser; returns what the loss logged."""
        self.opt.zero_grad(set_to_none=True)
        self.requires_grad(True)
        logged = loss.accumulate_gradients(self.name, real_img, gen_z, gain=self.interval)
        self.requires_grad(False)
        self.opt.step()
        return logged

    def requires_grad(self, flag: bool) -> None:
        """Turn gradients on or off for the parameters this phase trains (frozen D blocks are in no optimiser)."""
        for group in self.opt.param_groups:
            for param in group["params"]:
                param.requires_grad_(flag)


class CompiledMainPasses(torch.nn.Module):
    """`module`, torch.compile'd for the main phases and eager (`eager` True) for the regularisation phases:
    R1 and path length differentiate D and G's synthesis twice, which compiled code cannot. The compiled
    wrapper shares the module's tensors: optimisers, EMA and checkpoints use the module itself."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self.compiled = maybe_compile(module, True)
        self.eager = False

    @staticmethod
    def select(modules: list[CompiledMainPasses], phase: Phase) -> None:
        """Eager for a regularisation phase (Greg, Dreg), compiled otherwise."""
        for module in modules:
            module.eager = phase.name.endswith("reg")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (self.module if self.eager else self.compiled)(*args, **kwargs)


def lazy_adam(params, lr: float, interval: int | None) -> torch.optim.Adam:
    """Adam(β₁ 0, β₂ 0.99, ε 1e-8); with a regularisation phase every `interval` minibatches, lr and betas
    are rescaled by c = interval/(interval+1) (lr·c, β^c), as k + 1 steps stand for k minibatches."""
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0**ratio, 0.99**ratio), eps=1e-8)


def phases_for(net: str, opt: torch.optim.Optimizer, interval: int | None) -> list[Phase]:
    """[main, reg] with lazy regularisation every `interval` minibatches, else [both] (NVIDIA's setup)."""
    if interval is None:
        return [Phase(net + "both", opt)]
    return [Phase(net + "main", opt), Phase(net + "reg", opt, interval)]


# ---------------------------------------------------------------------------------------------------
# Helpers of the loop


class LossSums:
    """The values the phases log, summed over a tick on the device (no host sync per minibatch)."""

    def __init__(self, device: torch.device):
        self.sums = {key: torch.zeros((), device=device) for key in LOSS_KEYS}
        self.counts = dict.fromkeys(LOSS_KEYS, 0)  # phases that logged each value

    def add(self, logged: dict[str, torch.Tensor]) -> None:
        for key, value in logged.items():
            self.sums[key] += value
            self.counts[key] += 1

    def average(self, rt: Runtime) -> None:
        """Average the sums over processes (each a mean over its share of the batch): a tick then logs the
        global batch's losses, as one process would."""
        if not rt.distributed:
            return
        totals = all_reduce_sum([value.item() for value in self.sums.values()], rt)
        for key, total in zip(self.sums, totals, strict=True):
            self.sums[key].fill_(total / rt.world_size)

    def mean(self, key: str) -> float:
        """The mean over the phases that logged it (0 when none did, e.g. loss_pl with --pl-weight 0)."""
        return self.sums[key].item() / max(self.counts[key], 1)


def _ema_beta(cfg: GanConfig, cur_nimg: int) -> float:
    """G_ema's decay for one minibatch: half-life ema_kimg, ramped up as ema_rampup·(images shown so far)."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.ema_rampup)
    return 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))


def _finite(loss_G: float, cur_nimg: int, run: RunFolder) -> float:
    if not math.isfinite(loss_G):
        raise UserError(
            f"training diverged (G loss {loss_G}) at {cur_nimg / 1000:.1f} kimg; the last good checkpoint is in {run}"
        )
    return loss_G


def _freeze_discriminator_blocks(D: torch.nn.Module, count: int) -> list[str]:
    """Freeze the first `count` blocks of D, from the highest resolution down (transfer learning)."""
    blocks = sorted(
        (name for name, _ in D.named_children() if name.startswith("b") and name[1:].isdigit()),
        key=lambda name: -int(name[1:]),
    )
    frozen = blocks[:count]
    for name in frozen:
        getattr(D, name).requires_grad_(False)
    return frozen


@torch.no_grad()
def _update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


@torch.no_grad()
def sample_grid(G_ema: torch.nn.Module, zs: torch.Tensor, path: Path, batch: int = 32) -> Path:
    images = torch.cat([G_ema(z, None, noise_mode="const").cpu() for z in zs.split(batch)])
    return save_grid(images, path, columns=math.ceil(math.sqrt(len(images))))


def _fid_setup(cfg: GanConfig, dataset, rt: Runtime) -> tuple[FeatureExtractor | None, tuple | None]:
    """The FID feature extractor and the real images' feature statistics, when FID tracking is on."""
    if cfg.fid_features is None:
        return None, None
    if cfg.fid_features == FidFeatures.inception:
        extractor: FeatureExtractor = InceptionFeatures(cfg.inception_weights)
    else:
        extractor = classifier_extractor(cfg.fid_classifier, rt.device)
    count = min(len(dataset), cfg.fid_images)
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=64, num_workers=cfg.workers)
    real_stats = feature_statistics(extractor.features((images for images, _ in loader), rt.device))
    return extractor, real_stats


# ---------------------------------------------------------------------------------------------------
# Fine-tuning: the checkpoints' tensors into the networks the options ask for


@dataclass(frozen=True)
class CopyReport:
    """What `copy_matching` did: every name of the network is in `copied` or `fresh` (kept its
    initialisation: not in the checkpoint, or in `reshaped` when the checkpoint's has another shape);
    `dropped` are the checkpoint's names the network does not have."""

    copied: tuple[str, ...]
    fresh: tuple[str, ...]
    reshaped: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every tensor of the network copied and every one of the checkpoint used."""
        return not self.fresh and not self.dropped

    def to_json(self) -> dict[str, Any]:
        return {
            "copied": len(self.copied),
            "total": len(self.copied) + len(self.fresh),
            "fresh": list(self.fresh),
            "shape_differs": list(self.reshaped),
            "dropped": list(self.dropped),
        }


@torch.no_grad()
def copy_matching(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> CopyReport:
    """Copy each of `tensors` into the parameter or buffer of `module` with the same name and shape; the others
    keep their values. NVIDIA's resume (`misc.copy_params_and_buffers(..., require_all=False)`) copies by name
    alone (`copy_`: another shape fails, or broadcasts); here a tensor of another shape is left fresh."""
    copied, fresh, reshaped = [], [], []
    own_tensors = module.state_dict()  # detached, sharing the parameters' and buffers' storage
    for name, own in own_tensors.items():
        source = tensors.get(name)
        if source is None:
            fresh.append(name)
        elif tuple(source.shape) != tuple(own.shape):
            fresh.append(name)
            reshaped.append(name)
        else:
            own.copy_(source.detach())
            copied.append(name)
    dropped = [name for name in tensors if name not in own_tensors]
    return CopyReport(tuple(copied), tuple(fresh), tuple(reshaped), tuple(sorted(dropped)))


def _resume_weights(module: torch.nn.Module, kind: str, path: str, kwargs: Any) -> CopyReport:
    """The checkpoint's tensors into `module` (`copy_matching`). When the network is the checkpoint's own
    configuration every tensor must match: one that does not means a damaged file, a one-line error."""
    tensors, meta = load_checkpoint(path, kind=kind)
    report = copy_matching(module, tensors)
    if meta.config == kwargs and not report.complete:
        load_into(module, tensors, meta.path)  # raises, naming what does not match
    return report


def _names(names: tuple[str, ...] | list[str], limit: int = 8) -> str:
    """Tensor names, compactly: those of one module as `prefix.{a,b}`, at most `limit` modules, then a count."""
    groups: dict[str, list[str]] = {}
    for name in names:
        prefix, _, leaf = name.rpartition(".")
        groups.setdefault(prefix, []).append(leaf)
    parts = [
        f"{prefix}.{leaves[0]}" if len(leaves) == 1 else f"{prefix}.{{{','.join(leaves)}}}"
        for prefix, leaves in groups.items()
    ]
    parts = [part.lstrip(".") for part in parts]
    more = f", ... (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def describe_copy(report: dict[str, Any], what: str, path: object) -> str:
    """One line for the console: `resume: copied 42 of 50 generator tensors from PATH; fresh: ...`."""
    copied, total = report["copied"], report["total"]
    line = f"resume: copied {'all ' if copied == total else ''}{copied}{'' if copied == total else f' of {total}'}"
    line += f" {what} tensors from {path}"
    new = [name for name in report["fresh"] if name not in report["shape_differs"]]
    if new:
        line += f"; fresh (not in the checkpoint): {_names(new)}"
    if report["shape_differs"]:
        line += f"; fresh (shape differs): {_names(report['shape_differs'])}"
    if report["dropped"]:
        line += f"; dropped (not in the network): {_names(report['dropped'])}"
    return line


def _networks(cfg: GanConfig, run: RunFolder, dataset, console: Console, *, resume: bool):
    """G and D as the config says (checked against the data) and, for a new fine-tuning run, what of the
    checkpoints' weights they got (None otherwise)."""
    G = build_from_config(Generator, cfg.G_kwargs, cfg.resume_from or run.options, "generator")
    D = build_from_config(Discriminator, cfg.D_kwargs, cfg.discriminator or run.options, "discriminator")
    if (G.img_resolution, G.img_channels) != (dataset.resolution, dataset.channels):
        raise UserError(
            f"the generator makes {G.img_resolution} px images with {G.img_channels} channels but the "
            f"dataset has {dataset.resolution} px, {dataset.channels} channels (set --resolution {G.img_resolution})"
        )
    if not cfg.resume_from or resume:
        return G, D, None
    record: dict[str, Any] = {"generator": _resume_weights(G, "generator", cfg.resume_from, cfg.G_kwargs).to_json()}
    console.print(describe_copy(record["generator"], "generator", cfg.resume_from))
    if cfg.discriminator:
        record["discriminator"] = _resume_weights(D, "discriminator", cfg.discriminator, cfg.D_kwargs).to_json()
        console.print(describe_copy(record["discriminator"], "discriminator", cfg.discriminator))
    else:
        record["discriminator"] = None
        console.print("resume: no discriminator comes with this generator: D starts from scratch")
    return G, D, record


def augment_pipe(cfg: GanConfig) -> AugmentPipe:
    """NVIDIA's 'bgc' pipeline, its x-flip probability multiplied by --xflip-strength, p as --aug says."""
    strengths = dict(AUGMENT_PRESETS["bgc"])
    strengths["xflip"] *= cfg.xflip_strength
    augment = AugmentPipe(**strengths)
    augment.p.fill_(cfg.p if cfg.aug == Augment.fixed else 0.0)
    return augment


def _check_batch(cfg: GanConfig, rt: Runtime, resolution: int) -> int:
    """The per-process batch, after checking the resolution and the batch's split into processes and groups."""
    if resolution < 16 or resolution & (resolution - 1):
        raise UserError(f"--resolution {resolution}: StyleGAN2 needs a power of two >= 16")
    batch = cfg.batch_size
    if batch % (rt.world_size * cfg.mbstd) and batch // rt.world_size >= cfg.mbstd:
        raise UserError(f"--batch-size {batch} must be a multiple of processes x --mbstd ({rt.world_size}x{cfg.mbstd})")
    return batch // rt.world_size


def _save_tick(run: RunFolder, cfg: GanConfig, G_ema, D, state: dict, facts: dict, snapshot: bool, grid_z) -> None:
    """The tick's checkpoints: D, the EMA generator, the resume state and, at a snapshot, a sample grid."""
    cur_nimg = state["cur_nimg"]
    save_checkpoint(
        run.path / "latest.D.safetensors",
        D.state_dict(),
        kind="discriminator",
        config=cfg.D_kwargs,
        dataset=facts,
        step=cur_nimg,
        extra={"augment_p": float(state["augment_p"])},
    )
    meta = dict(
        kind="generator",
        config=cfg.G_kwargs,
        dataset=facts,
        step=cur_nimg,
        extra={"kimg": cur_nimg / 1000, "discriminator": "latest.D.safetensors"},
    )
    save_checkpoint(run.latest, G_ema.state_dict(), **meta)
    save_state(run.state, state, step=cur_nimg)
    if snapshot:
        kimg_tag = f"{cur_nimg // 1000:06d}"
        sample_grid(G_ema, grid_z, run.path / f"fakes{kimg_tag}.png")
        if cfg.keep_snapshots:
            save_checkpoint(run.path / f"network-snapshot-{kimg_tag}.safetensors", G_ema.state_dict(), **meta)


# ---------------------------------------------------------------------------------------------------
# The loop


def train_gan(cfg: GanConfig, run: RunFolder, rt: Runtime, console: Console, *, resume: bool) -> dict[str, Any]:
    """Train (or fine-tune) a StyleGAN2-ADA generator as `cfg` says, writing into `run`."""
    # --- setup -----------------------------------------------------------------------------------------
    dataset = load_dataset(
        cfg.dataset,
        "pool" if cfg.pool else "train",
        root=cfg.data_root,
        resolution=cfg.resolution,
        skip_bad_images=cfg.skip_bad_images,
        bbox_crop=cfg.bbox_crop,
    )
    per_rank, batch = _check_batch(cfg, rt, dataset.resolution), cfg.batch_size
    gamma = cfg.gamma if cfg.gamma is not None else 0.0002 * dataset.resolution**2 / batch  # NVIDIA's auto gamma
    G, D, resumed_from = _networks(cfg, run, dataset, console, resume=resume)
    G_ema = copy.deepcopy(G).eval()  # fresh tensors included, as NVIDIA's G_ema (one generator in our checkpoints)
    augment = augment_pipe(cfg)
    ada = AdaController(target=cfg.target, ada_kimg=cfg.ada_kimg, batch_size=batch, interval=ADA_INTERVAL)
    frozen = _freeze_discriminator_blocks(D, cfg.freeze_d)
    for module in (G, D, G_ema, augment):
        module.to(rt.device)
    # NVIDIA's intervals whatever the weights: with pl_weight 0 (or γ 0) the reg phase is empty, Adam skips
    # parameters without a gradient, and the main phase keeps the rescaled lr and betas.
    opt_G = lazy_adam(G.parameters(), cfg.glr, G_REG_INTERVAL)
    opt_D = lazy_adam([p for p in D.parameters() if p.requires_grad], cfg.dlr, D_REG_INTERVAL)
    phases = phases_for("G", opt_G, G_REG_INTERVAL) + phases_for("D", opt_D, D_REG_INTERVAL)
    # DDP wraps what trains (NVIDIA: mapping, synthesis and D apart), then each phase turns on its own gradients.
    ddp = (lambda m: DistributedDataParallel(m, broadcast_buffers=False)) if rt.distributed else (lambda m: m)
    # --compile: G's synthesis and D compiled for the main phases (the mapping network is small).
    compiled = [CompiledMainPasses(G.synthesis), CompiledMainPasses(D)] if cfg.compile else []
    synthesis, discriminator = compiled or (G.synthesis, D)
    loss = StyleGAN2Loss(
        ddp(G.mapping),
        ddp(synthesis),
        ddp(discriminator),
        augment,
        style_mixing_prob=cfg.style_mixing,
        r1_gamma=gamma,
        pl_batch_shrink=PL_BATCH_SHRINK,
        pl_decay=PL_DECAY,
        pl_weight=cfg.pl_weight,
        autocast=rt.autocast,
        device=rt.device,
    )
    G.requires_grad_(False)
    D.requires_grad_(False)
    cur_nimg, tick = 0, 0
    if resume:
        state = load_state(run.state, device=rt.device)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        augment.p.copy_(state["augment_p"])
        ada.load_state_dict(state["ada"])
        loss.pl_mean.copy_(state["pl_mean"])
        cur_nimg, tick = state["cur_nimg"], state["tick"]
        resumed_from = state.get("resume_from")  # what the first start copied (None before this was recorded)
        if rt.is_main:
            run.truncate_metrics("tick", tick)
        console.print(f"resuming {run} at {cur_nimg / 1000:.1f} kimg (tick {tick})")
    fid_extractor, real_stats = _fid_setup(cfg, dataset, rt) if rt.is_main else (None, None)
    grid_z = torch.randn(cfg.grid_size, G.z_dim, generator=torch.Generator().manual_seed(cfg.seed))
    dataset_facts = dataset.facts()
    total_nimg = int(cfg.kimg * 1000)
    steps_per_tick = max(1, int(cfg.tick_kimg * 1000) // batch)
    console.print(
        f"StyleGAN2 {dataset.resolution}px ({sum(p.numel() for p in G.parameters()) / 1e6:.2f}M G, "
        f"{sum(p.numel() for p in D.parameters()) / 1e6:.2f}M D) on {cfg.dataset} "
        f"({len(dataset)} images), batch {batch}, R1 gamma {gamma:.4g}, aug {cfg.aug}, "
        f"phases {', '.join(phase.name for phase in phases)}"
        + (" (Greg empty: path length off)" if cfg.pl_weight == 0 else "")
        + (f", frozen D blocks {', '.join(frozen)}" if frozen else "")
    )

    # --- loop ------------------------------------------------------------------------------------------
    t_start = time.perf_counter()
    last: dict[str, Any] = {}
    # One loader for the rest of the run; --mirror's x-flips are the items' own, decided by their seeds.
    ticks = run_ticks(tick, -(-(total_nimg - cur_nimg) // batch), steps_per_tick)
    data = RunLoader(dataset, per_rank, cfg.seed, ticks, rt, cfg.workers, mirror=cfg.mirror)
    while cur_nimg < total_nimg:
        loader = data.tick(tick)
        sums = LossSums(rt.device)
        t_tick = time.perf_counter()
        with Progress(console, steps_per_tick, f"tick {tick + 1} ({cur_nimg / 1000:.1f} kimg)") as progress:
            for step, (reals, _) in enumerate(loader):
                batch_idx = cur_nimg // batch
                reals = reals.to(rt.device, non_blocking=True)
                all_gen_z = torch.stack([rt.shard_randn(per_rank, G.z_dim) for _ in phases])

                # The phases: Gmain, Greg, Dmain, Dreg (or Gboth), each with its own optimiser step.
                for phase, gen_z in zip(phases, all_gen_z, strict=True):
                    if batch_idx % phase.interval != 0:
                        continue
                    CompiledMainPasses.select(compiled, phase)
                    logged = phase.run(loss, reals, gen_z)
                    if "real_logits" in logged:
                        ada.accumulate(logged.pop("real_logits"))
                    sums.add(logged)

                # EMA generator, with its half-life ramped up over the first images.
                cur_nimg += batch
                _update_ema(G_ema, G, _ema_beta(cfg, cur_nimg))
                # ADA: nudge p toward the target overfitting heuristic r_t.
                if cfg.aug == Augment.ada and (batch_idx + 1) % ADA_INTERVAL == 0:
                    augment.p.copy_(ada.update(augment.p, reduce=lambda t: all_reduce_sum(t, rt)))
                if step % 10 == 9 or step == steps_per_tick - 1:
                    loss_now = _finite(sums.mean("loss_G"), cur_nimg, run)
                    progress.advance(step + 1 - progress.done, G=loss_now, p=float(augment.p))
                if cur_nimg >= total_nimg:
                    break

        # --- tick: log, checkpoint, grid ---------------------------------------------------------------
        tick += 1
        sums.average(rt)
        seconds = time.perf_counter() - t_tick
        shown = sums.counts["loss_G"] * batch  # images shown this tick (one Gmain or Gboth per minibatch)
        last = {
            "tick": tick,
            "kimg": cur_nimg / 1000,
            **{key: sums.mean(key) for key in LOSS_KEYS},
            "p": float(augment.p),
            "r_t": ada.last_rt,
            "pl_mean": loss.pl_mean.item(),
            "sec_per_kimg": seconds / max(shown / 1000, 1e-9),
            "kimg_per_sec": shown / 1000 / seconds,
        }
        done = cur_nimg >= total_nimg
        snapshot = tick % cfg.snap == 0 or done
        if snapshot and fid_extractor is not None:  # only rank 0 has an extractor
            last["fid"] = generator_fid(G_ema, fid_extractor, real_stats, cfg.fid_images, cfg.seed, device=rt.device)
            last["fid_features"] = fid_extractor.label
        if rt.is_main:
            run.log(last)
            state = {
                "G": G.state_dict(),
                "D": D.state_dict(),
                "G_ema": G_ema.state_dict(),
                "opt_G": opt_G.state_dict(),
                "opt_D": opt_D.state_dict(),
                "augment_p": augment.p,
                "ada": ada.state_dict(),
                "pl_mean": loss.pl_mean,
                "cur_nimg": cur_nimg,
                "tick": tick,
            }
            state.update({"resume_from": resumed_from} if cfg.resume_from else {})  # for a resumed run's summary
            _save_tick(run, cfg, G_ema, D, state, dataset_facts, snapshot, grid_z.to(rt.device))
        console.print(
            f"tick {tick}  kimg {cur_nimg / 1000:.1f}  "
            + format_metrics({k: v for k, v in last.items() if k not in ("tick", "kimg")})
        )

    data.close()
    resume_record = {"resume_from": resumed_from} if cfg.resume_from else {}  # what fine-tuning started fresh
    return {
        "out": str(run.path),
        "generator": str(run.latest),
        "kimg": cur_nimg / 1000,
        "seconds": time.perf_counter() - t_start,
        "last": last,
        **resume_record,
    }
