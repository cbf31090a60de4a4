"""Where each data set's files live, and the error that says how to install a missing one."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import DataError, _msg

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
# Files unpacked by `make setup` from a package that is not installed as such (see the Makefile).
VENV_DATA = Path(sys.prefix) / "share" / "appkit-data"


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed pip package, read by path (its own dependencies may be skipped)."""
    from ..folders import package_folder

    folder = package_folder(module)
    if folder is None:
        raise missing(f"the pip package {pip_name}", fix=f"run `make setup` (it runs `pip install --no-deps {pip_name}`)")
    return folder


def has_package(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing(what: str, *, fix: str, where: str | None = None) -> DataError:
    return DataError(_msg(f"The sample data needs {what}, which is not installed", where=where, fix=fix))


def cache_root() -> Path:
    """Where derived sample files (resampled or synthesised audio, PNGs) are written once and reused."""
    from ..backbones.whisper_ct2 import cache_dir  # one definition of appkit's cache location

    return cache_dir() / "samples"
