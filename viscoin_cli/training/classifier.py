"""Pretraining the classifier f (paper App. B.2): setup -> epochs (train, evaluate, checkpoint) -> summary."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from viscoin_cli.choices import Arch, Optimizer, Stem
from viscoin_cli.console import Progress, format_metrics
from viscoin_cli.data import load_dataset
from viscoin_cli.data.holdout import check_fraction
from viscoin_cli.data.images import ImageDataset
from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import copy_checkpoint, load_state, save_checkpoint, save_state
from viscoin_cli.nets.classifier import Classifier, load_initial_weights
from viscoin_cli.runtime import Runtime, all_reduce_sum, seed_everything, seed_for, seed_worker, unwrap
from viscoin_cli.training.config import TrainConfig
from viscoin_cli.training.run import EpochShard, RunFolder, SeededItems

# Paper App. B.2 for the real datasets (ResNet50 from ImageNet weights). digits is the embedded
# default: a narrow ResNet18 with a 32-px stem trained from scratch, ~99% test accuracy in minutes on a CPU;
# shapes (also embedded, 32 px) uses the same.
_PRESET_FIELDS = (
    "arch",
    "width",
    "stem",
    "weights",
    "optimizer",
    "lr",
    "epochs",
    "batch_size",
    "milestones",
    "weight_decay",
)
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {name: dict(zip(_PRESET_FIELDS, values, strict=True)) for name, values in {
    #            arch        width  stem        weights     optim   lr    epochs batch milestones wd
    "digits":   ("resnet18", 16,    "small",    "none",     "adam", 1e-3, 12,    64,   [8],       0.0),
    "shapes":   ("resnet18", 16,    "small",    "none",     "adam", 1e-3, 12,    64,   [8],       0.0),
    "cub":      ("resnet50", 64,    "imagenet", "imagenet", "adam", 1e-4, 30,    32,   [],        0.0),
    "celebahq": ("resnet50", 64,    "imagenet", "imagenet", "adam", 1e-3, 10,    64,   [],        0.0),
    # SGD momentum (0.9) and weight decay are not given by the paper (choice: the usual ImageNet values).
    "cars":     ("resnet50", 64,    "imagenet", "imagenet", "sgd",  0.1,  90,    128,  [30, 60],  1e-4),
    "folder":   ("resnet50", 64,    "imagenet", "imagenet", "adam", 1e-4, 30,    32,   [],        0.0),
}.items()}
# fmt: on
LR_DECAY = 0.1  # step decay factor at each milestone epoch
VAL_FRACTION = 0.1  # of each class of the training split, held out to choose `best` (every new run's preset)


@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """`viscoin pretrain-classifier`: the network, its initial weights and the optimisation."""

    arch: Arch = Arch.resnet50
    width: int = 64
    stem: Stem = Stem.imagenet
    weights: str = "imagenet"  # imagenet, none, or a weights file
    optimizer: Optimizer = Optimizer.adam
    lr: float = 1e-4
    epochs: int = 30
    batch_size: int = 32
    milestones: list[int] = field(default_factory=list)
    weight_decay: float = 0.0
    # New runs get VAL_FRACTION from the preset; 0 is what an options.json of a release before the validation
    # split means (it lacks the field): such a run resumes on the whole training split, as it started.
    val_fraction: float = 0.0

    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"epochs"})
    FLAGS: ClassVar[dict[str, str]] = {"milestones": "--lr-steps"}
    LENGTH: ClassVar[str | None] = "epochs"

    @classmethod
    def preset(cls, dataset: str) -> dict[str, Any]:
        return {"val_fraction": VAL_FRACTION, **PRESETS[dataset]}

    def check(self) -> None:
        super().check()
        check_fraction(self.val_fraction)


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`: evaluation sees each test sample exactly once overall."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _optimizer(model: torch.nn.Module, cfg: ClassifierConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise AssertionError(cfg.optimizer)  # the Optimizer type allows nothing else


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, float]:
    """Mean cross-entropy and accuracy over the whole split (summed over all processes)."""
    model.eval()
    loss_sum = torch.zeros((), device=rt.device, dtype=torch.float64)
    correct = torch.zeros((), device=rt.device, dtype=torch.int64)
    count = 0
    for images, labels in loader:
        images, labels = _to_device(images, labels, rt)
        with rt.autocast():
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += labels.numel()
    loss_sum, correct, count = all_reduce_sum([loss_sum.item(), correct.item(), count], rt)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def _to_device(images: torch.Tensor, labels: torch.Tensor, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(rt.device, non_blocking=True)
    if rt.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(rt.device, non_blocking=True)


def _load_splits(cfg: ClassifierConfig, console: Console) -> tuple[ImageDataset, ImageDataset | None, ImageDataset]:
    """Training images, the validation hold-out that chooses `best` (None with --val-fraction 0), test images."""
    data_kw = dict(
        root=cfg.data_root,
        resolution=cfg.resolution,
        skip_bad_images=cfg.skip_bad_images,
        bbox_crop=cfg.bbox_crop,
        val_fraction=cfg.val_fraction,
    )
    train_set = load_dataset(cfg.dataset, "train", augment=True, **data_kw)
    val_set = load_dataset(cfg.dataset, "val", augment=False, **data_kw) if cfg.val_fraction > 0 else None
    test_set = load_dataset(cfg.dataset, "test", augment=False, **data_kw)
    if train_set.skipped or test_set.skipped:  # the hold-out's skipped images are the training split's
        console.print(f"skipped {train_set.skipped + test_set.skipped} unreadable images")
    return train_set, val_set, test_set


def _held_out_scores(
    net: torch.nn.Module, val_loader: DataLoader | None, test_loader: DataLoader, rt: Runtime
) -> dict[str, float]:
    """An epoch's validation (when held out) and test loss and accuracy, named as metrics.jsonl logs them."""
    scores = {}
    if val_loader is not None:
        val = evaluate(net, val_loader, rt)
        scores.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    test = evaluate(net, test_loader, rt)  # for the record only: nothing is chosen by it
    scores.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    return scores


def _improves(val_accuracy: float | None, best: dict[str, Any]) -> bool:
    """Whether an epoch becomes `best`: a higher validation accuracy than any before (a tie keeps the earlier
    epoch); without a validation split every epoch does, so `best` is the last one. Never the test split."""
    return val_accuracy is None or best["val_accuracy"] is None or val_accuracy > best["val_accuracy"]


def train_classifier(
    cfg: ClassifierConfig, run: RunFolder, rt: Runtime, console: Console, *, resume: bool
) -> dict[str, Any]:
    """Train f as `cfg` says, writing into `run`; returns the summary the CLI prints."""
    # --- setup -----------------------------------------------------------------------------------------
    train_set, val_set, test_set = _load_splits(cfg, console)
    per_rank_batch = cfg.batch_size // rt.world_size
    if per_rank_batch < 2 or cfg.batch_size % rt.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must be a multiple of the {rt.world_size} processes, >= 2 each")
    if len(train_set) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training split ({len(train_set)} images)")

    train_sampler = EpochShard(train_set, rt.world_size, rt.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader_kw = dict(num_workers=cfg.workers, pin_memory=rt.device.type == "cuda", worker_init_fn=seed_worker)
    # Persistent workers: no restart each epoch. Still exact: the sampler (so the epoch's order, set_epoch)
    # runs in this process, and items carry their own seeds (the workers' base seeds play no part).
    train_loader = DataLoader(
        SeededItems(train_set),
        per_rank_batch,
        sampler=train_sampler,
        drop_last=True,
        generator=rt.loader_generator(),
        persistent_workers=cfg.workers > 0,
        **loader_kw,
    )

    def eval_loader(split: ImageDataset) -> DataLoader:  # each process evaluates its shard, in order
        sampler = ShardSampler(len(split), rt.rank, rt.world_size)
        return DataLoader(split, per_rank_batch * 2, sampler=sampler, **loader_kw)

    val_loader = eval_loader(val_set) if val_set is not None else None
    test_loader = eval_loader(test_set)

    model = Classifier(cfg.arch, train_set.num_classes, cfg.width, cfg.stem)
    start_epoch, final_test = 0, None
    best: dict[str, Any] = {"epoch": 0, "val_accuracy": None, "test_accuracy": None}  # the epoch in best.safetensors
    if not resume:
        console.print(f"initial weights: {load_initial_weights(model, cfg.weights)}")
    model.to(rt.device)
    if rt.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, gamma=LR_DECAY)
    scaler = rt.grad_scaler()
    if resume:
        state = load_state(run.state, device=rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
        # a state of a release before the validation split has neither (its run has no split: best is the last)
        best, final_test = state.get("best", best), state.get("test_accuracy")
        if rt.is_main:
            run.truncate_metrics("epoch", start_epoch)
        console.print(f"resuming {run} at epoch {start_epoch}/{cfg.epochs}")
    net = (
        DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if rt.distributed
        else model
    )
    dataset_facts = {
        **train_set.facts(),
        "val_fraction": cfg.val_fraction,
        "val_images": len(val_set) if val_set is not None else 0,
    }
    params = sum(p.numel() for p in model.parameters())
    console.print(
        f"{cfg.arch} (width {cfg.width}, {params / 1e6:.2f}M params) on {cfg.dataset}: {len(train_set)} train / "
        f"{dataset_facts['val_images']} val / {len(test_set)} test images, {train_set.num_classes} classes, "
        f"{rt.world_size} process(es) on {rt.device}"
    )

    # --- loop ------------------------------------------------------------------------------------------
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        # Re-seed from (seed, epoch): shuffling and augmentation of an epoch do not depend on whether
        # the run was resumed, so a resumed run reproduces the uninterrupted one.
        seed_everything(seed_for(cfg.seed, epoch, rt.rank))
        train_sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(seed_for(cfg.seed, epoch, rt.rank))
        net.train()
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), device=rt.device)
        correct = torch.zeros((), device=rt.device, dtype=torch.int64)
        seen = 0
        with Progress(console, len(train_loader), f"epoch {epoch + 1}/{cfg.epochs}") as progress:
            for step, (images, labels) in enumerate(train_loader):
                images, labels = _to_device(images, labels, rt)
                with rt.autocast():
                    logits = net(images)
                    loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach() * labels.numel()
                correct += (logits.detach().argmax(1) == labels).sum()
                seen += labels.numel()
                if step % 20 == 19 or step == len(train_loader) - 1:  # read back rarely: no per-step host sync
                    running = loss_sum.item() / seen
                    if not math.isfinite(running):
                        raise UserError(
                            f"training diverged (loss {running}) in epoch {epoch + 1}; "
                            f"the last good checkpoint is in {run} (try a lower --lr)"
                        )
                    progress.advance(step + 1 - progress.done, loss=running, acc=correct.item() / seen)
        scheduler.step()
        train_loss, train_correct, train_seen = all_reduce_sum([loss_sum.item(), correct.item(), seen], rt)
        scores = {
            "train_loss": train_loss / train_seen,
            "train_accuracy": train_correct / train_seen,
            **_held_out_scores(net, val_loader, test_loader, rt),
        }
        final_test, val_accuracy = scores["test_accuracy"], scores.get("val_accuracy")
        seconds = time.perf_counter() - t_epoch
        record = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * len(train_loader),
            **scores,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "images_per_second": train_seen / seconds,
        }
        is_best = _improves(val_accuracy, best)
        if is_best:
            best = {"epoch": epoch + 1, "val_accuracy": val_accuracy, "test_accuracy": final_test}
        if rt.is_main:
            run.log(record)
            extra = {"epoch": epoch + 1, **{k: v for k, v in scores.items() if k in ("val_accuracy", "test_accuracy")}}
            save_checkpoint(
                run.latest,
                unwrap(net).state_dict(),
                kind="classifier",
                config=model.config,
                dataset=dataset_facts,
                step=epoch + 1,
                extra=extra,
            )
            save_state(
                run.state,
                {
                    "model": unwrap(net).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "test_accuracy": final_test,
                },
                step=epoch + 1,
            )
            if is_best:
                copy_checkpoint(run.latest, run.best)
        console.print(
            f"epoch {epoch + 1}/{cfg.epochs}  {format_metrics(scores)}  [{seconds:.1f}s]"
            + ("  best" if is_best else "")
        )

    # --- summary ---------------------------------------------------------------------------------------
    return {
        "out": str(run.path),
        "latest": str(run.latest),
        "best": str(run.best),
        "epochs": cfg.epochs,
        "val_fraction": cfg.val_fraction,
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],  # None without a validation split (best is the last epoch)
        "best_epoch_test_accuracy": best["test_accuracy"],
        "final_test_accuracy": final_test,
        "seconds": time.perf_counter() - t_start,
    }
