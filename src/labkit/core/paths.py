"""Where the kit reads and writes: every location can be moved by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_dir() -> Path:
    """The installed ``labkit`` package folder."""
    return _PACKAGE_DIR


def repo_root() -> Path:
    """The repository root: ``LABKIT_ROOT``, else the folder holding labkit's pyproject.toml.

    An editable install sits in ``<root>/src/labkit``; otherwise fall back to the working directory.
    """
    env = os.environ.get("LABKIT_ROOT")
    if env:
        return Path(env).resolve()
    candidate = _PACKAGE_DIR.parents[1]
    if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
        return candidate
    return Path.cwd().resolve()


def notebooks_dir() -> Path:
    """Study notebooks (``LABKIT_NOTEBOOKS`` overrides ``<root>/notebooks``)."""
    env = os.environ.get("LABKIT_NOTEBOOKS")
    return Path(env).resolve() if env else repo_root() / "notebooks"


def reports_root() -> Path:
    """Where study reports are published (``LABKIT_REPORTS`` overrides ``<root>/reports``)."""
    env = os.environ.get("LABKIT_REPORTS")
    return Path(env).resolve() if env else repo_root() / "reports"


def cache_dir(sub: str = "") -> Path:
    """A cache folder (``LABKIT_CACHE`` overrides ``<root>/.cache/labkit``), created on demand."""
    env = os.environ.get("LABKIT_CACHE")
    base = Path(env).resolve() if env else repo_root() / ".cache" / "labkit"
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Named labkit checkpoints (``LABKIT_CHECKPOINTS`` overrides ``<root>/checkpoints``)."""
    env = os.environ.get("LABKIT_CHECKPOINTS")
    path = Path(env).resolve() if env else repo_root() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dir() -> Path | None:
    """A folder of local pretrained weights (``LABKIT_WEIGHTS_DIR``), if set."""
    env = os.environ.get("LABKIT_WEIGHTS_DIR")
    return Path(env).expanduser().resolve() if env else None
