"""The foundation's grid on its reference study (sar_transfer): executors, resume after SIGKILL, overhead.

Measured on the study's grid at a preset (``default`` unless told), in one run, interleaved where it matters:

1. ``processes`` (2 workers x 1 torch thread) against ``serial`` with 2 torch threads: wall ratio (must not be slower);
2. ``dask`` on a 2-worker ``LocalCluster`` against the process pool: within 10 %;
3. resume: a ``processes`` run in a child process is killed with SIGKILL once about half of the grid's work is
   cached (the cached records' task seconds reach half the clean run's total: the tasks differ widely in length,
   a pixel classifier against a U-Net, so half the records is not half the work); the rerun must take at most
   60 % of a full run and its records must equal a clean run's;
4. grid overhead per task (cache lookup, dispatch, record write) on the process pool: under 50 ms.

Every full run uses a fresh cache folder. Prints a table and writes ``--out`` (JSON).

    .venv/bin/python benchmarks/bench_grid.py                          # the default grid (about 4 full runs)
    .venv/bin/python benchmarks/bench_grid.py -p seeds '[0, 1]' -p n_steps 60    # a smaller grid
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import os, sys, json
from labkit.core.params import load_spec
from labkit.studies import sar_transfer as study
cfg = load_spec("sar_transfer").resolve(sys.argv[1], json.loads(sys.argv[2]))
weights = json.loads(open(sys.argv[3]).read())
study.run(cfg, weights, progress=False, executor="processes", workers=2)
"""


def _records(res):
    keep = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "task_seconds", "cpu_seconds")}  # noqa: E731
    return sorted((keep(r) for r in res.records), key=lambda r: (r["arm"], r["seed"], r["n_tiles"]))


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    import torch

    from labkit.core import grid as core_grid
    from labkit.core.params import load_spec
    from labkit.studies import sar_transfer as study

    spec = load_spec("sar_transfer")
    overrides = {name: spec.params[name].parse_cli(value) for name, value in args.param}
    cfg = spec.resolve(args.preset, overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    os.environ["LABKIT_CACHE"] = str(work / "weights-cache")
    weights = study.resolve_weights(cfg)
    n_tasks = len(study.build_grid(cfg, weights))
    print(f"grid: {n_tasks} tasks at preset {args.preset} {overrides or ''}; cores {os.cpu_count()}", flush=True)

    def full(name: str, **options):
        os.environ["LABKIT_CACHE"] = str(work / f"cache-{name}-{time.time_ns()}")
        started = time.perf_counter()
        res = study.run(cfg, weights, progress=False, **options)
        wall = time.perf_counter() - started
        own = sum(r.get("task_seconds", 0.0) for r in res.records)
        task_work[name] = own
        # wall x workers - the tasks' own time: start-up, dispatch and the idle tail on uneven tasks
        print(f"  {name:<22} {wall:8.1f} s (tasks' own time {own:.1f} s)", flush=True)
        return wall, res

    task_work: dict[str, float] = {}

    out: dict = {"tasks": n_tasks, "preset": args.preset, "overrides": overrides}
    # 1 and 2, interleaved: serial (2 threads), processes (2 x 1), dask LocalCluster (2 x 1)
    torch.set_num_threads(2)
    walls = {"serial_2_threads": [], "processes_2x1": [], "dask_localcluster_2x1": []}
    records = {}
    for _ in range(1):
        for name, options in (
            ("serial_2_threads", {"executor": "serial", "threads": 2}),
            ("processes_2x1", {"executor": "processes", "workers": 2}),
            ("dask_localcluster_2x1", {"executor": "dask", "workers": 2}),
        ):
            wall, res = full(name, **options)
            walls[name].append(wall)
            records[name] = _records(res)
            if name == "processes_2x1":
                clean_processes = res
    out["walls"] = walls
    out["task_seconds_sum"] = task_work
    proc, ser, dask = (
        float(np.median(walls[k])) for k in ("processes_2x1", "serial_2_threads", "dask_localcluster_2x1")
    )
    out["serial_over_processes"] = ser / proc
    out["dask_over_processes"] = dask / proc
    out["dask_equals_processes"] = _equal(records["processes_2x1"], records["dask_localcluster_2x1"])

    # 3. resume after SIGKILL at about half of the grid
    cache = work / "cache-resume"
    os.environ["LABKIT_CACHE"] = str(cache)
    (work / "weights.json").write_text(json.dumps(weights))
    env = {**os.environ, "LABKIT_CACHE": str(cache)}
    grid_folder = cache / "grid" / study.STUDY
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, args.preset, json.dumps(overrides), str(work / "weights.json")],
        env=env,
        start_new_session=True,
    )
    total_work = sum(r["task_seconds"] for r in clean_processes.records)

    def cached_work() -> tuple[int, float]:
        recs = list(grid_folder.glob("*.rec"))  # written atomically: a listed file is whole
        return len(recs), sum(core_grid.load_record(p.read_bytes()).get("task_seconds", 0.0) for p in recs)

    started = time.perf_counter()
    while child.poll() is None and cached_work()[1] < total_work / 2:
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    before_kill = time.perf_counter() - started
    killed_at, work_at_kill = cached_work()
    started = time.perf_counter()
    res = study.run(cfg, weights, progress=False, executor="processes", workers=2)
    rerun = time.perf_counter() - started
    out["resume"] = {
        "killed_after_records": killed_at,
        "work_cached_at_kill": work_at_kill / total_work,
        "killed_after_seconds": before_kill,
        "rerun_seconds": rerun,
        "rerun_over_full": rerun / proc,
        "records_equal_clean_run": _equal(_records(res), records["processes_2x1"]),
        "rerun_computed": res.computed,
        "rerun_cached": res.cached,
    }
    print(
        f"  resume: killed at {killed_at}/{n_tasks} records ({work_at_kill / total_work:.0%} of the work), "
        f"rerun {rerun:.1f} s",
        flush=True,
    )

    # 4. grid overhead per task on the process pool: a grid of near-empty tasks (the dispatch, record
    # transfer and write) at two sizes, so the pool's start-up cancels; and a fully cached rerun (the lookup)
    def overhead_run(n: int) -> float:
        os.environ["LABKIT_CACHE"] = str(work / f"cache-overhead-{n}-{time.time_ns()}")
        g = core_grid.Grid(f"overhead{n}", core_grid.example_task)
        for seed in range(n):
            g.add(seed=seed, steps=1)
        t0 = time.perf_counter()
        g.run(executor="processes", workers=2, progress=False)
        return time.perf_counter() - t0

    small, large = overhead_run(8), overhead_run(88)
    dispatch = (large - small) / 80
    os.environ["LABKIT_CACHE"] = str(work / "cache-overhead-lookup")
    real = study.run(cfg, weights, progress=False, executor="processes", workers=2)
    t0 = time.perf_counter()
    again = study.run(cfg, weights, progress=False, executor="processes", workers=2)
    lookup = (time.perf_counter() - t0) / n_tasks
    assert again.computed == 0 and real.records
    out["overhead_per_task_ms"] = {"dispatch_and_write": 1000 * dispatch, "cached_lookup": 1000 * lookup}

    print()
    print("| measurement | value | target |")
    print("|---|---|---|")
    print(f"| serial (2 torch threads) / processes (2 x 1 thread), wall | {out['serial_over_processes']:.2f} | >= 1 |")
    print(f"| dask LocalCluster (2 x 1) / processes (2 x 1), wall | {out['dask_over_processes']:.2f} | 0.9 .. 1.1 |")
    print(f"| dask records equal the process pool's | {out['dask_equals_processes']} | True |")
    r = out["resume"]
    print(
        f"| rerun after SIGKILL at {r['work_cached_at_kill']:.0%} of the work ({r['killed_after_records']}/{n_tasks} "
        f"records) / full run | {r['rerun_over_full']:.2f} | "
        "<= 0.60 |"
    )
    print(f"| rerun records equal a clean run's | {r['records_equal_clean_run']} | True |")
    o = out["overhead_per_task_ms"]
    print(f"| grid overhead per task: dispatch + record write (ms) | {o['dispatch_and_write']:.1f} | < 50 |")
    print(f"| grid overhead per task: cached lookup (ms) | {o['cached_lookup']:.1f} | < 50 |")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
