"""``labkit reproduce``: run study notebooks with papermill and publish their reports atomically.

Each study runs in a staging folder; only a successful run replaces ``reports/<study>/``. A failing
study is reported and kept under ``reports/.failed/<study>/`` while the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from labkit.core.atomic import atomic_write_text, publish_dir, recover_dir
from labkit.core.errors import NotebookError, ParameterError
from labkit.core.fingerprint import study_fingerprint
from labkit.core.params import StudySpec, check_preset, list_specs, load_spec
from labkit.core.paths import notebooks_dir, reports_root


@dataclasses.dataclass
class RunResult:
    study: str
    status: str  # "ok", "failed", "skipped"
    seconds: float = 0.0
    headline: str = ""
    headline_value: float | None = None
    message: str = ""
    report: str = ""


def find_parameters_cell(notebook: Path) -> int:
    """Index of the cell tagged ``parameters``; a NotebookError names the file when there is none."""
    try:
        nb = json.loads(Path(notebook).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NotebookError(f"{notebook}: cannot read the notebook: {exc}") from exc
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise NotebookError(f"{notebook}: no code cell is tagged 'parameters', so papermill cannot set the preset")


def kernel_name() -> str:
    """The kit's own kernel when it is registered, else the environment's default Python kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "labkit" if "labkit" in KernelSpecManager().find_kernel_specs() else "python3"


def parse_overrides(pairs: list[tuple[str, str]] | None, specs: list[StudySpec]) -> dict[str, dict[str, Any]]:
    """Per study, the ``-p NAME VALUE`` overrides that apply to it, parsed and validated."""
    out: dict[str, dict[str, Any]] = {s.name: {} for s in specs}
    for name, text in pairs or []:
        owners = [s for s in specs if name in s.params]
        if not owners:
            raise ParameterError(f"no selected study has a parameter '{name}' "
                                 f"(see `labkit list` for each study's parameters)")
        for spec in owners:
            out[spec.name][name] = spec.params[name].parse_cli(text)
    return out


def plan(studies: list[str] | None, preset: str) -> list[StudySpec]:
    check_preset(preset)
    specs = [load_spec(name) for name in studies] if studies else list_specs()
    for spec in specs:
        notebook = notebooks_dir() / spec.notebook
        if not notebook.exists():
            raise NotebookError(f"study '{spec.name}': its notebook {notebook} does not exist")
        find_parameters_cell(notebook)
    return specs


def _previous_fingerprint(study: str) -> str | None:
    folder = reports_root() / study
    recover_dir(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest.get("fingerprint") if manifest.get("status") == "ok" else None


def _headline(spec: StudySpec, folder: Path) -> float | None:
    try:
        value = json.loads((folder / "metrics.json").read_text()).get(spec.headline)
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, (int, float)) else None


def export_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def run_study(name: str, preset: str, overrides: dict[str, Any], force: bool = False,
              progress: bool = True, kernel: str | None = None) -> RunResult:
    """Run one study notebook; never raises for a failing notebook (the result says so)."""
    import papermill

    spec = load_spec(name)
    notebook = notebooks_dir() / spec.notebook
    values = spec.resolve(preset, overrides).to_dict()
    values.pop("study"), values.pop("preset")
    fingerprint = study_fingerprint(notebook, preset, values)
    final = reports_root() / name
    if not force and _previous_fingerprint(name) == fingerprint:
        return RunResult(name, "skipped", headline=spec.headline, headline_value=_headline(spec, final),
                         message="parameters and code unchanged since the last good run (use --force)",
                         report=str(final))
    staging = reports_root() / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    output = staging / spec.notebook
    start = time.time()
    saved_env = {k: os.environ.get(k) for k in ("LABKIT_REPORT_DIR", "LABKIT_FINGERPRINT")}
    os.environ["LABKIT_REPORT_DIR"] = str(staging)
    os.environ["LABKIT_FINGERPRINT"] = fingerprint
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters={"preset": preset, **overrides},
            kernel_name=kernel or kernel_name(), cwd=str(notebook.parent), progress_bar=progress,
            log_output=False)
        if not (staging / "manifest.json").exists():
            raise NotebookError(f"{notebook} ran but never called report.finalize(): no manifest was written")
        export_html(output)
        manifest = json.loads((staging / "manifest.json").read_text())
        manifest["runner_wall_seconds"] = round(time.time() - start, 1)
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        publish_dir(staging, final)
        return RunResult(name, "ok", time.time() - start, spec.headline, _headline(spec, final), report=str(final))
    except Exception as exc:  # a failing study must not stop the others
        failed = reports_root() / ".failed" / name
        if failed.exists():
            shutil.rmtree(failed)
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, failed)
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        if not isinstance(exc, (papermill.PapermillExecutionError, NotebookError)):
            message += "\n" + traceback.format_exc(limit=3)
        return RunResult(name, "failed", time.time() - start, spec.headline,
                         message=f"{message} (executed notebook kept in {failed})", report=str(failed))
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def reproduce(studies: list[str] | None = None, preset: str = "default",
              overrides: list[tuple[str, str]] | None = None, jobs: int = 1, force: bool = False,
              progress: bool = True, log=print) -> list[RunResult]:
    """Run the selected studies (all, in notebook order, when none are named) and rebuild the index."""
    from labkit.reports.index import write_index

    specs = plan(studies, preset)
    per_study = parse_overrides(overrides, specs)
    results: list[RunResult] = []
    if jobs <= 1:
        for i, spec in enumerate(specs, 1):
            log(f"[{i}/{len(specs)}] {spec.name} ({spec.notebook}, preset {preset}) ...")
            result = run_study(spec.name, preset, per_study[spec.name], force, progress)
            log(f"[{i}/{len(specs)}] {spec.name}: {result.status} in {result.seconds:.0f} s")
            results.append(result)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_study, s.name, preset, per_study[s.name], force, False): s for s in specs}
            log(f"running {len(specs)} studies, {jobs} at a time ...")
            for future in as_completed(futures):
                result = future.result()
                log(f"{result.study}: {result.status} in {result.seconds:.0f} s")
                results.append(result)
        order = {s.name: i for i, s in enumerate(specs)}
        results.sort(key=lambda r: order[r.study])
    write_index()
    return results


def summary_table(results: list[RunResult]) -> str:
    from tabulate import tabulate

    rows = []
    for r in results:
        value = f"{r.headline_value:.3f}" if isinstance(r.headline_value, (int, float)) else "-"
        rows.append([r.study, r.status, f"{r.seconds:.0f} s", f"{r.headline} = {value}" if r.headline else "-"])
    text = tabulate(rows, headers=["study", "status", "wall time", "headline metric"], tablefmt="github")
    notes = [f"{r.study}: {r.message}" for r in results if r.message and r.status != "ok"]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `labkit` command")
