"""The report a study notebook writes: figures, tables, metrics, claims and a manifest, published atomically.

Everything goes to a staging folder first. ``finalize()`` writes the manifest and swaps the staging
folder in for ``reports/<study>/``, so a run that crashes or is killed leaves the last good report whole.
When ``labkit reproduce`` runs the notebook it owns the staging folder (``LABKIT_REPORT_DIR``) and
publishes it itself, after adding the executed notebook and its HTML export.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.atomic import atomic_write_text, publish_dir
from labkit.core.fingerprint import study_fingerprint
from labkit.core.params import Config, load_spec
from labkit.core.paths import notebooks_dir, repo_root, reports_root

CLAIM_STATUSES = ("held", "did not hold", "not evaluated")
_VERSIONED = ("torch", "torchvision", "timm", "peft", "numpy", "scipy", "pandas", "scikit-learn",
              "scikit-image", "segmentation-models-pytorch", "umap-learn", "matplotlib", "papermill", "labkit")


def _json_safe(value: Any) -> Any:
    """Numbers from numpy/torch to plain Python; NaN and inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_state(root: Path | None = None) -> dict[str, Any]:
    root = root or repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--", "src", "notebooks"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except ImportError:
        return False


class Report:
    """Collects one study run's outputs; ``finalize()`` publishes them to ``reports/<study>/``."""

    def __init__(self, cfg: Config, title: str | None = None):
        self.cfg = cfg
        self.spec = load_spec(cfg.study)
        self.title = title or self.spec.title
        self.started = time.time()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        managed = os.environ.get("LABKIT_REPORT_DIR")
        self.managed = bool(managed)
        if managed:
            self.path = Path(managed)
        else:
            self.path = reports_root() / ".staging" / f"{cfg.study}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir(parents=True, exist_ok=True)
        self.final_path = reports_root() / cfg.study
        self.figures: list[str] = []
        self.tables: list[str] = []
        self.headline_table: str | None = None
        self._metrics: dict[str, Any] = {}
        self._claims: dict[str, dict] = {}
        self.finalized = False

    # ---- outputs -------------------------------------------------------------------------------
    def figure(self, name: str, fig, show: bool = True, dpi: int = 110) -> Path:
        """Save ``fig`` as ``<name>.png``, show it inline in a notebook, and close it."""
        import matplotlib.pyplot as plt

        path = self.path / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if show and _in_notebook():
            from IPython.display import display

            display(fig)
        plt.close(fig)
        if name not in self.figures:
            self.figures.append(name)
        return path

    def table(self, name: str, df: pd.DataFrame, headline: bool = False, floatfmt: str = ".3f",
              index: bool = False) -> pd.DataFrame:
        """Save ``df`` as ``<name>.csv`` and ``<name>.md``; return it for display."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"table '{name}' must be a pandas DataFrame, got {type(df).__name__}")
        df.to_csv(self.path / f"{name}.csv", index=index)
        (self.path / f"{name}.md").write_text(df.to_markdown(index=index, floatfmt=floatfmt) + "\n")
        if name not in self.tables:
            self.tables.append(name)
        if headline or self.headline_table is None:
            self.headline_table = name
        return df

    def metrics(self, values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Merge numbers into ``metrics.json``."""
        self._metrics.update(_json_safe({**(values or {}), **more}))
        return dict(self._metrics)

    def claim(self, id: str, statement: str, status: str, evidence: dict[str, Any] | None = None,
              reason: str = "") -> dict:
        """Record one claim of the paper: ``held``, ``did not hold`` or ``not evaluated`` (with a reason)."""
        if status not in CLAIM_STATUSES:
            raise ValueError(f"claim '{id}': status must be one of {CLAIM_STATUSES}, got {status!r}")
        if status == "not evaluated" and not reason:
            raise ValueError(f"claim '{id}': a 'not evaluated' claim needs the reason")
        row = {"id": id, "statement": statement, "status": status,
               "evidence": _json_safe(evidence or {}), "reason": reason}
        self._claims[id] = row
        return row

    def claims_table(self) -> pd.DataFrame:
        rows = [{"claim": c["id"], "status": c["status"], "statement": c["statement"], "reason": c["reason"]}
                for c in self._claims.values()]
        return pd.DataFrame(rows, columns=["claim", "status", "statement", "reason"])

    # ---- publishing ----------------------------------------------------------------------------
    def finalize(self) -> Path:
        """Write metrics, claims and manifest; publish atomically (unless the runner does it)."""
        if self.spec.headline not in self._metrics:
            raise KeyError(f"the study's headline metric '{self.spec.headline}' was never reported; "
                           f"call report.metrics({self.spec.headline}=...) before finalize()")
        notebook = notebooks_dir() / self.spec.notebook
        values = {k: v for k, v in self.cfg.items()}
        fingerprint = os.environ.get("LABKIT_FINGERPRINT") or (
            study_fingerprint(notebook, self.cfg.preset, values) if notebook.exists() else None)
        manifest = {
            "study": self.cfg.study, "title": self.title, "preset": self.cfg.preset,
            "params": values, "seeds": values.get("seeds"),
            "started_at": self.started_at, "wall_seconds": round(time.time() - self.started, 1),
            "git": git_state(), "device": device_info(), "packages": package_versions(),
            "fingerprint": fingerprint, "figures": self.figures, "tables": self.tables,
            "headline_table": self.headline_table, "headline_metric": self.spec.headline,
            "status": "ok",
        }
        atomic_write_text(self.path / "metrics.json", json.dumps(self._metrics, indent=2, sort_keys=True))
        atomic_write_text(self.path / "claims.json", json.dumps(list(self._claims.values()), indent=2))
        atomic_write_text(self.path / "manifest.json", json.dumps(_json_safe(manifest), indent=2))
        self.finalized = True
        if self.managed:
            return self.path
        publish_dir(self.path, self.final_path)
        self.path = self.final_path
        from labkit.reports.index import write_index

        write_index()
        return self.final_path
