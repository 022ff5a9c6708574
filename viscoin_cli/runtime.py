"""Where and how computations run: device, precision, seeding and torchrun/DDP.

Every command builds one `Runtime` with `setup_runtime(...)` and asks it for the device, the autocast
context and the distributed facts; nothing else in the package reads these settings on its own.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from viscoin_cli.errors import QUIET_EXIT_WAIT_S, UserError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# A test hook, not a user option: the process of this rank raises a UserError instead of joining its first
# `all_reduce_sum`, so the tests can check that one failing process ends a torchrun run without a hang.
FAIL_RANK = "VISCOIN_FAIL_RANK"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    seed: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # the stream every process draws alike (`reseed`, `shard_randn`), on the device
    shared_rng: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shared_rng", torch.Generator(self.device))

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def amp_dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling is needed for fp16 only; the scaler is disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def loader_generator(self, epoch: int = 0) -> torch.Generator:
        """A generator for DataLoader shuffling and worker seeds that depends only on (seed, epoch, rank)."""
        return torch.Generator().manual_seed(seed_for(self.seed, epoch, self.rank))

    def reseed(self, *parts: int) -> None:
        """Seed this process's generators from (parts, rank) and the shared stream from `parts` alone."""
        seed_everything(seed_for(*parts, self.rank))
        self.shared_rng.manual_seed(seed_for(*parts))

    def shard_randn(self, n: int, *shape: int) -> torch.Tensor:
        """This process's `n` rows of `n * world_size` normal draws from the shared stream (every
        `world_size`-th row from its rank, as the real images are dealt): W processes draw together what one
        process draws for the same global batch, in the same groups (D's minibatch-std groups included)."""
        rows = torch.randn(n * self.world_size, *shape, generator=self.shared_rng, device=self.device)
        return rows[self.rank :: self.world_size]


def seed_for(*parts: int) -> int:
    """Combine integers into one 63-bit seed (stable across runs, unlike `hash`)."""
    seed = 0x9E3779B9
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return seed


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: derive numpy/python seeds from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """Resolve `auto|cpu|cuda|cuda:N`; under torchrun, `auto`/`cuda` mean this process's GPU."""
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            return torch.device("cuda", local_rank)
        index = spec.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", int(index))
    raise UserError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def _init_distributed(device_spec: str) -> tuple[int, int, int]:
    """Join the torchrun process group when launched by torchrun; a plain run is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device_spec != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return rank, world_size, local_rank


def setup_runtime(device: str = "auto", precision: str = "fp32", seed: int = 0) -> Runtime:
    """Validate the runtime options, join torchrun if present, seed everything, enable fast math."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    rank, world_size, local_rank = _init_distributed(device)
    torch_device = select_device(device, local_rank)
    if precision == "fp16" and torch_device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if torch_device.type == "cuda":
        # TF32 matmuls/convs on Ampere+: fp32 accuracy is not needed for training these nets.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    seed_everything(seed_for(seed, rank))
    return Runtime(torch_device, precision, seed, rank, world_size, local_rank)


def shutdown_runtime(rt: Runtime) -> None:
    """Leave the process group (safe to call for single-process runs)."""
    if rt.distributed and dist.is_initialized():
        gc.collect()  # DDP reducers left in reference cycles must go while the group and the interpreter live
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Sum a few numbers over all processes (identity for a single process)."""
    if not rt.distributed:
        return list(values)
    if os.environ.get(FAIL_RANK) == str(rt.rank):
        raise UserError(f"{FAIL_RANK}={rt.rank}: this process failed on purpose (a test hook)")
    tensor = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def reports_failure(rt: Runtime | None) -> bool:
    """Whether this process reports the error it ends on; the others leave it to the one that does.

    Under torchrun one process's error ends them all: the others then fail too (a collective loses its peer)
    or raise the same error (every process checks the same options), and each would print it. Through the
    rendezvous store the first process to fail claims the report. Before the process group exists (`rt`
    None) every process runs the same command line into the same error: rank 0 reports it. A process that
    does not report waits a while before it leaves, so that torchrun, which stops every process once one
    fails, does not stop the reporter before it has printed.
    """
    if rt is None or not rt.distributed:
        first = int(os.environ.get("RANK", "0")) == 0
    else:
        try:
            first = dist.distributed_c10d._get_default_store().add("viscoin/failed", 1) == 1
        except Exception:  # no store to ask (torchrun has gone): better twice than never
            first = True
    if not first:
        time.sleep(QUIET_EXIT_WAIT_S)
    return first


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP / torch.compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(module)` for --compile, else `module` itself: the one place the training commands compile.

    The compiled wrapper shares the module's parameters and buffers, so optimisers, EMA and checkpoints keep
    using the module itself. Inductor's pattern matcher is off: in torch 2.x it rewrites add(b, mm(x, W),
    alpha=g) as addmm(b, x, W), dropping alpha, which is how bias_act applies the gain of StyleGAN2's fully
    connected layers (D's logits came out scaled by 1/√2). Compiled code cannot be differentiated twice (R1,
    path length): callers keep the eager module for those passes.
    """
    if not enabled:
        return module
    return torch.compile(module, options={"pattern_matcher": False})
