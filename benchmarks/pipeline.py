"""Wall time of the digits pipeline, stage by stage, and of the commands a user types right after install.

    python benchmarks/pipeline.py [--out DIR] [--runs 5] [--skip-pipeline] [--from-scratch]

1. `viscoin pipeline --dataset digits` into a fresh folder (target: < 15 min on a 2-core CPU), each
   stage's seconds read back from the folder's pipeline.json.
2. `viscoin visualize --concept 0 --lambda 3` on the shipped model (target: < 3 s end to end) and
   `viscoin --help` (target: < 0.3 s), each in fresh processes, alternating with the references they
   cannot beat (`python -c pass`, `python -c "import torch"`), medians and ratios side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
VISCOIN = str(BIN / "viscoin")


def _seconds(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def pipeline_stages(out: Path, from_scratch: bool) -> None:
    command = [VISCOIN, "pipeline", "--dataset", "digits", "--out", str(out), "--quiet", "--device", "cpu"]
    command += ["--from-scratch"] if from_scratch else []
    start = time.perf_counter()
    subprocess.run(command, check=True)
    total = time.perf_counter() - start
    record = json.loads((out / "pipeline.json").read_text())
    print(f"viscoin pipeline --dataset digits{' --from-scratch' if from_scratch else ''} -> {out}")
    print(f"{'stage':<12} {'status':<20} {'seconds':>9}")
    for name, info in record["stages"].items():
        print(f"{name:<12} {info['status']:<20} {info.get('seconds', 0.0):>9.1f}")
    target = "" if from_scratch else f"  (target < 900 s: {'met' if total < 900 else 'NOT met'})"
    print(f"{'total':<33} {total:>9.1f}{target}")


def commands(runs: int) -> None:
    with tempfile.TemporaryDirectory() as cwd:
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "viscoin --help": [VISCOIN, "--help"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "viscoin visualize --concept 0 --lambda 3": [
                VISCOIN,
                "visualize",
                "--concept",
                "0",
                "--lambda",
                "3",
                "--out",
                "c.png",
                "--device",
                "cpu",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for command in cases.values():  # warm the file cache once
            _seconds(command, cwd)
        for _ in range(runs):
            for name, command in cases.items():
                times[name].append(_seconds(command, cwd))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'command':<44} {'median s':>9} {'min s':>7}  ratio")
    for name, reference in (
        ("python -c pass", None),
        ("viscoin --help", "python -c pass"),
        ("python -c 'import torch'", None),
        ("viscoin visualize --concept 0 --lambda 3", "python -c 'import torch'"),
    ):
        ratio = f"{med[name] / med[reference]:.2f}x {reference}" if reference else ""
        print(f"{name:<44} {med[name]:>9.3f} {min(times[name]):>7.3f}  {ratio}")
    for name, target in (("viscoin --help", 0.3), ("viscoin visualize --concept 0 --lambda 3", 3.0)):
        print(f"target {name} < {target} s: {'met' if med[name] < target else 'NOT met'} ({med[name]:.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="pipeline folder [default: a temporary one]")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-pipeline", action="store_true", help="only time the commands")
    parser.add_argument("--from-scratch", action="store_true", help="time the pipeline with every stage trained")
    args = parser.parse_args()
    if not args.skip_pipeline:
        if args.out is not None:
            pipeline_stages(args.out, args.from_scratch)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                pipeline_stages(Path(tmp) / "pipeline", args.from_scratch)
    commands(args.runs)


if __name__ == "__main__":
    main()
