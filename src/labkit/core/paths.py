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


PUBLISHED_PRESET = "default"  # the preset whose run the kit publishes to reports/


def runs_root() -> Path:
    """Run folders of interactive and non-published runs (``LABKIT_RUNS`` overrides ``<root>/runs``)."""
    env = os.environ.get("LABKIT_RUNS")
    return Path(env).resolve() if env else repo_root() / "runs"


def new_run_dir(study: str, preset: str, label: str = "") -> Path:
    """A fresh ``runs/<study>/<UTC time>-<preset>[-label]/`` folder (never an existing one)."""
    import time
    import uuid

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"{stamp}-{preset}" + (f"-{label}" if label else "")
    path = runs_root() / study / name
    if path.exists():
        path = path.with_name(f"{name}-{uuid.uuid4().hex[:6]}")
    path.mkdir(parents=True)
    return path


def display_path(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (printed paths carry no home folders)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


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


RUN_CHECKPOINTS = "LABKIT_RUN_CHECKPOINTS"


def run_checkpoints_dir() -> Path | None:
    """Where a run that does not publish writes the named checkpoints it produces (``LABKIT_RUN_CHECKPOINTS``, set
    by the runner for every non-publishing run and by an interactive ``Report`` to its run folder), so that only a
    published run replaces a checkpoint that other studies consume. None: write to ``checkpoints_dir()``."""
    env = os.environ.get(RUN_CHECKPOINTS)
    return Path(env).resolve() if env else None


def weights_dir() -> Path | None:
    """A folder of local pretrained weights (``LABKIT_WEIGHTS_DIR``), if set."""
    env = os.environ.get("LABKIT_WEIGHTS_DIR")
    return Path(env).expanduser().resolve() if env else None
