"""``labkit reproduce`` and ``labkit sweep``: run study notebooks with papermill.

Only a run at the published preset (``default``), or one asked to with ``publish=True`` (``--publish``),
replaces ``reports/<study>/``: it runs in a staging folder that is swapped in only when it succeeds. Every
other run (another preset, ``--out DIR``, a sweep) writes to a run folder ``runs/<study>/<time>-<preset>/``.
A failing study is reported and kept under ``reports/.failed/<study>/`` (or its run folder) while the
others go on.
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
from labkit.core.paths import PUBLISHED_PRESET, checkpoints_dir, display_path, new_run_dir, notebooks_dir, reports_root


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
    """The executed notebook's HTML report view (no code, no stderr, no absolute paths) beside it, and the
    folder's ``README.md`` (what was run, the main figure, the claims), both before the folder is published."""
    from labkit.reports.html import export_report_html
    from labkit.reports.summary import write_study_readme

    target = export_report_html(notebook)
    if (Path(notebook).parent / "manifest.json").exists():
        write_study_readme(Path(notebook).parent)
    return target


def consumed_checkpoints(spec: StudySpec) -> dict[str, str]:
    """Digest of every named checkpoint the study consumes (``"missing"`` when not produced yet)."""
    from labkit.core.grid import file_digest

    return {name: file_digest(checkpoints_dir() / f"{name}.safetensors") for name in spec.consumes}


def run_study(name: str, preset: str, overrides: dict[str, Any], force: bool = False,
              progress: bool = True, kernel: str | None = None, publish: bool | None = None,
              out: str | Path | None = None) -> RunResult:
    """Run one study notebook; never raises for a failing notebook (the result says so).

    ``publish``: replace ``reports/<study>/`` (default: only at the published preset and without ``out``).
    Otherwise the run goes to ``out`` or a fresh ``runs/<study>/<time>-<preset>/``.
    """
    import papermill

    spec = load_spec(name)
    notebook = notebooks_dir() / spec.notebook
    values = spec.resolve(preset, overrides).to_dict()
    values.pop("study"), values.pop("preset")
    if publish is None:
        publish = preset == PUBLISHED_PRESET and out is None
    fingerprint = study_fingerprint(notebook, preset, {**values, "consumes": consumed_checkpoints(spec)})
    final = reports_root() / name
    if publish and not force and _previous_fingerprint(name) == fingerprint:
        return RunResult(name, "skipped", headline=spec.headline, headline_value=_headline(spec, final),
                         message="parameters and code unchanged since the last good run (use --force)",
                         report=str(final))
    if publish:
        staging = reports_root() / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
    elif out is not None:
        staging = Path(out) / name
        staging.mkdir(parents=True, exist_ok=True)
    else:
        staging = new_run_dir(name, preset)
    output = staging / spec.notebook
    start = time.time()
    saved_env = {k: os.environ.get(k) for k in ("LABKIT_REPORT_DIR", "LABKIT_FINGERPRINT", "LABKIT_HEADLESS")}
    os.environ["LABKIT_REPORT_DIR"] = str(staging)
    os.environ["LABKIT_FINGERPRINT"] = fingerprint
    os.environ["LABKIT_HEADLESS"] = "1"
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
        manifest["published"] = bool(publish)
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        if not publish:
            return RunResult(name, "ok", time.time() - start, spec.headline, _headline(spec, staging),
                             report=display_path(staging))
        publish_dir(staging, final)
        return RunResult(name, "ok", time.time() - start, spec.headline, _headline(spec, final),
                         report=display_path(final))
    except Exception as exc:  # a failing study must not stop the others
        if not publish:
            return RunResult(name, "failed", time.time() - start, spec.headline,
                             message=f"{type(exc).__name__}: {_first_line(exc)} (executed notebook kept in "
                                     f"{display_path(staging)})", report=display_path(staging))
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def reproduce(studies: list[str] | None = None, preset: str = "default",
              overrides: list[tuple[str, str]] | None = None, jobs: int = 1, force: bool = False,
              progress: bool = True, log=print, publish: bool | None = None,
              out: str | Path | None = None) -> list[RunResult]:
    """Run the selected studies (all, in notebook order, when none are named); rebuild the index when
    something was published."""
    from labkit.reports.index import write_index

    specs = plan(studies, preset)
    per_study = parse_overrides(overrides, specs)
    will_publish = (preset == PUBLISHED_PRESET and out is None) if publish is None else publish
    if not will_publish:
        log(f"preset {preset}: writing to run folders under {display_path(out) if out else 'runs/'} "
            "(reports/ is published only from the default preset, or with --publish)")
    results: list[RunResult] = []
    if jobs <= 1:
        for i, spec in enumerate(specs, 1):
            log(f"[{i}/{len(specs)}] {spec.name} ({spec.notebook}, preset {preset}) ...")
            result = run_study(spec.name, preset, per_study[spec.name], force, progress, publish=publish, out=out)
            log(f"[{i}/{len(specs)}] {spec.name}: {result.status} in {result.seconds:.0f} s -> {result.report}")
            results.append(result)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_study, s.name, preset, per_study[s.name], force, False, None, publish, out): s
                       for s in specs}
            log(f"running {len(specs)} studies, {jobs} at a time ...")
            for future in as_completed(futures):
                result = future.result()
                log(f"{result.study}: {result.status} in {result.seconds:.0f} s")
                results.append(result)
        order = {s.name: i for i, s in enumerate(specs)}
        results.sort(key=lambda r: order[r.study])
    if will_publish and any(r.status == "ok" for r in results):
        write_index()
    return results


# ----------------------------------------------------------------------------- sweeps


def sweep_point(study: str, preset: str, overrides: dict[str, Any], folder: str, labkit_digest: str,
                notebook_digest: str) -> dict[str, Any]:
    """One point of a sweep (a grid task): run the notebook into ``folder``; return its metrics and claims."""
    result = run_study(study, preset, overrides, progress=False, publish=False, out=folder)
    point = Path(folder) / study
    record: dict[str, Any] = {"status": result.status, "seconds": result.seconds, "folder": str(point),
                              "message": result.message}
    try:
        record["metrics"] = json.loads((point / "metrics.json").read_text())
        record["claims"] = {c["id"]: c["status"] for c in json.loads((point / "claims.json").read_text())}
    except (OSError, json.JSONDecodeError):
        record["metrics"], record["claims"] = {}, {}
    return record


def sweep(study: str, axes: dict[str, list[Any]], preset: str = "default",
          fixed: dict[str, Any] | None = None, executor: str = "serial", workers: int | None = None,
          scheduler: str | None = None, log=print) -> tuple[Path, Any]:
    """Run the product of ``axes`` (parameter -> values) as one grid of notebook runs into a run folder and
    write ``sweep.csv``/``sweep.md`` comparing the points (headline metric and claim statuses)."""
    import itertools

    import pandas as pd

    from labkit.core.fingerprint import notebook_source_digest, package_digest
    from labkit.core.grid import Grid

    spec = load_spec(study)
    for name, values in axes.items():
        if name not in spec.params:
            raise ParameterError(f"study '{study}' has no parameter '{name}' to sweep")
        if not isinstance(values, list) or not values:
            raise ParameterError(f"sweep values of '{name}' must be a non-empty list, e.g. '[1, 2]'")
        for value in values:
            spec.params[name].validate(value, f" of study '{study}' (sweep)")
    base = new_run_dir(study, preset, "sweep")
    grid = Grid(f"sweep-{study}", sweep_point)
    names = list(axes)
    points = []
    for combo in itertools.product(*axes.values()):
        overrides = {**(fixed or {}), **dict(zip(names, combo))}
        spec.resolve(preset, overrides)  # every point validated before any runs
        label = "-".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in zip(names, combo))
        folder = base / "".join(ch if ch.isalnum() or ch in "=-_.," else "_" for ch in label)
        points.append(dict(zip(names, combo)))
        grid.add(study=study, preset=preset, overrides=overrides, folder=str(folder),
                 labkit_digest=package_digest(), notebook_digest=notebook_source_digest(notebooks_dir() / spec.notebook))
    log(f"sweep of {study}: {len(grid)} points into {display_path(base)}/")
    result = grid.run(executor=executor, workers=workers, scheduler=scheduler, threads=None)
    rows = []
    for point, record in zip(points, result.records):
        row = {**{k: json.dumps(v) if isinstance(v, list) else v for k, v in point.items()},
               "status": record["status"], spec.headline: record["metrics"].get(spec.headline),
               "seconds": round(record["seconds"], 1)}
        row.update({f"claim {cid}": status for cid, status in record["claims"].items()})
        row["folder"] = display_path(record["folder"])
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(base / "sweep.csv", table.to_csv(index=False))
    atomic_write_text(base / "sweep.md", table.to_markdown(index=False) + "\n")
    return base, table


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
