"""Activation maximisation (AM) of a concept, as FLINT visualises its attributes, for any concept model.

The VisCoIN paper shows FLINT's concepts "as FLINT does": the input image is optimised to raise the
attribute's activation, starting from one of its most activating samples. This module follows FLINT's
official code (github jayneelparekh/FLINT, `flint.py`: `optimize_inp`, `jitter`, and `single_pair`, which
sets its CUB-200 hyperparameters), on φ̄_k = `model.encode(x).pooled[:, k]` of any `ConceptModel`:

    maximise  C·φ̄_k(roll(x, random shift))  −  λ_tv·TV(x)  −  λ_bound·B(x)  −  λ_l1·mean|x|
    TV(x) = mean|x[:, :, i+1, :] − x[:, :, i, :]| + mean|x[:, :, :, j+1] − x[:, :, :, j]|
    B(x)  = mean(|x| where x is outside the valid range, else 0)

with Adam in 12 stages, each a fresh Adam whose learning rate is the previous one / 1.5 (0.01 first), and a
random circular shift ("jitter") of the image the model sees at every step. Only the image x is optimised:
the gradient is taken with respect to x alone, so the model (f included) stays frozen and no parameter
ever receives a gradient.

Deviations from FLINT's code (docs/method.md, "Activation maximisation and visualisation FID"): `steps`
(1000 by default, the VisCoIN paper's count) are split evenly over FLINT's 12 stages, where FLINT runs
2 × 12 stages of 200 then 180 steps on CUB-200 (its second pass, with λ_tv 240, is not run); images are
[-1, 1] rather than ImageNet-normalised, so the valid range of B is [-1, 1] (FLINT's ±2.5 normalised units
bound roughly the valid pixel range too); the jitter scales with the resolution (FLINT: ±10 px at 224 px);
many images are optimised in one batch, each with its own concept, with every penalty averaged per image
and summed over the batch, so each image follows exactly the objective FLINT optimises one image at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from viscoin_cli.errors import UserError

DEFAULT_STEPS = 1000  # the VisCoIN paper's AM of FLINT's concepts: 1000 steps
MAX_STEPS = 100_000  # more is no visualisation any more, only a long wait
VALID_RANGE = (-1.0, 1.0)  # the images' range; FLINT's `min_val`/`max_val` (±2.5 in its normalised units)
FLINT_JITTER = (10, 224)  # FLINT on CUB-200: T = 11, shifts np.random.randint(-T + 1, T) = ±10 px at 224 px


@dataclass(frozen=True)
class AMSettings:
    """FLINT's CUB-200 AM settings (`flint.py: single_pair`, first `optimize_inp` call, and `optimize_inp`)."""

    steps: int = DEFAULT_STEPS
    lr: float = 0.01  # optimize_inp: new_lr = 0.01 when the dataset is not qdraw/mnist/fmnist/cifar10
    lr_decay: float = 1.5  # new_lr = new_lr / 1.5 after each stage
    stages: int = 12  # `for epoch in range(12)`, a fresh optim.Adam([inp], lr=new_lr) each
    activation_weight: float = 4.0  # C = 4.0
    tv_weight: float = 80.0  # lmbd_tv = 80.0
    bound_weight: float = 20.0  # lmbd_bound = 20.0
    l1_weight: float = 0.0  # lmbd_l1 = 0.0
    init_scale: float = 0.5  # init_img = 0.5 * data[...] (FLINT's "partial initialization")
    jitter: int | None = None  # largest shift in pixels; None: FLINT's ±10 px at 224 px, scaled to the resolution


@dataclass
class AMResult:
    """What AM made of each starting image (all on the CPU)."""

    images: torch.Tensor  # [N, C, H, W] the optimised images, clamped to [-1, 1]
    start: torch.Tensor  # [N, C, H, W] where the optimisation started: init_scale · the sample
    start_activation: torch.Tensor  # [N] φ̄_k of `start`
    activation: torch.Tensor  # [N] φ̄_k of `images`


def am_settings(steps: int | None) -> AMSettings:
    """FLINT's settings with the given step count (None: the default 1000), checked."""
    settings = AMSettings() if steps is None else AMSettings(steps=steps)
    check_steps(settings.steps)
    return settings


def check_steps(steps: int, option: str = "--am-steps") -> None:
    """A one-line error for a step count that is not 1..MAX_STEPS."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise UserError(f"{option} {steps}: expected a whole number of steps in 1..{MAX_STEPS}")


def jitter_pixels(resolution: int) -> int:
    """The largest shift of FLINT's jitter at this resolution: ±10 px at 224 px, at least 1 px."""
    pixels, at = FLINT_JITTER
    return max(1, round(pixels * resolution / at))


def stage_ends(steps: int, stages: int) -> list[int]:
    """The step at which each of FLINT's stages ends, `steps` split as evenly as whole steps allow."""
    return [round(steps * (stage + 1) / stages) for stage in range(stages)]


def penalties(x: torch.Tensor, settings: AMSettings) -> torch.Tensor:
    """FLINT's penalties per image [N]: λ_tv·TV + λ_bound·B + λ_l1·mean|x|, each a mean over the image."""
    low, high = VALID_RANGE
    outside = ((x > high) | (x < low)).to(x.dtype)
    bound = (outside * x.abs()).mean(dim=(1, 2, 3))
    tv = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
    l1 = x.abs().mean(dim=(1, 2, 3))
    return settings.tv_weight * tv + settings.bound_weight * bound + settings.l1_weight * l1


def _activation(model, images: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    """φ̄_k of each image for its own concept k: [N]."""
    return model.encode(images).pooled[torch.arange(len(images), device=images.device), concepts]


def _optimise(
    model, start: torch.Tensor, concepts: torch.Tensor, settings: AMSettings, generator: torch.Generator
) -> torch.Tensor:
    """One batch through FLINT's stages; the optimised images, unclamped."""
    x = start.clone().requires_grad_(True)
    shift = settings.jitter if settings.jitter is not None else jitter_pixels(x.shape[-1])
    done = 0
    for stage, end in enumerate(stage_ends(settings.steps, settings.stages)):
        optimizer = torch.optim.Adam([x], lr=settings.lr / settings.lr_decay**stage)  # fresh moments, as FLINT
        for _ in range(done, end):
            dy, dx = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist() if shift else (0, 0)
            seen = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            objective = settings.activation_weight * _activation(model, seen, concepts).sum()
            objective = objective - penalties(x, settings).sum()
            (x.grad,) = torch.autograd.grad(-objective, [x])  # the image's gradient only: the model stays frozen
            optimizer.step()
        done = end
    return x.detach()


def maximize_concepts(
    model,
    images: torch.Tensor,
    concepts: torch.Tensor | list[int],
    settings: AMSettings | None = None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> AMResult:
    """AM of concept `concepts[i]` from the sample `images[i]` ([-1, 1], the model's resolution), for every i.

    Images go through in batches of `batch_size`, each batch for all of its steps; `on_batch(n)` is called
    after each batch of n images. The jitter's shifts come from a CPU generator seeded with `seed`, so a run
    is reproducible. The model is used in eval mode (its mode is restored afterwards), in its own dtype.
    """
    settings = settings or AMSettings()
    check_steps(settings.steps, "steps")
    concepts = torch.as_tensor(concepts, dtype=torch.long).flatten()
    if len(concepts) != len(images):
        raise ValueError(f"{len(images)} images but {len(concepts)} concepts")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype  # fp32 (autocast is not used: AM's small steps need the precision)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in AMResult.__dataclass_fields__}
    try:
        for first in range(0, len(images), batch_size):
            start = settings.init_scale * images[first : first + batch_size].to(device, dtype)
            chunk = concepts[first : first + batch_size].to(device)
            with torch.enable_grad():
                result = _optimise(model, start, chunk, settings, generator).clamp(*VALID_RANGE)
            with torch.no_grad():
                parts["start_activation"].append(_activation(model, start, chunk).float().cpu())
                parts["activation"].append(_activation(model, result, chunk).float().cpu())
            parts["images"].append(result.cpu())
            parts["start"].append(start.cpu())
            if on_batch is not None:
                on_batch(len(start))
    finally:
        model.train(was_training)
    return AMResult(**{name: torch.cat(tensors) for name, tensors in parts.items()})
