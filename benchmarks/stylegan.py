"""Our StyleGAN2 against NVIDIA's stylegan2-ada-pytorch, same weights, same inputs, in one process.

    python benchmarks/stylegan.py --nvidia-repo /path/to/stylegan2-ada-pytorch [--resolution 64] [--device cpu]

NVIDIA's code is not part of this project: clone it yourself and point --nvidia-repo at the clone. On the
CPU it runs its reference (non-CUDA) ops; on a GPU it compiles its custom CUDA ops when it can (needs nvcc
and ninja), which is the comparison the "within 1.2x of NVIDIA's training speed" target is about. Timings
alternate between the two implementations so machine load hits both alike; the output also prints the largest
difference between the two generators' images, which must stay below 1e-3.

Phases timed (median of --reps): G inference (each implementation's default: NVIDIA's fused modulated
conv; ours the same on CUDA, the non-fused form in channels_last on the CPU), a G training step (forward +
backward through the non-fused form), and a D step with R1 (forward, gradient w.r.t. the images with
create_graph, backward of its squared norm). --compile adds a column: our G through `runtime.maybe_compile`
(what `finetune-gan --compile` runs) for the two G phases; D + R1 has none, as compiled code has no double
backward (finetune-gan keeps D eager for R1 too). Compiling takes a minute or more per phase, in the warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from viscoin_cli import prefer_huge_pages

prefer_huge_pages()  # as the `viscoin` command does, before torch loads: for both implementations alike

import torch  # noqa: E402

from viscoin_cli.nets.stylegan2 import Discriminator, Generator  # noqa: E402
from viscoin_cli.runtime import maybe_compile  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvidia-repo", type=Path, required=True, help="a clone of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channel-base", type=int, default=8192)
    parser.add_argument("--channel-max", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time our G compiled (torch.compile)")
    args = parser.parse_args()
    if not (args.nvidia_repo / "training" / "networks.py").is_file():
        sys.exit(f"error: {args.nvidia_repo} is not a stylegan2-ada-pytorch clone (no training/networks.py)")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.nvidia_repo))
    warnings.filterwarnings("ignore")
    from training import networks as nvidia  # type: ignore[import-not-found]

    device = torch.device(args.device)
    # The small-data config of finetune-gan's 'default' preset, scaled by --channel-base / --channel-max.
    g_kwargs = dict(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=args.resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max, conv_clamp=256),
    )
    d_kwargs = dict(
        c_dim=0,
        img_resolution=args.resolution,
        img_channels=3,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        conv_clamp=256,
    )
    torch.manual_seed(0)
    nets = {"nvidia": (nvidia.Generator(**g_kwargs), nvidia.Discriminator(**d_kwargs))}
    ours = (Generator(**g_kwargs), Discriminator(**d_kwargs))
    ours[0].load_state_dict(nets["nvidia"][0].state_dict())
    ours[1].load_state_dict(nets["nvidia"][1].state_dict())
    nets["ours"] = ours
    for G, D in nets.values():
        G.to(device)
        D.to(device)

    z = torch.randn(args.batch, 512, device=device)
    reals = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)

    def g_infer(G: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return G.eval()(z, None, noise_mode="const")

    def g_train(G: torch.nn.Module) -> None:
        G.train()
        G(z, None, noise_mode="random", fused_modconv=False).square().mean().backward()

    def d_r1(D: torch.nn.Module) -> None:
        x = reals.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, None).sum(), x, create_graph=True)
        grad.square().sum().backward()

    diff = (g_infer(nets["ours"][0]) - g_infer(nets["nvidia"][0])).abs().max().item()
    columns = ("nvidia", "ours")
    phases: dict[str, dict[str, Callable[[], object]]] = {
        "G inference": {name: lambda name=name: g_infer(nets[name][0]) for name in columns},
        "G train step": {name: lambda name=name: g_train(nets[name][0]) for name in columns},
        "D step + R1": {name: lambda name=name: d_r1(nets[name][1]) for name in columns},
    }
    if args.compile:
        compiled = maybe_compile(ours[0], True)
        phases["G inference"]["compiled"] = lambda: g_infer(compiled)
        phases["G train step"]["compiled"] = lambda: g_train(compiled)
    print(
        f"StyleGAN2 {args.resolution}px, batch {args.batch}, channel_base {args.channel_base}, "
        f"channel_max {args.channel_max}, {device}, {torch.get_num_threads()} threads; "
        f"max |ours - NVIDIA| on G images: {diff:.2e}"
    )
    header = f"{'phase':<14} {'NVIDIA ms':>10} {'ours ms':>10} {'ours/NVIDIA':>12}"
    if args.compile:
        header += f" {'compiled ms':>12} {'compiled/NVIDIA':>16}"
    print(header)
    for phase, runs in phases.items():
        for run in runs.values():  # warm-up (CUDA kernels, allocator, NVIDIA's plugin build, compiling)
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.reps):
            for name, run in runs.items():
                times[name].append(_time(run, device))
        ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        line = f"{phase:<14} {ms['nvidia']:>10.1f} {ms['ours']:>10.1f} {ms['ours'] / ms['nvidia']:>11.2f}x"
        if args.compile and "compiled" in ms:
            line += f" {ms['compiled']:>12.1f} {ms['compiled'] / ms['nvidia']:>15.2f}x"
        elif args.compile:
            line += f" {'n/a':>12} {'(double backward)':>16}"
        print(line)


if __name__ == "__main__":
    main()
