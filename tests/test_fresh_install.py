"""A new machine: copy the repo, install it with the README's command, use the shipped checkpoints.

Catches a dependency missing from pyproject.toml or a file the install does not carry. Slow (it builds a
virtual environment and installs torch into it, from pip's cache when CI already downloaded it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_main_command() -> str:
    """The README's first code block: install, then run the main job."""
    block = re.search(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no bash code block"
    return block.group(1).strip()


def _copy_working_tree(dest: Path) -> None:
    """The files a clone would have (tracked, plus new files git does not ignore); no venv, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the repo's files")
def test_readme_install_then_shipped_checkpoints_work(tmp_path):
    repo = tmp_path / "viscoin"
    _copy_working_tree(repo)
    install = _readme_main_command().split("&& .venv/bin/viscoin")[0]
    assert "pip install" in install, install
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    subprocess.run(install.replace("python3", sys.executable, 1), shell=True, cwd=repo, env=env, check=True)
    viscoin = repo / ".venv" / "bin" / "viscoin"
    elsewhere = tmp_path / "cwd"  # the defaults must not depend on the current directory
    elsewhere.mkdir()

    picture = subprocess.run(
        [viscoin, "visualize", "--concept", "0", "--lambda", "3", "--out", elsewhere / "c0.png", "--device", "cpu"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert picture.returncode == 0, picture.stderr
    assert (elsewhere / "c0.png").stat().st_size > 0

    accuracy = subprocess.run(
        [viscoin, "evaluate", "accuracy", "--json", "--device", "cpu"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert accuracy.returncode == 0, accuracy.stderr
    assert json.loads(accuracy.stdout)["metrics"]["accuracy"]["g"] >= 0.9
