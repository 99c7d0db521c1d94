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
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.atomic import atomic_write_text
from labkit.core.claims import STATUSES as CLAIM_STATUSES
from labkit.core.claims import Claim, judge, verdicts_table
from labkit.core.fingerprint import study_fingerprint
from labkit.core.grid import grid_runs
from labkit.core.params import Config, load_spec
from labkit.core.paths import RUN_CHECKPOINTS, display_path, new_run_dir, notebooks_dir, repo_root

_VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "peft",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "scikit-image",
    "segmentation-models-pytorch",
    "umap-learn",
    "matplotlib",
    "papermill",
    "labkit",
)


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
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "notebooks"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.machine(),
    }
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


TABLE_CLASS = "labkit-table"  # the HTML class of a shown table (the notebook tests count them)


def _short_warning(message, category, filename, lineno, line=None) -> str:
    """A warning in a notebook as one short line: no kernel temp-file path, no echoed source line."""
    return f"{category.__name__}: {message}\n"


def _without_machine_paths(df: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """``df`` with absolute paths in its text cells made relative (the project, the run folder), ``~`` or
    ``$LABKIT_...``: a published table names no path of the machine it ran on."""
    from labkit.reports.html import path_replacements, scrub_paths

    text = [c for c in df.columns if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])]
    if not text:
        return df
    pairs = path_replacements(folder)
    out = df.copy()
    for c in text:
        out[c] = [scrub_paths(v, pairs) if isinstance(v, str) else v for v in out[c]]
    return out


class WholeTextFrame(pd.DataFrame):
    """A DataFrame that a notebook shows with every cell's text whole (a claim's statement and reason)."""

    @property
    def _constructor(self):
        return WholeTextFrame

    def _repr_html_(self):
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None):
            return super().__repr__()


def show_table(name: str, df: pd.DataFrame, index: bool = False, floatfmt: str = ".3f") -> None:
    """Display a table in a notebook under its name, every cell's text whole (pandas cuts cells at 50 characters
    by default, which hid every claim's reason)."""
    if not _in_notebook():
        return
    from IPython.display import display

    def fmt(x):
        return format(x, floatfmt)

    with pd.option_context("display.max_colwidth", None, "display.max_rows", 500, "display.max_columns", 100):
        body = df.to_html(index=index, float_format=fmt, border=0, na_rep="-")
        text = df.to_string(index=index, float_format=fmt, na_rep="-")
    html = f'<div class="{TABLE_CLASS}" data-table="{name}"><p><b>{name}</b></p>{body}</div>'
    display({"text/html": html, "text/plain": f"{name}\n{text}"}, raw=True)


class Report:
    """Collects one study run's outputs into its folder.

    Run by ``labkit reproduce``, the folder is the runner's (``LABKIT_REPORT_DIR``), which publishes it to
    ``reports/<study>/`` only for the published preset or ``--publish``. Run any other way (JupyterLab,
    papermill by hand), it is a fresh run folder ``runs/<study>/<time>-<preset>/``: ``reports/`` is never
    touched, and the notebook says where its outputs went.
    """

    def __init__(self, cfg: Config, title: str | None = None):
        self.cfg = cfg
        self.spec = load_spec(cfg.study)
        self.title = title or self.spec.title
        self.started = time.time()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        managed = os.environ.get("LABKIT_REPORT_DIR")
        self.managed = bool(managed)
        if managed:
            self.path = Path(managed)
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.path = new_run_dir(cfg.study, cfg.preset)
            if _in_notebook():  # named checkpoints this kernel produces stay in its run folder
                os.environ[RUN_CHECKPOINTS] = str(self.path / "checkpoints")
            print(
                f"This run writes its figures, tables and claims to {display_path(self.path)}/ "
                "(reports/ holds the published default run and is not touched)."
            )
        self.final_path = self.path
        self.figures: list[str] = []
        self.tables: list[str] = []
        self.headline_table: str | None = None
        self._metrics: dict[str, Any] = {}
        self._claims: dict[str, dict] = {}
        self.finalized = False
        if _in_notebook():
            warnings.formatwarning = _short_warning

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
        return None  # nothing for a notebook cell to echo; the file is self.path / f"{name}.png"

    def table(
        self, name: str, df: pd.DataFrame, headline: bool = False, floatfmt: str = ".3f", index: bool = False
    ) -> None:
        """Save ``df`` as ``<name>.csv`` and ``<name>.md`` and, in a notebook, show it where it is written (every
        table, not only a cell's last expression), its text in full."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"table '{name}' must be a pandas DataFrame, got {type(df).__name__}")
        df = _without_machine_paths(df, self.path)
        df.to_csv(self.path / f"{name}.csv", index=index)
        (self.path / f"{name}.md").write_text(df.to_markdown(index=index, floatfmt=floatfmt) + "\n")
        if name not in self.tables:
            self.tables.append(name)
        if headline or self.headline_table is None:
            self.headline_table = name
        show_table(name, df, index=index, floatfmt=floatfmt)

    def metrics(self, values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Merge numbers into ``metrics.json``."""
        self._metrics.update(_json_safe({**(values or {}), **more}))
        return dict(self._metrics)

    def claim(self, claim: Claim | dict, tables=None) -> dict:
        """Record one claim's verdict from the kit's claim judge (:mod:`labkit.core.claims`).

        ``claim``: a :class:`~labkit.core.claims.Claim` (judged here on ``tables``) or a verdict of
        :func:`~labkit.core.claims.judge`. Statuses, reasons and evidence come only from the judge.
        """
        if isinstance(claim, Claim):
            if tables is None and not claim.unavailable:
                raise ValueError(f"claim '{claim.id}': pass the tables it is judged on")
            verdict = judge(claim, tables if tables is not None else {})
        elif isinstance(claim, dict) and {"status", "reason", "rule", "comparisons", "preconditions"} <= set(claim):
            verdict = claim
        else:
            raise TypeError("report.claim takes a labkit.core.claims.Claim or a verdict from labkit.core.claims.judge")
        if verdict["status"] not in CLAIM_STATUSES:
            raise ValueError(f"claim '{verdict['id']}': status {verdict['status']!r} is not one of {CLAIM_STATUSES}")
        row = _json_safe(verdict)
        self._claims[row["id"]] = row
        return row

    def claims(self, claims, tables=None) -> pd.DataFrame:
        """Record several claims (see :meth:`claim`) and return the claims table."""
        for claim in claims:
            self.claim(claim, tables)
        return self.claims_table()

    def claims_table(self) -> pd.DataFrame:
        """One row per claim: status, statement, preconditions, reason and, when inconclusive, the seeds that would
        decide it (what the notebook shows, every reason whole)."""
        return WholeTextFrame(verdicts_table(list(self._claims.values())))

    def conclude(self, study, cfg, runs) -> pd.DataFrame:
        """The last cell of every study notebook: judge ``study.claims(cfg, runs)`` on ``runs.tables``, show and
        write the claims table, report ``study.headline(runs)``, and finalize. Returns the claims table."""
        verdicts = self.claims(study.claims(cfg, runs), tables=runs.tables)
        self.table("claims", verdicts)
        self.metrics(study.headline(runs))
        self.finalize()
        return verdicts

    # ---- publishing ----------------------------------------------------------------------------
    def finalize(self) -> Path:
        """Write metrics, claims and manifest; publish atomically (unless the runner does it)."""
        if self.spec.headline not in self._metrics:
            raise KeyError(
                f"the study's headline metric '{self.spec.headline}' was never reported; "
                f"call report.metrics({self.spec.headline}=...) before finalize()"
            )
        notebook = notebooks_dir() / self.spec.notebook
        values = {k: v for k, v in self.cfg.items()}
        fingerprint = os.environ.get("LABKIT_FINGERPRINT") or (
            study_fingerprint(notebook, self.cfg.preset, values) if notebook.exists() else None
        )
        manifest = {
            "study": self.cfg.study,
            "title": self.title,
            "preset": self.cfg.preset,
            "params": values,
            # kept for reproduction, left out of the README's settings: they mean nothing for this run's data
            "params_not_applying": list(getattr(self.cfg, "inapplicable", ())),
            "seeds": values.get("seeds"),
            "started_at": self.started_at,
            "wall_seconds": round(time.time() - self.started, 1),
            "git": git_state(),
            "device": device_info(),
            "packages": package_versions(),
            "fingerprint": fingerprint,
            "figures": self.figures,
            "tables": self.tables,
            "headline_table": self.headline_table,
            "headline_metric": self.spec.headline,
            "grids": grid_runs(since=self.started),
            "status": "ok",
        }
        atomic_write_text(self.path / "metrics.json", json.dumps(self._metrics, indent=2, sort_keys=True))
        atomic_write_text(self.path / "claims.json", json.dumps(list(self._claims.values()), indent=2))
        atomic_write_text(self.path / "manifest.json", json.dumps(_json_safe(manifest), indent=2))
        self.finalized = True
        if not self.managed:
            print(f"Run complete: {display_path(self.path)}/")
        return None
