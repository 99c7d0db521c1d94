"""``labkit reproduce`` and ``labkit sweep``: run study notebooks with papermill.

Only a run at the published preset (``default``), or one asked to with ``publish=True`` (``--publish``),
replaces ``reports/<study>/``: it runs in a staging folder that is swapped in only when it succeeds. Every
other run (another preset, ``--out DIR``, a sweep) writes to a run folder ``runs/<study>/<time>-<preset>/``.
A failing study is reported and kept under ``reports/.failed/<study>/`` (or its run folder) while the
others go on.

Publishing is safe when two runs of one study finish together: each publish holds the study's lock and swaps
the folders in one atomic step (:func:`labkit.core.atomic.publish_dir`). Every staging folder is locked by
its run; a run cleans up the staging folders of killed runs (older than itself and not locked). Paths printed
in the executed notebook (and so in its HTML export) are rewritten relative to the project, with the
staging folder shown as the folder it is published to.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from labkit.core.atomic import atomic_write_text, publish_dir, publish_lock, recover_dir
from labkit.core.errors import NotebookError, ParameterError
from labkit.core.fingerprint import study_fingerprint
from labkit.core.grid import grid_task
from labkit.core.params import StudySpec, check_preset, is_weights_name, list_specs, load_spec, weights_file_of
from labkit.core.paths import (
    PUBLISHED_PRESET,
    RUN_CHECKPOINTS,
    checkpoints_dir,
    display_path,
    new_run_dir,
    notebooks_dir,
    repo_root,
    reports_root,
)


@dataclasses.dataclass
class RunResult:
    study: str
    status: str  # "ok", "failed", "skipped"
    seconds: float = 0.0
    headline: str = ""
    headline_value: float | None = None
    message: str = ""
    report: str = ""
    detail: str = ""  # a failure's whole error message (the expected layout, every missing file), for the summary


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


_ipc_kernel_managers: dict[type, type] = {}


def kernel_manager_class(base: type | None = None) -> type | None:
    """A kernel manager (``base``, else papermill's async one) whose kernel talks over Unix sockets; None
    where the OS has none.

    Over TCP, jupyter_client picks each port by binding port 0 and releasing it before the kernel binds it,
    so two kernels starting at once (``--jobs 2``, or notebooks under pytest-xdist) can race for one port and
    one kernel dies with ``ZMQError: Address already in use``. A socket file in a folder of its own cannot
    collide; the folder is a short temporary one because a socket path is limited to about 100 characters.
    """
    if os.name != "posix":
        return None
    if base is None:
        from jupyter_client.manager import AsyncKernelManager as base
    if base not in _ipc_kernel_managers:
        import tempfile

        from traitlets import default

        class IpcKernelManager(base):
            @default("transport")
            def _transport_default(self) -> str:
                return "ipc"

            @default("ip")
            def _ip_default(self) -> str:
                return os.path.join(tempfile.mkdtemp(prefix="labkit-kernel-"), "ipc")

            async def _async_cleanup_resources(self, restart: bool = False) -> None:
                await super()._async_cleanup_resources(restart=restart)
                if not restart:
                    shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

        IpcKernelManager.__name__ = IpcKernelManager.__qualname__ = f"Ipc{base.__name__}"
        _ipc_kernel_managers[base] = IpcKernelManager
    return _ipc_kernel_managers[base]


def parse_overrides(pairs: list[tuple[str, str]] | None, specs: list[StudySpec]) -> dict[str, dict[str, Any]]:
    """Per study, the ``-p NAME VALUE`` overrides that apply to it, parsed and validated."""
    import difflib

    out: dict[str, dict[str, Any]] = {s.name: {} for s in specs}
    for name, text in pairs or []:
        owners = [s for s in specs if name in s.params]
        if not owners:
            known = sorted({p for s in specs for p in s.params})
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ParameterError(
                f"no selected study has a parameter '{name}'{hint} (see `labkit list` for each study's parameters)"
            )
        for spec in owners:
            out[spec.name][name] = absolute_weights(name, spec.params[name].parse_cli(text))
    return out


def absolute_weights(name: str, value: Any) -> Any:
    """A relative weights file path made absolute against the caller's folder (notebooks run elsewhere)."""
    file = weights_file_of(value) if is_weights_name(name) else None
    return str(file.resolve()) if file is not None and not file.is_absolute() else value


def explicit_nulls(overrides: dict[str, Any]) -> list[str]:
    """Names given as null on the command line: explicit nulls (see :mod:`labkit.core.params`)."""
    return [k for k, v in overrides.items() if v is None]


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
    if folder.with_name(f".{folder.name}.old").exists():
        with publish_lock(folder):
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


def fresh_out_folder(folder: Path, notebook: str) -> Path:
    """``--out DIR``'s study folder, emptied of a previous run, so a failed run never sits beside an earlier run's
    README and figures. Only a folder that holds a labkit run (its manifest or its notebook) or nothing is
    emptied; anything else is an error naming it."""
    if folder.is_file():
        raise ParameterError(f"--out: {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not ((folder / "manifest.json").exists() or (folder / notebook).exists()):
            raise ParameterError(
                f"--out: {folder} holds files that are not a labkit run of this study; choose another folder"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_study(
    name: str,
    preset: str,
    overrides: dict[str, Any],
    force: bool = False,
    progress: bool = True,
    kernel: str | None = None,
    publish: bool | None = None,
    out: str | Path | None = None,
) -> RunResult:
    """Run one study notebook; never raises for a failing notebook (the result says so).

    ``publish``: replace ``reports/<study>/`` (default: only at the published preset and without ``out``).
    Otherwise the run goes to ``out`` or a fresh ``runs/<study>/<time>-<preset>/``.
    """
    import papermill

    spec = load_spec(name)
    notebook = notebooks_dir() / spec.notebook
    values = spec.resolve(preset, overrides, nulls=explicit_nulls(overrides)).to_dict()
    values.pop("study"), values.pop("preset")
    if publish is None:
        publish = preset == PUBLISHED_PRESET and out is None
    fingerprint = study_fingerprint(notebook, preset, {**values, "consumes": consumed_checkpoints(spec)})
    final = reports_root() / name
    if publish and not force and _previous_fingerprint(name) == fingerprint:
        return RunResult(
            name,
            "skipped",
            headline=spec.headline,
            headline_value=_headline(spec, final),
            message="parameters and code unchanged since the last good run (use --force)",
            report=str(final),
        )
    staging_lock = None
    if publish:
        staging, staging_lock = _new_staging(name)
    elif out is not None:
        staging = fresh_out_folder(Path(out) / name, spec.notebook)
    else:
        staging = new_run_dir(name, preset)
    output = staging / spec.notebook
    manager = kernel_manager_class()
    start = time.time()
    saved_env = {
        k: os.environ.get(k) for k in ("LABKIT_REPORT_DIR", "LABKIT_FINGERPRINT", "LABKIT_HEADLESS", RUN_CHECKPOINTS)
    }
    if publish:  # a published run replaces the shared named checkpoints; any other writes its own
        os.environ.pop(RUN_CHECKPOINTS, None)
    else:
        os.environ[RUN_CHECKPOINTS] = str(staging / "checkpoints")
    os.environ["LABKIT_REPORT_DIR"] = str(staging)
    os.environ["LABKIT_FINGERPRINT"] = fingerprint
    os.environ["LABKIT_HEADLESS"] = "1"
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters={"preset": preset, **overrides},
            kernel_name=kernel or kernel_name(),
            cwd=str(notebook.parent),
            **({"kernel_manager_class": manager} if manager else {}),
            progress_bar=progress,
            log_output=False,
        )
        if not (staging / "manifest.json").exists():
            raise NotebookError(f"{notebook} ran but never called report.finalize(): no manifest was written")
        relativize_notebook_paths(output, staging, final if publish else staging)
        export_html(output)
        manifest = json.loads((staging / "manifest.json").read_text())
        manifest["runner_wall_seconds"] = round(time.time() - start, 1)
        manifest["published"] = bool(publish)
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        from labkit.reports.summary import write_study_readme

        write_study_readme(staging)  # again, with the runner's wall time (kernel start to export) now known
        if not publish:
            return RunResult(
                name, "ok", time.time() - start, spec.headline, _headline(spec, staging), report=display_path(staging)
            )
        publish_dir(staging, final)
        return RunResult(
            name, "ok", time.time() - start, spec.headline, _headline(spec, final), report=display_path(final)
        )
    except Exception as exc:  # a failing study must not stop the others
        message = path_rewriter(staging, staging if not publish else reports_root() / ".failed" / name)(
            error_summary(exc)
        )
        if not isinstance(exc, (papermill.PapermillExecutionError, NotebookError)):
            message += "\n" + traceback.format_exc(limit=3)
        if output.exists():
            try:
                relativize_notebook_paths(
                    output, staging, staging if not publish else reports_root() / ".failed" / name
                )
            except Exception:  # the notebook may be unreadable after a crash: keep it as it is
                pass
        detail = path_rewriter(staging, staging if not publish else reports_root() / ".failed" / name)(error_text(exc))
        if not publish:
            return RunResult(
                name,
                "failed",
                time.time() - start,
                spec.headline,
                message=f"{message} (executed notebook kept in {display_path(staging)})",
                report=display_path(staging),
                detail=detail,
            )
        failed = reports_root() / ".failed" / name
        if staging.is_dir():
            publish_dir(staging, failed)
        return RunResult(
            name,
            "failed",
            time.time() - start,
            spec.headline,
            message=f"{message} (executed notebook kept in {display_path(failed)})",
            report=display_path(failed),
            detail=detail,
        )
    finally:
        if staging_lock is not None:
            _release_staging(staging, staging_lock)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_FILE_SUFFIXES = (
    "safetensors",
    "pth",
    "pt",
    "bin",
    "ckpt",
    "tif",
    "tiff",
    "png",
    "jpg",
    "jpeg",
    "bmp",
    "nc",
    "h5",
    "hdf5",
    "npz",
    "npy",
    "json",
    "yaml",
    "yml",
    "csv",
    "txt",
    "ipynb",
    "zip",
    "tar",
    "gz",
    "raw",
    "img",
    "mat",
    "pkl",
    "lock",
)
_NAMES_A_FILE = re.compile(
    r"(?:^|[\s'\"(=:])(?:~|\.{1,2})?/[^\s'\"]+|"
    r"\b[\w\-]+\.(?:" + "|".join(_FILE_SUFFIXES) + r")\b",
    re.IGNORECASE,
)
SUMMARY_LIMIT = 400


def names_a_file(line: str) -> bool:
    return bool(_NAMES_A_FILE.search(line))


def _error_parts(exc: BaseException) -> tuple[str, str]:
    """The error's type and message; for an error raised inside the notebook (papermill's
    ``PapermillExecutionError``), the notebook's, not papermill's."""
    evalue = getattr(exc, "evalue", None)
    return getattr(exc, "ename", None) or type(exc).__name__, str(evalue if evalue is not None else exc).strip()


def error_text(exc: BaseException) -> str:
    """The whole error message, every line of it."""
    ename, text = _error_parts(exc)
    return f"{ename}: {text}" if text else ename


def error_summary(exc: BaseException, limit: int = SUMMARY_LIMIT) -> str:
    """One line for the run summary: the error's type, its first line, and the first line naming a file."""
    ename, text = _error_parts(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    summary = f"{ename}: {first}" if first else ename
    if first and not names_a_file(first):
        named = next((line for line in lines[1:] if names_a_file(line)), None)
        if named:
            summary += f" [{named}]"
    if len(summary) > limit:
        summary = summary[: limit - 3] + "..."
    return summary


# ----------------------------------------------------------------------------- staging folders


#: A staging folder (or lock file) younger than this is never taken for a killed run's.
STALE_STAGING_AGE_S = 60.0


def _new_staging(name: str):
    """A fresh, locked ``reports/.staging/<study>-<id>/``; first removes stale staging folders of killed runs."""
    from filelock import FileLock

    root = reports_root() / ".staging"
    root.mkdir(parents=True, exist_ok=True)
    # only what is older than a minute: another run's lock file exists a moment before that run holds it, and a
    # cleaner that took it in that moment would fail the run (seen with two runs starting together)
    clean_stale_staging(root, before=time.time() - STALE_STAGING_AGE_S)
    staging = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    lock = FileLock(str(staging) + ".lock", timeout=30)
    lock.acquire()  # held for the whole run, so no other run takes this folder for stale
    staging.mkdir()
    return staging, lock


def _release_staging(staging: Path, lock) -> None:
    shutil.rmtree(staging, ignore_errors=True)  # empty after a publish; gone when it moved to .failed/
    lock.release()
    try:
        os.unlink(lock.lock_file)
    except OSError:
        pass


def clean_stale_staging(root: Path, before: float) -> list[Path]:
    """Remove staging folders (and lock files) of killed runs: modified before ``before`` and not locked.

    A live run holds its folder's lock (``<folder>.lock``) from before it creates the folder until it is done,
    so a folder whose lock can be taken at once belongs to no running process. Returns what was removed.
    """
    from filelock import FileLock, Timeout

    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        folder = entry.with_suffix("") if entry.suffix == ".lock" else entry
        if entry.suffix == ".lock" and folder.exists():
            continue  # handled with its folder
        try:
            if entry.stat().st_mtime >= before:
                continue
        except OSError:
            continue
        lock = FileLock(str(folder) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # a running process holds it
        try:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        finally:
            lock.release()
            try:
                os.unlink(str(folder) + ".lock")
            except OSError:
                pass
    return removed


# ----------------------------------------------------------------------------- printed paths


def path_rewriter(staging: Path, shown_as: Path):
    """A function rewriting text so that ``staging`` reads as ``shown_as`` (the folder it is published to)
    and the project root, the home folder and the Python environment disappear from the paths in it."""
    root = repo_root()
    pairs = []
    for src, dst in (
        (staging, display_path(shown_as)),
        (root, "."),
        (Path(sys.prefix), "$PYTHON_PREFIX"),
        (Path.home(), "~"),
    ):
        for form in dict.fromkeys([str(Path(src)), str(Path(src).resolve())]):
            if form not in ("/", "."):
                pairs.append((form, dst))
    if not Path(display_path(staging)).is_absolute():  # staging printed relative to the project already
        pairs.append((display_path(staging), display_path(shown_as)))
    pairs.sort(key=lambda pair: -len(pair[0]))  # the longest prefix first (staging lies inside the root)

    def fix(text: str) -> str:
        for form, dst in pairs:
            text = text.replace(form + "/", "" if dst == "." else dst + "/").replace(form, dst)
        return text

    return fix


def relativize_notebook_paths(notebook: Path, staging: Path, shown_as: Path) -> None:
    """Rewrite the paths printed in an executed notebook (see :func:`path_rewriter`), so the notebook and its
    HTML export carry neither staging folders (deleted at publish) nor a developer's absolute paths."""
    import nbformat

    fix = path_rewriter(staging, shown_as)
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"])
            if "traceback" in out:
                out["traceback"] = [fix(line) for line in out["traceback"]]
            if "evalue" in out:
                out["evalue"] = fix(out["evalue"])
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in out.get("data", {}):
                    value = out["data"][mime]
                    out["data"][mime] = [fix(v) for v in value] if isinstance(value, list) else fix(value)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path", "cwd"):
        if isinstance(meta.get(key), str):
            meta[key] = fix(meta[key])
    buffer = nbformat.writes(nb)
    atomic_write_text(notebook, buffer)


def study_plan(name: str, preset: str, overrides: dict, allow_degenerate: bool = False):
    """``(plans, warnings)`` of one study: its ``plan(cfg)``, the degenerate budgets and far-off settings."""
    import importlib

    from labkit.core.params import load_spec
    from labkit.core.plan import check_budgets, far_from_reference

    spec = load_spec(name)
    cfg = spec.resolve(preset, overrides, nulls=explicit_nulls(overrides))
    module = importlib.import_module(f"labkit.studies.{spec.name}")
    plans = module.plan(cfg)
    warnings = check_budgets(plans, allow_degenerate=allow_degenerate)
    return plans, warnings + far_from_reference(cfg, getattr(module, "REFERENCE", None))


def reproduce(
    studies: list[str] | None = None,
    preset: str = "default",
    overrides: list[tuple[str, str]] | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    log=print,
    publish: bool | None = None,
    out: str | Path | None = None,
) -> list[RunResult]:
    """Run the selected studies (all, in notebook order, when none are named); rebuild the index when
    something was published."""
    from labkit.reports.index import write_index

    specs = plan(studies, preset)
    per_study = parse_overrides(overrides, specs)
    for spec in specs:  # every value checked before any study runs
        spec.resolve(preset, per_study[spec.name], nulls=explicit_nulls(per_study[spec.name]))
    for spec in specs:  # what each grid will cost, before any work; a failing plan only warns
        try:
            plans, _ = study_plan(spec.name, preset, per_study[spec.name], allow_degenerate=True)
            for line in plans:
                log(f"plan: {line.summary()}")
        except Exception as exc:  # noqa: BLE001
            log(f"warning: could not plan {spec.name}: {type(exc).__name__}: {exc}")
    will_publish = (preset == PUBLISHED_PRESET and out is None) if publish is None else publish
    if out is not None:
        if Path(out).is_file():
            raise ParameterError(f"--out {out} is a file; give a folder (each study's run goes to DIR/<study>/)")
        for spec in specs:
            folder = Path(out) / spec.name
            if not will_publish and folder.is_dir() and any(folder.iterdir()):
                if not ((folder / "manifest.json").exists() or (folder / spec.notebook).exists()):
                    raise ParameterError(
                        f"--out: {folder} holds files that are not a labkit run of {spec.name}; choose another folder"
                    )
                log(f"--out: the previous run in {display_path(folder)}/ is replaced by this one")
    if not will_publish:
        # say the reason that applies: --out never publishes; otherwise it is the preset
        why = (
            "--out never publishes reports/"
            if out is not None
            else f"reports/ is published only from the {PUBLISHED_PRESET} preset, or with --publish"
        )
        log(f"preset {preset}: writing to run folders under {display_path(out) if out else 'runs/'} ({why})")
    results: list[RunResult] = []
    if jobs <= 1:
        for i, spec in enumerate(specs, 1):
            log(f"[{i}/{len(specs)}] {spec.name} ({spec.notebook}, preset {preset}) ...")
            result = run_study(spec.name, preset, per_study[spec.name], force, progress, publish=publish, out=out)
            log(f"[{i}/{len(specs)}] {spec.name}: {result.status} in {result.seconds:.0f} s -> {result.report}")
            results.append(result)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(run_study, s.name, preset, per_study[s.name], force, False, None, publish, out): s
                for s in specs
            }
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


@grid_task("sweep/point")
def sweep_point(
    study: str, preset: str, overrides: dict[str, Any], folder: str, labkit_digest: str, notebook_digest: str
) -> dict[str, Any]:
    """One point of a sweep (a grid task): run the notebook into ``folder``; return its metrics and claims."""
    result = run_study(study, preset, overrides, progress=False, publish=False, out=folder)
    point = Path(folder) / study
    record: dict[str, Any] = {
        "status": result.status,
        "seconds": result.seconds,
        "folder": str(point),
        "message": result.message,
    }
    try:
        record["metrics"] = json.loads((point / "metrics.json").read_text())
        record["claims"] = {c["id"]: c["status"] for c in json.loads((point / "claims.json").read_text())}
    except (OSError, json.JSONDecodeError):
        record["metrics"], record["claims"] = {}, {}
    return record


def sweep(
    study: str,
    axes: dict[str, list[Any]],
    preset: str = "default",
    fixed: dict[str, Any] | None = None,
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
    log=print,
) -> tuple[Path, Any]:
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
    # What every point's result depends on beyond its parameters: hashed once, not once per point.
    code = {
        "labkit_digest": package_digest(),
        "notebook_digest": notebook_source_digest(notebooks_dir() / spec.notebook),
    }
    names = list(axes)
    points = []
    for combo in itertools.product(*axes.values()):
        overrides = {**(fixed or {}), **dict(zip(names, combo))}
        spec.resolve(preset, overrides, nulls=explicit_nulls(overrides))  # every point validated before any runs
        label = "-".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in zip(names, combo))
        folder = base / "".join(ch if ch.isalnum() or ch in "=-_.," else "_" for ch in label)
        points.append(dict(zip(names, combo)))
        grid.add(study=study, preset=preset, overrides=overrides, folder=str(folder), **code)
    log(f"sweep of {study}: {len(grid)} points into {display_path(base)}/")
    result = grid.run(executor=executor, workers=workers, scheduler=scheduler, threads=None)
    rows = []
    for point, record in zip(points, result.records):
        row = {
            **{k: json.dumps(v) if isinstance(v, list) else v for k, v in point.items()},
            "status": record["status"],
            spec.headline: record["metrics"].get(spec.headline),
            "seconds": round(record["seconds"], 1),
        }
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
    first = next((r for r in results if r.status == "failed" and r.detail), None)
    if first is not None and first.detail.strip() != first.message.split(" (executed notebook")[0].strip():
        notes.append(f"\n{first.study} failed with:\n{first.detail}")  # the whole message: it says what to fix
    return text + ("\n\n" + "\n".join(notes) if notes else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `labkit` command")
