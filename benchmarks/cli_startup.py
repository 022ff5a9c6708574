"""How long `viscoin --help` takes, beside bare Python start-up and `import torch` (target: < 0.3 s).

    python benchmarks/cli_startup.py [--runs 10]

Each command runs in a fresh process, alternating, so machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

VISCOIN = Path(sys.executable).parent / "viscoin"
COMMANDS = {
    "python -c pass (reference)": [sys.executable, "-c", "pass"],
    "viscoin --help": [str(VISCOIN), "--help"],
    "viscoin pretrain-classifier --help": [str(VISCOIN), "pretrain-classifier", "--help"],
    "python -c 'import torch' (avoided)": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["python -c pass (reference)"])
    print(f"{'command':<40} {'median s':>9} {'min s':>7} {'x python':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<40} {median:9.3f} {min(samples):7.3f} {median / reference:9.1f}")
    help_median = statistics.median(times["viscoin --help"])
    print(f"target viscoin --help < 0.300 s: {'met' if help_median < 0.3 else 'NOT met'} ({help_median:.3f} s)")


if __name__ == "__main__":
    main()
