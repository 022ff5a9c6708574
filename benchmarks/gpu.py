"""Paper-scale speed on one GPU: StyleGAN2 training and generation, a VisCoIN step, the data loader, memory.

    python benchmarks/gpu.py [--nvidia-repo PATH] [--peak-tflops 989] [--cpu-smoke]

Prints one row per measurement beside its target (under 8 minutes on an H100/H200):
  StyleGAN2 256 px, NVIDIA's 'paper256' widths (cbase 16384, cmax 512, map 8, mbstd 8, fp16 in the 4 highest
  resolutions, conv_clamp 256), batch 16: s/kimg of training with the phases of `finetune-gan` (Gmain,
  Greg/4, Dmain, Dreg/16 with R1, ADA's pipeline), eager and --compile, and NVIDIA's stylegan2-ada-pytorch
  in the same process with its pure-PyTorch reference ops (--nvidia-repo, a clone; as benchmarks/stylegan.py).
  generate: images/s of the EMA generator as `viscoin generate` runs it (batch 32, constant noise).
  VisCoIN 256 px: iterations/s of `train`'s step at 8 real + 8 synthetic images (ResNet50 f, the paper256 G
  with 14 W+ vectors, K=256; LPIPS off: its weights are a download), eager and --compile, and the model FLOP
  utilisation (FLOPs of one step from FlopCounterMode / time / the GPU's peak: --peak-tflops, or dense
  bf16 of H100/H200/A100 by name; the step runs fp32/TF32, so this is a lower bound).
  data loader: images/s of the training loader (`RunLoader`, workers that live for the run) decoding +
  augmenting 256 px JPEGs it writes to a temporary folder dataset, with pinned memory; the second tick is timed.
Without CUDA (or with --cpu-smoke) the same code runs at 32 px with tiny widths for 2 iterations: tests run it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from viscoin_cli.io.checkpoint import save_checkpoint
from viscoin_cli.nets.classifier import Classifier
from viscoin_cli.nets.stylegan2 import Discriminator, Generator
from viscoin_cli.runtime import maybe_compile, setup_runtime
from viscoin_cli.training.gan import (
    D_REG_INTERVAL,
    G_REG_INTERVAL,
    CompiledMainPasses,
    GanConfig,
    augment_pipe,
    lazy_adam,
    phases_for,
)
from viscoin_cli.training.losses import StyleGAN2Loss

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)
# GAN sizes and batch, timed iterations, f, VisCoIN K / Ψ width / images per kind, JPEGs written, z and w dims
SIZES: dict[str, dict[str, Any]] = {
    "gpu": dict(res=256, cbase=16384, cmax=512, map=8, mbstd=8, batch=16, iters=16, z=512),
    "smoke": dict(res=32, cbase=256, cmax=16, map=2, mbstd=4, batch=8, iters=2, z=32),
}
SIZES["gpu"] |= dict(arch="resnet50", width=64, stem="imagenet", K=256, hidden=512, n=8, images=256)
SIZES["smoke"] |= dict(arch="resnet18", width=4, stem="small", K=8, hidden=8, n=2, images=16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Median seconds of `fn` over `reps` runs (after the caller's warm-up)."""
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    gib = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return f"{gib:.1f} GiB"


def network_kwargs(s: dict[str, Any]) -> tuple[dict, dict]:
    """paper256's G and D (or the smoke sizes'), NVIDIA's names."""
    fp16 = 4 if s["res"] >= 128 else 0
    synthesis = dict(channel_base=s["cbase"], channel_max=s["cmax"], num_fp16_res=fp16, conv_clamp=256)
    g = dict(
        z_dim=s["z"],
        c_dim=0,
        w_dim=s["z"],
        img_resolution=s["res"],
        img_channels=3,
        mapping_kwargs=dict(num_layers=s["map"]),
        synthesis_kwargs=synthesis,
    )
    d = dict(
        c_dim=0,
        img_resolution=s["res"],
        img_channels=3,
        channel_base=s["cbase"],
        channel_max=s["cmax"],
        num_fp16_res=fp16,
        conv_clamp=256,
        epilogue_kwargs=dict(mbstd_group_size=s["mbstd"]),
    )
    return g, d


def gan_seconds_per_kimg(G, D, s: dict[str, Any], device: torch.device, compile_: bool) -> float:
    """s/kimg of `finetune-gan`'s minibatches (all four phases, lazy regularisation) over one R1 cycle."""
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    augment = augment_pipe(GanConfig()).to(device)
    opt_G, opt_D = lazy_adam(G.parameters(), 0.0025, G_REG_INTERVAL), lazy_adam(D.parameters(), 0.0025, D_REG_INTERVAL)
    phases = phases_for("G", opt_G, G_REG_INTERVAL) + phases_for("D", opt_D, D_REG_INTERVAL)
    compiled = [CompiledMainPasses(G.synthesis), CompiledMainPasses(D)] if compile_ else []
    synthesis, disc = compiled or (G.synthesis, D)
    r1 = 0.0002 * s["res"] ** 2 / s["batch"]
    loss = StyleGAN2Loss(G.mapping, synthesis, disc, augment, r1_gamma=r1, pl_weight=2.0, device=device)
    G.requires_grad_(False)
    D.requires_grad_(False)
    reals = torch.rand(s["batch"], 3, s["res"], s["res"], device=device) * 2 - 1
    cycle = D_REG_INTERVAL if s["iters"] >= D_REG_INTERVAL else s["iters"]

    def minibatches(count: int) -> None:
        for batch_idx in range(count):
            for phase in phases:
                if batch_idx % phase.interval == 0:
                    CompiledMainPasses.select(compiled, phase)
                    phase.run(loss, reals, torch.randn(s["batch"], G.z_dim, device=device))

    minibatches(cycle)  # warm-up: compile, cuDNN autotuning, allocator
    seconds = timed(lambda: minibatches(cycle), 1, device)
    return seconds / (cycle * s["batch"]) * 1000


def nvidia_seconds_per_kimg(repo: Path, G, D, s: dict[str, Any], device: torch.device) -> float:
    """NVIDIA's networks and loss with their pure-PyTorch reference ops (custom CUDA kernels off), same weights."""
    sys.path.insert(0, str(repo))
    warnings.filterwarnings("ignore")
    from torch_utils.ops import bias_act, upfirdn2d  # type: ignore[import-not-found]
    from training import loss as nv_loss  # type: ignore[import-not-found]
    from training import networks as nvidia  # type: ignore[import-not-found]

    bias_act._init = upfirdn2d._init = lambda: False  # the reference path
    g_kwargs, d_kwargs = network_kwargs(s)
    nG, nD = nvidia.Generator(**g_kwargs).to(device), nvidia.Discriminator(**d_kwargs).to(device)
    nG.load_state_dict(G.state_dict())
    nD.load_state_dict(D.state_dict())
    r1 = 0.0002 * s["res"] ** 2 / s["batch"]
    loss = nv_loss.StyleGAN2Loss(
        device, nG.mapping, nG.synthesis, nD, augment_pipe(GanConfig()).to(device), r1_gamma=r1, pl_weight=2.0
    )
    opt_G, opt_D = lazy_adam(nG.parameters(), 0.0025, G_REG_INTERVAL), lazy_adam(nD.parameters(), 0.0025, 16)
    phases = [("Gmain", opt_G, 1), ("Greg", opt_G, G_REG_INTERVAL), ("Dmain", opt_D, 1), ("Dreg", opt_D, 16)]
    reals = torch.rand(s["batch"], 3, s["res"], s["res"], device=device) * 2 - 1
    c = torch.zeros(s["batch"], 0, device=device)
    cycle = D_REG_INTERVAL if s["iters"] >= D_REG_INTERVAL else s["iters"]

    def minibatches(count: int) -> None:
        for batch_idx in range(count):
            for name, opt, interval in phases:
                if batch_idx % interval == 0:
                    nG.requires_grad_(name.startswith("G"))  # as NVIDIA's loop: only the phase's network
                    nD.requires_grad_(name.startswith("D"))
                    opt.zero_grad(set_to_none=True)
                    z = torch.randn(s["batch"], nG.z_dim, device=device)
                    loss.accumulate_gradients(name, reals, c, z, c, sync=True, gain=interval)
                    opt.step()

    minibatches(cycle)
    return timed(lambda: minibatches(cycle), 1, device) / (cycle * s["batch"]) * 1000


def generate_images_per_second(G, s: dict[str, Any], device: torch.device) -> float:
    """`viscoin generate`'s loop: batches of 32 through the EMA generator, constant noise, to the CPU."""
    G = copy.deepcopy(G).eval()

    @torch.no_grad()
    def batches() -> None:
        for _ in range(max(1, s["iters"] // 4)):
            G(torch.randn(32, G.z_dim, device=device), None, noise_mode="const").float().cpu()

    batches()
    return max(1, s["iters"] // 4) * 32 / timed(batches, 1, device)


def write_jpegs(root: Path, s: dict[str, Any]) -> None:
    """A folder dataset of random-texture JPEGs, 9/8 of the resolution (the loader resizes and crops)."""
    rng = np.random.default_rng(0)
    size = s["res"] * 9 // 8
    for split, count in (("train", s["images"]), ("test", 4)):
        for k in range(count):
            folder = root / split / f"class{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{k}.jpg", quality=90)


def loader_images_per_second(root: Path, s: dict[str, Any], rt) -> tuple[float, int]:
    """Images/s of the training loader in a run's steady state (its workers started and warm: the second of
    two ticks is timed), and its workers."""
    from viscoin_cli.cli.options import default_workers
    from viscoin_cli.data import load_dataset
    from viscoin_cli.training.run import RunLoader

    dataset = load_dataset("folder", "train", root=root, resolution=s["res"], augment=True)
    workers = default_workers("folder", None)
    steps = max(4, s["images"] // s["batch"])
    data = RunLoader(dataset, s["batch"], 0, [(0, steps), (1, steps)], rt, workers)
    for images, _ in data.tick(0):
        images.to(rt.device, non_blocking=True)
    start = time.perf_counter()
    for images, _ in data.tick(1):
        images.to(rt.device, non_blocking=True)
    sync(rt.device)
    seconds = time.perf_counter() - start
    data.close()
    return steps * s["batch"] / seconds, workers


def viscoin_step(root: Path, s: dict[str, Any], G, rt, compile_: bool) -> tuple[float, float]:
    """(iterations/s, FLOPs per step) of `train`'s VisCoIN step (loss, backward, Adam) on the folder data."""
    from torch.utils.flop_counter import FlopCounterMode

    from viscoin_cli.training.viscoin import VisCoINConfig

    f = Classifier(s["arch"], 2, width=s["width"], stem=s["stem"])
    facts = {"name": "folder", "class_names": ["class0", "class1"], "num_classes": 2, "channels": 3}
    f_path = save_checkpoint(
        root / "f.safetensors",
        f.state_dict(),
        kind="classifier",
        config=f.config,
        dataset={**facts, "resolution": s["res"]},
    )
    g_path = root / "G.safetensors"
    if not g_path.is_file():
        save_checkpoint(
            g_path,
            {k: v.cpu() for k, v in G.state_dict().items()},
            kind="generator",
            config=network_kwargs(s)[0],
            dataset={**facts, "resolution": s["res"]},
        )
    given = dict(dataset="folder", data_root=str(root), classifier=str(f_path), generator=str(g_path))
    given |= dict(num_concepts=s["K"], hidden=s["hidden"], real_batch=s["n"], synthetic_batch=s["n"])
    cfg = VisCoINConfig.create({**given, "lpips": "none", "compile": compile_})
    recipe = cfg.recipe(rt)
    net = maybe_compile(recipe.model, compile_)
    optimizer = torch.optim.Adam(recipe.model.trainable_parameters(), lr=1e-4)
    reals = torch.stack([recipe.train_set[i][0] for i in range(s["n"])]).to(rt.device)
    labels = torch.zeros(s["n"], dtype=torch.long, device=rt.device)

    def step() -> None:
        loss, *_ = recipe.loss(net, reals, labels, rt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up (and compile)
        step()
    counter = FlopCounterMode(display=False)
    if not compile_:
        with counter:
            step()
    seconds = timed(step, s["iters"], rt.device)
    return 1 / seconds, float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvidia-repo", type=Path, help="a clone of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak TFLOP/s [default: by device name]")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (default without CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the --compile rows")
    args = parser.parse_args()
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    s = SIZES["smoke" if smoke else "gpu"]
    rt = setup_runtime("cpu" if smoke else "cuda", "fp32", 0)
    device = rt.device
    compile_ = not (smoke or args.no_compile)  # compiling takes minutes on a CPU: tests/test_compile.py checks it
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    print(f"{name}, torch {torch.__version__}, {'CPU smoke sizes' if smoke else 'paper sizes'}: {s['res']} px")
    rows: list[tuple[str, str, str]] = []

    def row(label: str, value: str, target: str = "") -> None:
        rows.append((label, value, target))
        print(f"{label:<48} {value:>18}   {target}", flush=True)

    print(f"{'measurement':<48} {'value':>18}   target")
    torch.manual_seed(0)
    g_kwargs, d_kwargs = network_kwargs(s)
    G, D = Generator(**g_kwargs).to(device), Discriminator(**d_kwargs).to(device)
    ours = gan_seconds_per_kimg(G, D, s, device, compile_=False)
    row(f"StyleGAN2 train, batch {s['batch']}, eager (s/kimg)", f"{ours:.2f}", "<= 8 s/kimg")
    if compile_:
        fast = gan_seconds_per_kimg(G, D, s, device, compile_=True)
        row("StyleGAN2 train, --compile (s/kimg)", f"{fast:.2f}", "<= 8 s/kimg")
    else:
        row("StyleGAN2 train, --compile (s/kimg)", "skipped", "(CPU smoke or --no-compile)")
    if args.nvidia_repo:
        nv = nvidia_seconds_per_kimg(args.nvidia_repo, G, D, s, device)
        row("StyleGAN2 train, NVIDIA reference ops (s/kimg)", f"{nv:.2f}", f">= 2x ours: {nv / ours:.2f}x")
    else:
        row("StyleGAN2 train, NVIDIA reference ops (s/kimg)", "skipped", "(no --nvidia-repo)")
    row("StyleGAN2 peak GPU memory", peak_memory(device))
    row("generate (images/s)", f"{generate_images_per_second(G, s, device):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, s)
        per_second, workers = loader_images_per_second(root, s, rt)
        row(f"data loader {s['res']} px JPEG, {workers} workers (images/s)", f"{per_second:.0f}")
        its, flops = viscoin_step(root, s, G, rt, compile_=False)
        row(f"VisCoIN {s['n']}+{s['n']} images, K={s['K']}, eager (it/s)", f"{its:.2f}", ">= 10 it/s")
        tflops = flops * its / 1e12
        mfu = f"{tflops / peak:.1%}" if peak else "n/a (no --peak-tflops)"
        row("VisCoIN model FLOP utilisation", f"{tflops:.2f} TFLOP/s", f"MFU {mfu}")
        if compile_:
            fast_its, _ = viscoin_step(root, s, G, rt, compile_=True)
            row(
                "VisCoIN --compile (it/s)",
                f"{fast_its:.2f}",
                f">= 10 it/s; MFU {flops * fast_its / 1e12 / peak:.1%}" if peak else ">= 10 it/s",
            )
        else:
            row("VisCoIN --compile (it/s)", "skipped", "(CPU smoke or --no-compile)")
        row("VisCoIN peak GPU memory", peak_memory(device))


if __name__ == "__main__":
    main()
