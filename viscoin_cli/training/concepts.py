"""The one training loop of the concept models (`viscoin train --method viscoin|flint|flaem`).

Every method trains its parts of a `ConceptModel` around a frozen classifier f on augmented training
images; what differs is how the model is built and what one step's loss is. A method brings both as a
`Recipe` (built from its typed config); the loop, run folder, resume, logging, grids and the final test
accuracy are shared. Checkpoints, logs and grids happen at multiples of `block`; each block of iterations
re-seeds from (seed, block), so a resumed run draws the same data and noise as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from viscoin_cli.choices import Method
from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import load_dataset
from viscoin_cli.data.images import ImageDataset
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import CheckpointMeta, load_state, parent_record, read_meta, save_checkpoint, save_state
from viscoin_cli.io.images import save_grid
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.concept_model import ConceptModel, ConceptOutput
from viscoin_cli.runtime import Runtime, all_reduce_sum, maybe_compile
from viscoin_cli.training.config import TrainConfig, with_shipped_parent
from viscoin_cli.training.run import RunFolder, RunLoader, run_ticks


@dataclass(frozen=True)
class ConceptTrainConfig(TrainConfig):
    """What every concept model's training shares: f, K, the width of the concept extractor, the budget."""

    method: Method = Method.viscoin
    classifier: str = ""
    num_concepts: int = 64
    iterations: int = 2000
    real_batch: int = 16
    lr: float = 1e-4
    log_every: int = 100
    grid_every: int = 1000
    compile: bool = False  # torch.compile the model's forward (`maybe_compile`)

    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"iterations", "log_every", "grid_every", "compile"})
    FLAGS: ClassVar[dict[str, str]] = {"num_concepts": "--concepts"}
    LENGTH: ClassVar[str | None] = "iterations"

    @classmethod
    def resolve(cls, values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG003
        return with_shipped_parent(values, "classifier")

    def check(self) -> None:
        super().check()
        expected = type(self).__dataclass_fields__["method"].default
        if self.method != expected:  # an options.json of another method read as this one
            raise UserError(f"method {self.method} cannot be trained with the {expected} trainer")
        if not self.classifier:
            raise UserError(f"--dataset {self.dataset}: --classifier is required (or --resume DIR)")
        if self.grid_every % min(self.log_every, self.grid_every):
            raise UserError("--grid-every must be a multiple of --log-every")

    @property
    def block(self) -> int:
        """Iterations between log lines and checkpoints (a grid always falls on one)."""
        return min(self.log_every, self.grid_every)

    def recipe(self, rt: Runtime) -> Recipe:
        """The method's data, model and loss for this config (each method's config says which)."""
        raise NotImplementedError


class Recipe(Protocol):
    """One method's part of the loop: its model, its loss, what it logs and records."""

    model: ConceptModel
    train_set: ImageDataset  # augmented
    test_set: ImageDataset
    terms: tuple[str, ...]  # the loss terms logged (unweighted), in order
    shown: tuple[str, ...]  # the terms on the per-block log line
    parents: dict[str, dict[str, str]]  # checkpoint parents (f, and G for VisCoIN)
    description: str  # the line printed at the start

    def loss(
        self, net: torch.nn.Module, reals: torch.Tensor, labels: torch.Tensor, rt: Runtime
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, ConceptOutput]:
        """One step: (total loss, unweighted terms, the images the model saw, its output on them)."""
        ...

    def extra(self) -> dict[str, Any]:
        """What the model checkpoint records about how it was trained (besides the config)."""
        ...


@torch.no_grad()
def test_accuracy(model: ConceptModel, loader: DataLoader, rt: Runtime) -> dict[str, float]:
    """Test accuracy of g and of f, and how often g agrees with f (no rendering needed)."""
    counts = torch.zeros(4, device=rt.device)  # g correct, f correct, agree, total
    for images, labels in loader:
        images, labels = images.to(rt.device), labels.to(rt.device)
        with rt.autocast():
            out = model.encode(images)
        g_pred, f_pred = out.logits.argmax(1), out.f_logits.argmax(1)
        counts += torch.stack(
            [
                (g_pred == labels).sum(),
                (f_pred == labels).sum(),
                (g_pred == f_pred).sum(),
                torch.tensor(len(labels), device=rt.device),
            ]
        ).float()
    g_correct, f_correct, agree, total = all_reduce_sum(counts.tolist(), rt)
    return {"g_accuracy": g_correct / total, "f_accuracy": f_correct / total, "agreement": agree / total}


def paper_concepts(dataset: str) -> int:
    """K of VisCoIN's preset for `dataset`: the baselines are compared at the same K (paper §4.1)."""
    from viscoin_cli.training.viscoin import PRESETS

    return PRESETS[dataset]["num_concepts"]


def check_classes(f_meta: CheckpointMeta, facts: dict[str, Any]) -> None:
    """f must predict the dataset's classes (a one-line error otherwise)."""
    if f_meta.config.get("num_classes") != facts["num_classes"]:
        raise UserError(
            f"{f_meta.path} predicts {f_meta.config.get('num_classes')} classes but {facts['name']} has "
            f"{facts['num_classes']}"
        )
    names = (f_meta.dataset or {}).get("class_names")
    if names and names != facts["class_names"]:
        raise UserError(f"{f_meta.path} was trained on other classes than {facts['name']}'s")


class BaselineTraining:
    """What the baselines' recipes share: data at f's resolution, f itself, the parents record and the start
    line; a subclass builds `self.model` and its loss (they train on real images only, no generator)."""

    name: str  # "FLINT"
    concept_noun: str  # "attributes"

    def __init__(self, cfg: ConceptTrainConfig, rt: Runtime):
        f_meta = read_meta(cfg.classifier, kind="classifier")
        self.train_set, self.test_set = load_splits(cfg, cfg.resolution or (f_meta.dataset or {}).get("resolution"))
        check_classes(f_meta, self.train_set.facts())
        self.f, _ = load_classifier(cfg.classifier, rt.device)
        self.parents = {"classifier": parent_record(cfg.classifier)}
        self.description = (
            f"{self.name} with K={cfg.num_concepts} {self.concept_noun} on {cfg.dataset} ({len(self.train_set)} "
            f"train images, {self.train_set.resolution} px), f={f_meta.path.name}, "
            f"{cfg.real_batch // rt.world_size} images per step per process"
        )

    weights: Any  # the method's loss weights (a frozen dataclass)

    def objective(self, out: ConceptOutput, reals: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss of the model's output on real images: (total, unweighted terms)."""
        raise NotImplementedError

    def loss(
        self,
        net: torch.nn.Module,
        reals: torch.Tensor,
        labels: torch.Tensor,  # noqa: ARG002 - f is the teacher, not the labels
        rt: Runtime,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, ConceptOutput]:
        with rt.autocast():
            out = net(reals)
            loss, terms = self.objective(out, reals)
        return loss, terms, reals, out

    def extra(self) -> dict[str, Any]:
        return {"loss_weights": self.weights.__dict__}


def load_splits(cfg: ConceptTrainConfig, resolution: int) -> tuple[ImageDataset, ImageDataset]:
    """The augmented training split and the test split at `resolution`."""
    data_kw = dict(
        root=cfg.data_root, resolution=resolution, skip_bad_images=cfg.skip_bad_images, bbox_crop=cfg.bbox_crop
    )
    return load_dataset(cfg.dataset, "train", augment=True, **data_kw), load_dataset(cfg.dataset, "test", **data_kw)


def train_concept_model(
    cfg: ConceptTrainConfig, run: RunFolder, rt: Runtime, console: Console, *, resume: bool
) -> dict[str, Any]:
    """Train `cfg.method`'s model as `cfg` says, writing into `run`; returns the summary the CLI prints."""
    # --- setup -----------------------------------------------------------------------------------------
    recipe = cfg.recipe(rt)
    model, train_set, test_set = recipe.model, recipe.train_set, recipe.test_set
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    scaler = rt.grad_scaler()
    step = 0
    if resume:
        state = load_state(run.state, device=rt.device)
        model.trained_parts().load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        if rt.is_main:
            run.truncate_metrics("step", step)
        console.print(f"resuming {run} at iteration {step}/{cfg.iterations}")
    net = maybe_compile(DistributedDataParallel(model) if rt.distributed else model, cfg.compile)
    n_real = cfg.real_batch // rt.world_size
    if n_real < 1:
        raise UserError(f"--real-batch {cfg.real_batch} must be at least 1 per process ({rt.world_size})")
    test_loader = DataLoader(test_set, batch_size=64, num_workers=cfg.workers)
    facts, block, terms_logged = train_set.facts(), cfg.block, recipe.terms
    console.print(recipe.description)

    def save(step: int, final: bool = False) -> None:
        extra = {"iterations": step, **recipe.extra(), **(accuracy if final else {})}
        save_checkpoint(
            run.latest,
            model.trained_parts().state_dict(),
            kind=str(cfg.method),
            config=model.config,
            dataset=facts,
            step=step,
            parents=recipe.parents,
            extra=extra,
        )
        save_state(
            run.state,
            {
                "model": model.trained_parts().state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
            },
            step=step,
        )

    # --- loop ------------------------------------------------------------------------------------------
    t_start = time.perf_counter()
    accuracy: dict[str, float] = {}
    record: dict[str, Any] = {}
    ticks = run_ticks(step // block, cfg.iterations - step, block)  # a block is a tick
    data = RunLoader(train_set, n_real, cfg.seed, ticks, rt, cfg.workers)
    while step < cfg.iterations:
        steps = min(block, cfg.iterations - step)
        loader = data.tick(step // block)
        sums = torch.zeros(len(terms_logged) + 3, device=rt.device)  # terms, total, agreement, count
        t_block = time.perf_counter()
        net.train()
        with Progress(console, steps, f"iterations {step + 1}-{step + steps}") as progress:
            for i, (reals, labels) in enumerate(loader):
                reals, labels = reals.to(rt.device, non_blocking=True), labels.to(rt.device, non_blocking=True)
                loss, terms, images, out = recipe.loss(net, reals, labels, rt)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                agree = (out.logits[: len(reals)].argmax(1) == out.f_logits[: len(reals)].argmax(1)).float().mean()
                sums += torch.stack(
                    [
                        *(terms[t].detach().float() for t in terms_logged),
                        loss.detach().float(),
                        agree,
                        torch.ones((), device=rt.device),
                    ]
                )
                if i % 10 == 9 or i == steps - 1:
                    running = (sums[len(terms_logged)] / sums[-1]).item()
                    if not math.isfinite(running):
                        raise UserError(
                            f"training diverged (loss {running}) near iteration {step + i + 1}; "
                            f"the last good checkpoint is in {run} (try a lower --lr)"
                        )
                    progress.advance(i + 1 - progress.done, loss=running)
        step += steps
        totals = all_reduce_sum(sums.tolist(), rt)
        count = totals[-1]
        record = {
            "step": step,
            **{t: totals[k] / count for k, t in enumerate(terms_logged)},
            "loss": totals[len(terms_logged)] / count,
            "train_agreement": totals[len(terms_logged) + 1] / count,
            "seconds_per_iteration": (time.perf_counter() - t_block) / steps,
        }
        done = step >= cfg.iterations
        if done:
            model.eval()
            accuracy = test_accuracy(model, test_loader, rt)
            record.update(accuracy)
        if rt.is_main:
            run.log(record)
            if step % cfg.grid_every == 0 or done:
                with torch.no_grad():
                    recon = out.recon if out.recon is not None else model.render(out.concept_maps, out.support)
                    pairs = torch.stack([images[:8].float().cpu(), recon[:8].detach().float().cpu()], 1)
                save_grid(pairs.flatten(0, 1), run.path / f"recon{step:07d}.png", columns=2 * min(4, len(images)))
            save(step, final=done)
        console.print(
            f"iteration {step}/{cfg.iterations}  "
            + format_metrics({k: record[k] for k in ("loss", *recipe.shown, "train_agreement")})
        )

    data.close()
    summary = {
        "out": str(run.path),
        "model": str(run.latest),
        "method": str(cfg.method),
        "iterations": step,
        "seconds": time.perf_counter() - t_start,
        **accuracy,
    }
    if accuracy:
        console.print(
            f"test accuracy: g {accuracy['g_accuracy']:.4f}, f {accuracy['f_accuracy']:.4f}, "
            f"agreement {accuracy['agreement']:.4f}"
        )
    return summary
