"""A new machine: copy the repo, install it with the README's command, use the shipped checkpoints.

Catches a dependency missing from pyproject.toml or a file the install does not carry. Slow (it builds a
virtual environment and installs torch into it, from pip's cache when CI already downloaded it). The wheel
test does the same for `pip install .`/pipx: a wheel of the working tree in a fresh environment, where the
shipped checkpoints come from the installed package, not from the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_main_command() -> str:
    """The README's first code block: install, then run the main job."""
    block = re.search(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no bash code block"
    return block.group(1).strip()


# A venv with torch's CUDA build takes ~5.8 GB; the rest of the suite needs room after it, too. A full disk
# fails every later test that writes a file, so the test skips (with the reason) rather than fill it.
FRESH_VENV_BYTES = 8 * 2**30


def _skip_without_room_for_a_venv(where: Path) -> None:
    free = shutil.disk_usage(where).free
    if free < FRESH_VENV_BYTES:
        need, have = FRESH_VENV_BYTES / 2**30, free / 2**30
        pytest.skip(f"a fresh install needs ~{need:.0f} GiB free on {where}; {have:.1f} GiB free")


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
    _skip_without_room_for_a_venv(tmp_path)
    repo = tmp_path / "viscoin"
    _copy_working_tree(repo)
    try:
        _install_by_the_readme_and_use(repo, tmp_path)
    finally:  # give the disk back at once: pytest keeps tmp_path until the session (and 3 sessions) end
        shutil.rmtree(repo / ".venv", ignore_errors=True)


def _install_by_the_readme_and_use(repo: Path, tmp_path: Path) -> None:
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


WHERE = "import viscoin_cli, viscoin_cli.shipped as s; print(viscoin_cli.__file__); print(s.DIGITS_DIR)"


def _clean_env() -> dict[str, str]:
    """This environment without the test's venv: no VIRTUAL_ENV, no PYTHONPATH, no .venv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def _venv_with_the_wheel(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A wheel of the working tree installed (--no-deps) into a new venv; its python and site-packages.

    torch and the other dependencies come from this interpreter's site-packages, added afterwards as plain
    lines of a .pth file: a plain line adds the folder to sys.path without running the .pth files inside
    it, so the editable install's finder (which maps viscoin_cli to this checkout) stays out."""
    repo, wheels, venv = tmp_path / "viscoin", tmp_path / "wheels", tmp_path / "venv"
    _copy_working_tree(repo)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, repo],
                   cwd=repo, env=env, check=True, capture_output=True)  # fmt: skip
    (wheel,) = wheels.glob("viscoin-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], env=env, check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel],
                   env=env, check=True, capture_output=True)  # fmt: skip
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               env=env, check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    ours |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    (site / "_deps_of_the_test_venv.pth").write_text("\n".join(sorted(p for p in ours if Path(p) != ROOT)) + "\n")
    return python, site


def test_pyproject_lists_every_package():
    """pyproject.toml lists the packages by hand (the checkpoints' mapped package rules out `find`)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "viscoin_cli").rglob("__init__.py")}
    assert set(config["packages"]) == on_disk | {"viscoin_cli._checkpoints"}
    assert config["package-dir"] == {"viscoin_cli._checkpoints": "checkpoints"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the repo's files")
@pytest.mark.skipif(sys.platform == "win32", reason="venv layout of POSIX (bin/)")
def test_wheel_install_then_shipped_checkpoints_work_from_anywhere(tmp_path):
    env = _clean_env()
    python, site = _venv_with_the_wheel(tmp_path, env)
    packaged = (site / "viscoin_cli" / "_checkpoints" / "digits").resolve()
    assert sorted(p.name for p in packaged.iterdir()) == [
        "classifier.safetensors", "flaem.safetensors", "flint.safetensors", "generator.safetensors", "metrics.json",
        "viscoin.safetensors",
    ]  # fmt: skip
    elsewhere = tmp_path / "cwd"  # neither the checkout nor its copy: the defaults must not depend on the cwd
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", WHERE], cwd=elsewhere, env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()  # the installed package, not the checkout nor its copy
    assert [Path(line).resolve() for line in where] == [(site / "viscoin_cli" / "__init__.py").resolve(), packaged]

    viscoin = python.parent / "viscoin"
    picture = subprocess.run(
        [viscoin, "visualize", "--concept", "0", "--lambda", "3", "--out", "x.png", "--device", "cpu"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert picture.returncode == 0, picture.stderr
    assert (elsewhere / "x.png").stat().st_size > 0

    accuracy = subprocess.run(
        [viscoin, "evaluate", "accuracy", "--json", "--device", "cpu"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert accuracy.returncode == 0, accuracy.stderr
    document = json.loads(accuracy.stdout)
    assert Path(document["model"]["path"]).resolve() == packaged / "viscoin.safetensors"
    recorded = json.loads((packaged / "metrics.json").read_text())
    assert document["model"]["sha256"] == recorded["model"]["sha256"]
    assert document["metrics"]["accuracy"]["g"] == pytest.approx(recorded["metrics"]["accuracy"]["g"], abs=1e-9)
