"""benchmarks/gpu.py runs on a CPU at its smoke sizes and prints every row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROWS = (
    "StyleGAN2 train, batch 8, eager (s/kimg)",
    "StyleGAN2 train, --compile (s/kimg)",
    "StyleGAN2 train, NVIDIA reference ops (s/kimg)",
    "StyleGAN2 peak GPU memory",
    "generate (images/s)",
    "data loader 32 px JPEG",
    "VisCoIN 2+2 images, K=8, eager (it/s)",
    "VisCoIN model FLOP utilisation",
    "VisCoIN --compile (it/s)",
    "VisCoIN peak GPU memory",
)


@pytest.mark.slow
def test_gpu_benchmark_cpu_smoke():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    result = subprocess.run(
        [sys.executable, str(script), "--cpu-smoke"], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for label in ROWS:
        assert any(line.startswith(label) for line in lines), label
    assert "<= 8 s/kimg" in result.stdout and ">= 10 it/s" in result.stdout
