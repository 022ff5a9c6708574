"""Checks on where a command will write, made before any work starts.

A command that writes learns at once that its destination is impossible (a folder where a file goes, a
parent that is a file, a folder it may not write in, /proc), as one line, instead of after minutes of
work as a traceback. Nothing is created by the checks: a probe file in the nearest existing folder is
made and removed again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from viscoin_cli.errors import UserError


def check_output_file(path: Path, option: str, suffixes: Sequence[str] = ()) -> Path:
    """`path` can be written as a file (its folders created on the way), with one of `suffixes` if given."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    _check_can_create(path.parent, option, path)
    return path


def check_output_folder(path: Path, option: str) -> Path:
    """`path` is, or can be made, a folder this process writes in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: exists and is not a folder")
    _check_can_create(path, option, path)
    return path


def _check_can_create(folder: Path, option: str, shown: Path) -> None:
    """Files can be created in `folder`, or in the folders that would be made down to it."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise UserError(f"{option} {shown}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {shown}: {existing} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".viscoin-write-check-")
    except OSError as err:
        raise UserError(f"{option} {shown}: cannot write in {existing} ({err.strerror or err})") from None
    os.close(handle)
    os.unlink(probe)
