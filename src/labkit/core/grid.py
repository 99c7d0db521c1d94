"""A study's runs as a grid of cached tasks that resume after a crash and scale out on an existing engine.

A task is one call ``fn(**params) -> record`` of a module-level function (named ``"module:function"`` so a
worker process or a Dask worker can import it). Records are dicts of numbers, strings, lists, dicts and
NumPy arrays; each is cached on disk under a fingerprint of the function, its parameters, the source of
the labkit modules it imports (found by reading their imports) and the digests of its inputs (data files,
consumed checkpoints). Rerun after a kill or a failure, a grid computes only its missing tasks; a changed
parameter reruns only the tasks whose parameters changed.

Executors (the ``executor`` parameter of every study, ``labkit reproduce --executor``):

- ``serial``: in this process, one task after another;
- ``processes``: a local process pool (``concurrent.futures``), one worker per core, one torch thread each;
- ``dask``: ``dask.distributed``: a scheduler address (``scheduler="tcp://host:8786"`` or
  ``LABKIT_DASK_SCHEDULER``), ``scheduler="slurm"`` / ``"pbs"`` for a dask-jobqueue cluster configured in
  the user's dask config (``~/.config/dask/jobqueue.yaml``), or, with no scheduler, a ``LocalCluster``.

Only the process that runs the grid writes the cache, so a cluster needs no shared filesystem. No
scheduling is done here: retries and placement are the engine's. The grid only hands the engine its missing
tasks longest first (as a submission order and a Dask priority), estimating each from the cached records of
the tasks most like it, so that a rerun after a crash does not end on one long task with the other workers idle.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from labkit.core.atomic import atomic_write_bytes
from labkit.core.errors import LabkitError, ParameterError

EXECUTORS = ("serial", "processes", "dask")
RECORD_FORMAT = 1


class GridError(LabkitError):
    """A grid could not run: a bad executor, an unreachable scheduler, an unwritable cache, a failed task."""


# ----------------------------------------------------------------------------- fingerprints


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@cache
def _labkit_imports(module: str) -> tuple[str, ...]:
    """The labkit modules ``module`` imports (directly), read from its source without importing it."""
    path = _module_file(module)
    if path is None:
        return ()
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("labkit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not base.startswith("labkit"):
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return tuple(sorted(found))


@cache
def code_modules(module: str) -> tuple[str, ...]:
    """``module`` and every labkit module it reaches through its imports: the code a task's fingerprint covers."""
    seen, stack = set(), [module]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(_labkit_imports(name))
    return tuple(sorted(seen))


@cache
def code_digest(module: str) -> str:
    """Digest of the source of ``code_modules(module)``."""
    digest = hashlib.sha256()
    for name in code_modules(module):
        path = _module_file(name)
        if path is not None:
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """Digest of a file's bytes (or of every file under a folder), or ``"missing"``."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode())
            digest.update(file_digest(item).encode())
        return digest.hexdigest()
    return "missing"


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _without_locations(value: Any) -> Any:
    """Absolute paths left out: where the cache, a checkpoint or the data sit is not part of what a task computes
    (a file's content enters through its digest, in ``inputs`` or a parameter), so it must not move the task's
    random draws. Not even the file name: files in the cache are named by fingerprints, which hold paths."""
    if isinstance(value, dict):
        return {k: _without_locations(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_locations(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return "<path>"
    return value


TASK_ID_ATTRIBUTE = "grid_task_id"


def grid_task(task_id: str) -> Callable[[Callable], Callable]:
    """Give a module-level grid task its stable identity, e.g. ``@grid_task("sar_transfer/run")``.

    A task's random draws and its cache entry are keyed by this id, never by the module or name the function
    has today: moving a task to another module (or renaming it) keeps its id, so it draws the same random numbers
    and computes the same records. Change the id only when the task's meaning changes."""
    if not task_id or not isinstance(task_id, str) or ":" in task_id:
        raise GridError(f"grid task id must be a non-empty string without ':', got {task_id!r}")

    def mark(fn: Callable) -> Callable:
        setattr(fn, TASK_ID_ATTRIBUTE, task_id)
        return fn

    return mark


def task_id_of(fn: str | Callable) -> str:
    """The stable id ``@grid_task`` gave ``fn`` (a function or its ``"module:function"`` name)."""
    function = resolve_function(fn) if isinstance(fn, str) else fn
    task_id = getattr(function, TASK_ID_ATTRIBUTE, None)
    if not task_id:
        name = fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"
        raise GridError(
            f"grid task {name} has no stable id: decorate it with @grid_task('<study>/<task>') "
            "(labkit.core.grid.grid_task), so that its random draws and records do not depend on where it lives"
        )
    return task_id


@dataclasses.dataclass(frozen=True)
class Task:
    """One call of the grid's function: its parameters, a readable key, and its input digests. ``task_id`` is the
    function's stable id (read from its ``@grid_task`` mark when not given)."""

    fn: str
    params: Mapping[str, Any]
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    task_id: str = ""

    def __post_init__(self):
        if not self.task_id:
            object.__setattr__(self, "task_id", task_id_of(self.fn))

    @property
    def key(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())

    def fingerprint(self) -> str:
        """The cache key: the task's id, parameters, inputs and the code of its module (and the labkit modules
        it imports), so an edit to that code recomputes it."""
        module = self.fn.split(":")[0]
        payload = json.dumps(
            {
                "task": self.task_id,
                "params": _canonical(dict(self.params)),
                "inputs": _canonical(dict(self.inputs)),
                "code": code_digest(module),
                "format": RECORD_FORMAT,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def rng_seed(self) -> int:
        """The task's RNG seed: from its stable id, parameters and inputs; not the code, so that a change to the
        code that leaves the task's arithmetic alone (a refactor, a move to another module) draws the same random
        numbers; nor the folders its files live in (a clone elsewhere, another ``LABKIT_CACHE``): absolute paths
        do not count."""
        params = _without_locations(_canonical(dict(self.params)))
        payload = json.dumps(
            {"task": self.task_id, "params": params, "inputs": _canonical(dict(self.inputs))},
            sort_keys=True,
            default=str,
        )
        return int(hashlib.sha256(payload.encode()).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------- records on disk


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return _encode(value.detach().cpu().numpy(), arrays)
    if isinstance(value, Mapping):
        return {str(k): _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a grid record may hold numbers, strings, lists, dicts and arrays, not {type(value).__name__}")


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def dump_record(record: Mapping[str, Any]) -> bytes:
    """A record as bytes: a JSON header line, then an ``.npz`` of its arrays; never a pickle."""
    arrays: dict[str, np.ndarray] = {}
    body = _encode(dict(record), arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    header = json.dumps({"record": body, "arrays_sha256": hashlib.sha256(blob).hexdigest()}, allow_nan=False)
    return header.encode() + b"\n" + blob


def load_record(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`dump_record`; raises ValueError on a truncated or altered record."""
    head, sep, blob = data.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    header = json.loads(head)
    if hashlib.sha256(blob).hexdigest() != header["arrays_sha256"]:
        raise ValueError("array payload does not match its checksum")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _decode(header["record"], arrays)


class RecordCache:
    """Records under ``<folder>/<fingerprint>.rec``; a corrupted one is recomputed with a warning."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GridError(
                f"grid cache folder {self.folder} cannot be created ({exc.strerror}); "
                "set LABKIT_CACHE to a writable folder"
            ) from exc
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise GridError(f"grid cache folder {self.folder} is not writable; set LABKIT_CACHE to a writable folder")

    def path(self, fingerprint: str) -> Path:
        return self.folder / f"{fingerprint}.rec"

    def get(self, task: Task, fingerprint: str) -> dict | None:
        path = self.path(fingerprint)
        if not path.exists():
            return None
        try:
            return load_record(path.read_bytes())
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
            warnings.warn(
                f"cached record {path} for task ({task.key}) is corrupted ({exc}); recomputing it", stacklevel=3
            )
            return None

    def put(self, fingerprint: str, record: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.path(fingerprint), dump_record(record))


# ----------------------------------------------------------------------------- longest first


def estimated_seconds(tasks: Sequence[Task], records: Sequence[Mapping[str, Any] | None]) -> list[float | None]:
    """For each task without a record, the median ``task_seconds`` of the cached records of the tasks that share
    the most parameter values with it (the same arm and size on another seed, typically); None for a cached
    task, or when no cached record says how long it took."""
    values = [{k: json.dumps(_canonical(v), sort_keys=True, default=str) for k, v in t.params.items()} for t in tasks]
    timed = [
        (values[j], float(r["task_seconds"]))
        for j, r in enumerate(records)
        if r is not None and isinstance(r.get("task_seconds"), (int, float))
    ]
    estimates: list[float | None] = [None] * len(tasks)
    if not timed:
        return estimates
    for i, record in enumerate(records):
        if record is not None:
            continue
        shared = [sum(other.get(k) == v for k, v in values[i].items()) for other, _ in timed]
        best = max(shared)
        estimates[i] = float(np.median([seconds for n, (_, seconds) in zip(shared, timed) if n == best]))
    return estimates


def longest_first(todo: Sequence[int], estimates: Sequence[float | None]) -> list[int]:
    """``todo`` reordered by estimated time, longest first; tasks with no estimate go first, in their order (they
    may be long), and ties keep the grid's order."""
    return sorted(todo, key=lambda i: (estimates[i] is not None, -(estimates[i] or 0.0)))


# ----------------------------------------------------------------------------- running one task


def resolve_function(fn: str) -> Callable[..., Mapping[str, Any]]:
    module, _, name = fn.partition(":")
    if not name:
        raise GridError(f"task function {fn!r} must be named 'module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise GridError(f"task function {fn!r} cannot be imported: {exc}") from exc


def run_task(fn: str, params: Mapping[str, Any], threads: int | None, seed: int) -> dict[str, Any]:
    """Run one task in this process (a worker's entry point): fixed torch threads and a fixed RNG state."""
    import random

    import torch

    if threads:
        torch.set_num_threads(int(threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    started = time.perf_counter()
    record = dict(resolve_function(fn)(**params))
    record.setdefault("task_seconds", time.perf_counter() - started)
    return record


def _worker_init():  # one torch thread per process-pool worker, set before any task
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


# ----------------------------------------------------------------------------- progress


def _interactive_widgets() -> bool:
    """A widget progress bar only in a live Jupyter frontend (not papermill, not a terminal)."""
    from labkit.core.progress import headless

    if headless():
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or "IPKernelApp" not in shell.config:
            return False
        import ipywidgets  # noqa: F401

        return True
    except ImportError:
        return False


class _Progress:
    """A tqdm widget in JupyterLab; in papermill and terminals one summary line at the end."""

    def __init__(self, name: str, total: int, cached: int, enabled: bool):
        self.name, self.total, self.done, self.cached = name, total, cached, cached
        self.started = time.time()
        self.enabled = enabled
        self.bar = None
        if enabled and _interactive_widgets():
            from tqdm.notebook import tqdm

            self.bar = tqdm(total=total, initial=cached, desc=name, unit="task")

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self, failed: int) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            seconds = time.time() - self.started
            failed_text = f", {failed} failed" if failed else ""
            print(
                f"grid {self.name}: {self.done - failed} of {self.total} tasks done ({self.cached} from cache"
                f"{failed_text}) in {seconds:.0f} s",
                flush=True,
            )


# ----------------------------------------------------------------------------- executors


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _quiet_profiler(client) -> None:
    """Stop the statistical profiler on the workers of a cluster labkit started.

    A Dask worker samples every thread's Python stack each 10 ms (``distributed.worker.profile``); on a
    training loop of many small torch ops that costs 20-70 % of the task's time (measured here on 2 cores,
    ``benchmarks/bench_grid.py``). A worker plugin reaches workers that join later too (dask-jobqueue).
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietProfiler(WorkerPlugin):
        name = "labkit-quiet-profiler"

        def setup(self, worker):
            for key in ("profile", "profile-cycle"):
                callback = worker.periodic_callbacks.pop(key, None)
                if callback is not None:
                    callback.stop()

    client.register_plugin(QuietProfiler())


def _local_cluster(cluster_cls, n_workers: int):
    """A LocalCluster of single-thread worker processes, without Dask's malloc setting, leaving os.environ as it was.

    Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it at all switches off glibc's
    adaptive mmap threshold, so every tensor above 128 KiB is mapped and unmapped afresh: 17x the page faults and
    1.5x the time of the same torch task in a process-pool worker (measured here). The nanny also writes its
    variables into this process's environment, from where later process-pool workers would inherit them.
    """
    import dask

    saved = dict(os.environ)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            return cluster_cls(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def dask_client(scheduler: str | None, workers: int | None):
    """A dask.distributed Client: an address, a dask-jobqueue cluster ('slurm', 'pbs'), or a LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a dependency of the kit
        raise GridError("executor 'dask' needs dask.distributed (pip install 'distributed')") from exc
    scheduler = scheduler or os.environ.get("LABKIT_DASK_SCHEDULER") or None
    if scheduler in ("slurm", "pbs"):
        try:
            import dask_jobqueue
        except ImportError as exc:
            raise GridError(f"scheduler '{scheduler}' needs dask-jobqueue (pip install dask-jobqueue)") from exc
        cluster_cls = dask_jobqueue.SLURMCluster if scheduler == "slurm" else dask_jobqueue.PBSCluster
        cluster = cluster_cls()  # queue, cores, memory, walltime: from the user's dask config (jobqueue.yaml)
        cluster.scale(jobs=workers or 1)
        client = Client(cluster)
        _quiet_profiler(client)
        return client, cluster
    if scheduler:
        if "://" not in scheduler:
            raise GridError(f"scheduler {scheduler!r} is not an address like tcp://host:8786, nor 'slurm' or 'pbs'")
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise GridError(
                f"Dask scheduler {scheduler} did not answer within 10 s ({type(exc).__name__}); "
                "is it running and reachable from here?"
            ) from exc
    cluster = _local_cluster(LocalCluster, workers or default_workers())
    client = Client(cluster)
    _quiet_profiler(client)
    return client, cluster


@dataclasses.dataclass
class GridResult:
    """The records of a grid, in task order, and how they were obtained."""

    tasks: list[Task]
    records: list[dict[str, Any] | None]
    cached: int
    computed: int
    seconds: float
    errors: dict[int, str]

    def frame(self, columns: Sequence[str] | None = None):
        """Task parameters and scalar record fields as one tidy DataFrame (one row per task)."""
        import pandas as pd

        rows = []
        for task, record in zip(self.tasks, self.records):
            if record is None:
                continue
            scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}
            rows.append({**task.params, **scalars})
        frame = pd.DataFrame(rows)
        return frame[list(columns)] if columns is not None else frame


# Every grid run of this process, in order: what a report's manifest says of how its numbers were obtained.
_RUN_LOG: list[dict[str, Any]] = []


def grid_runs(since: float = 0.0) -> list[dict[str, Any]]:
    """The grid runs of this process that started at or after ``since`` (a ``time.time()``): per run its
    name, tasks, how many came from the cache, were computed or failed, its wall seconds, and the summed
    ``task_seconds`` of its records (for cached records, the time they took when they were computed)."""
    return [dict(run) for run in _RUN_LOG if run["started"] >= since]


class Grid:
    """A named grid of tasks of one function. ``Grid(name, fn).add(**params)`` then ``.run(...)``."""

    def __init__(
        self,
        name: str,
        fn: str | Callable,
        cache_dir: str | Path | None = None,
        inputs: Mapping[str, str] | None = None,
    ):
        if callable(fn):
            fn = f"{fn.__module__}:{fn.__qualname__}"
        if "<" in fn or "." in fn.split(":")[-1]:
            raise GridError(f"task function {fn!r} must be a module-level function")
        self.name, self.fn = name, fn
        self.task_id = task_id_of(fn)
        self.inputs = dict(inputs or {})
        if cache_dir is None:
            from labkit.core.paths import cache_dir as _cache_dir

            cache_dir = _cache_dir("grid") / name
        self.cache_dir = Path(cache_dir)
        self.tasks: list[Task] = []

    def add(self, **params: Any) -> Grid:
        self.tasks.append(Task(self.fn, dict(params), self.inputs, self.task_id))
        return self

    def product(self, fixed: Mapping[str, Any] | None = None, **axes: Iterable[Any]) -> Grid:
        """One task per combination of the axes' values (the last axis varies fastest)."""
        import itertools

        names = list(axes)
        for combo in itertools.product(*(list(v) for v in axes.values())):
            self.add(**{**dict(fixed or {}), **dict(zip(names, combo))})
        return self

    def __len__(self) -> int:
        return len(self.tasks)

    def run(
        self,
        executor: str = "serial",
        workers: int | None = None,
        scheduler: str | None = None,
        threads: int | None = None,
        progress: bool = True,
        raise_errors: bool = True,
        client=None,
    ) -> GridResult:
        """Compute the missing records with ``executor`` and return all of them, in task order.

        ``threads``: torch threads per task (default: 1 per worker on ``processes``/``dask``, unchanged on
        ``serial``). ``client``: an existing ``dask.distributed.Client`` (executor ``dask``).
        """
        if executor not in EXECUTORS:
            raise ParameterError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
        if workers is not None and workers < 1:
            raise ParameterError(f"workers must be >= 1, got {workers}")
        cache = RecordCache(self.cache_dir)
        started = time.time()
        fingerprints = [t.fingerprint() for t in self.tasks]
        records: list[dict | None] = [cache.get(t, fp) for t, fp in zip(self.tasks, fingerprints)]
        todo = longest_first([i for i, r in enumerate(records) if r is None], estimated_seconds(self.tasks, records))
        cached = len(self.tasks) - len(todo)
        bar = _Progress(self.name, len(self.tasks), cached, progress)
        errors: dict[int, str] = {}

        def done(i: int, record: dict | None, error: BaseException | None) -> None:
            if error is not None:
                errors[i] = f"{type(error).__name__}: {error}"
            else:
                records[i] = record
                cache.put(fingerprints[i], record)
            bar.update()

        try:
            if todo:
                if executor == "serial":
                    self._serial(todo, fingerprints, threads, done, raise_errors)
                elif executor == "processes":
                    self._processes(todo, fingerprints, workers, threads, done)
                else:
                    self._dask(todo, fingerprints, workers, scheduler, threads, done, client)
        finally:
            bar.close(len(errors))
        if errors and raise_errors:
            first = min(errors)
            raise GridError(
                f"grid {self.name}: {len(errors)} of {len(todo)} task(s) failed; first: "
                f"({self.tasks[first].key}) {errors[first]}. Rerun to retry only the missing tasks."
            )
        result = GridResult(self.tasks, records, cached, len(todo) - len(errors), time.time() - started, errors)
        task_seconds = [r["task_seconds"] for r in records if r and isinstance(r.get("task_seconds"), (int, float))]
        _RUN_LOG.append(
            {
                "name": self.name,
                "started": started,
                "tasks": len(self.tasks),
                "cached": result.cached,
                "computed": result.computed,
                "failed": len(errors),
                "seconds": round(result.seconds, 1),
                "task_seconds": round(float(sum(task_seconds)), 3),
            }
        )
        return result

    def _serial(self, todo, fingerprints, threads, done, raise_errors):
        for i in todo:
            task = self.tasks[i]
            try:
                record = run_task(task.fn, task.params, threads, task.rng_seed())
            except Exception as exc:  # recorded; the other tasks go on
                if raise_errors and isinstance(exc, LabkitError):
                    raise
                done(i, None, exc)
                continue
            done(i, record, None)

    def _processes(self, todo, fingerprints, workers, threads, done):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: forking a process whose torch thread pool already ran can deadlock.
        context = multiprocessing.get_context("spawn")
        workers = min(workers or default_workers(), len(todo))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
            futures = {
                pool.submit(run_task, self.tasks[i].fn, self.tasks[i].params, threads or 1, self.tasks[i].rng_seed()): i
                for i in todo
            }
            for future in as_completed(futures):
                i = futures[future]
                error = future.exception()
                done(i, None if error else future.result(), error)

    def _dask(self, todo, fingerprints, workers, scheduler, threads, done, client):
        from distributed import as_completed

        owned = None
        if client is None:
            client, owned = dask_client(scheduler, workers)
        try:
            futures = {
                client.submit(
                    run_task,
                    self.tasks[i].fn,
                    self.tasks[i].params,
                    threads or 1,
                    self.tasks[i].rng_seed(),
                    pure=False,
                    key=f"{self.name}-{fingerprints[i]}",
                    priority=len(todo) - rank,  # longest first, as submitted to the process pool
                ): i
                for rank, i in enumerate(todo)
            }
            for future in as_completed(futures):
                i = futures[future]
                error = future.exception() if future.status == "error" else None
                done(i, None if error else future.result(), error)
        finally:
            if owned is not None:
                client.close()
                owned.close()


def run_grid(
    name: str,
    fn: str | Callable,
    tasks: Iterable[Mapping[str, Any]],
    cfg: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    **kwargs,
) -> GridResult:
    """Build and run a grid with a study config's ``executor``, ``workers`` and ``scheduler`` values."""
    grid = Grid(name, fn, inputs=inputs)
    for params in tasks:
        grid.add(**params)
    cfg = cfg or {}
    options = {
        "executor": cfg.get("executor", "serial"),
        "workers": cfg.get("workers"),
        "scheduler": cfg.get("scheduler"),
    }
    options.update(kwargs)
    return grid.run(**options)


@grid_task("example")
def example_task(seed: int, size: int = 8, steps: int = 20, sleep: float = 0.0) -> dict[str, Any]:
    """A small deterministic task (a few steps of least squares in torch) for the grid's tests and benchmarks."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, size, generator=generator)
    w_true = torch.randn(size, 1, generator=generator)
    y = x @ w_true
    w = torch.zeros(size, 1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
    if sleep:
        time.sleep(sleep)
    return {
        "seed": seed,
        "loss": float(loss.detach()),
        "weights": w.detach().numpy().ravel(),
        "noise": float(torch.rand(1).item()),
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit("labkit.core.grid is a library module")
