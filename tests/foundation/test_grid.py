"""The experiment grid: cached records, resume, the three executors, and its bad inputs."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from labkit.core.errors import ParameterError
from labkit.core.grid import Grid, GridError, Task, dump_record, grid_runs, load_record

FN = "labkit.core.grid:example_task"


def _grid(tmp_path, seeds=range(4), **fixed):
    grid = Grid("toy", FN, cache_dir=tmp_path / "cache")
    return grid.product(fixed=fixed or {"size": 4, "steps": 5}, seed=list(seeds))


def _same(a, b):
    assert len(a.records) == len(b.records)
    for ra, rb in zip(a.records, b.records):
        assert ra["loss"] == rb["loss"] and ra["noise"] == rb["noise"]
        np.testing.assert_array_equal(ra["weights"], rb["weights"])


def test_records_round_trip_without_pickle():
    record = {"a": 1, "b": [1.5, float("nan")], "arr": np.arange(6).reshape(2, 3), "nested": {"x": np.ones(2)}}
    back = load_record(dump_record(record))
    assert back["a"] == 1 and np.isnan(back["b"][1])
    np.testing.assert_array_equal(back["arr"], record["arr"])
    np.testing.assert_array_equal(back["nested"]["x"], np.ones(2))
    with pytest.raises(TypeError):
        dump_record({"obj": object()})


def test_second_run_reads_every_record_from_the_cache(tmp_path):
    first = _grid(tmp_path).run(threads=1, progress=False)
    assert first.computed == 4 and first.cached == 0
    second = _grid(tmp_path).run(threads=1, progress=False)
    assert second.computed == 0 and second.cached == 4
    _same(first, second)


def test_each_run_is_logged_with_what_came_from_the_cache_and_the_task_time(tmp_path):
    since = time.time()
    _grid(tmp_path).run(threads=1, progress=False)
    _grid(tmp_path, seeds=range(6)).run(threads=1, progress=False)
    first, second = grid_runs(since=since)
    assert (first["tasks"], first["computed"], first["cached"]) == (4, 4, 0)
    assert (second["tasks"], second["computed"], second["cached"]) == (6, 2, 4)
    assert second["task_seconds"] > first["task_seconds"] > 0  # the four cached records keep their own time
    assert grid_runs(since=time.time() + 1) == []


def test_a_changed_parameter_reruns_only_its_tasks(tmp_path):
    _grid(tmp_path).run(threads=1, progress=False)
    more = _grid(tmp_path, seeds=range(6)).run(threads=1, progress=False)
    assert more.cached == 4 and more.computed == 2


def test_task_fingerprint_depends_on_parameters_and_inputs():
    a = Task(FN, {"seed": 0}).fingerprint()
    assert a == Task(FN, {"seed": 0}).fingerprint()
    assert a != Task(FN, {"seed": 1}).fingerprint()
    assert a != Task(FN, {"seed": 0}, {"data": "abc"}).fingerprint()


def test_executors_give_the_same_records(tmp_path):
    serial = _grid(tmp_path / "s").run("serial", threads=1, progress=False)
    pool = _grid(tmp_path / "p").run("processes", workers=2, progress=False)
    dask = _grid(tmp_path / "d").run("dask", workers=2, progress=False)
    assert pool.computed == dask.computed == 4
    _same(serial, pool)
    _same(serial, dask)


def _worker_state(dask_worker):
    return sorted(dask_worker.periodic_callbacks), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_of_a_local_cluster_run_torch_at_process_pool_speed():
    # Dask's defaults cost torch tasks 1.5x (malloc trim: every tensor mmapped afresh) and 20-70 % more (the
    # stack profiler); and its nanny writes its variables into this process's environment
    from labkit.core.grid import dask_client

    environ = dict(os.environ)
    client, cluster = dask_client(None, 1)
    try:
        states = client.run(_worker_state)
    finally:
        client.close()
        cluster.close()
    assert dict(os.environ) == environ
    assert states
    for callbacks, malloc_trim in states.values():
        assert "profile" not in callbacks and "heartbeat" in callbacks
        assert malloc_trim is None


def test_corrupted_record_is_recomputed_with_a_warning(tmp_path):
    grid = _grid(tmp_path)
    clean = grid.run(threads=1, progress=False)
    victim = grid.cache_dir / f"{grid.tasks[1].fingerprint()}.rec"
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="corrupted"):
        again = _grid(tmp_path).run(threads=1, progress=False)
    assert again.computed == 1
    _same(clean, again)


def test_read_only_cache_folder_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere; make the folder read-only as the kit sees it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(folder) else real(p, mode))
    try:
        with pytest.raises(GridError, match="not writable"):
            Grid("toy", FN, cache_dir=folder).add(seed=0).run(progress=False)
    finally:
        folder.chmod(0o700)


def test_cache_folder_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GridError, match="cannot be created"):
        Grid("toy", FN, cache_dir=blocker / "cache").add(seed=0).run(progress=False)


def test_unknown_executor_is_an_error(tmp_path):
    with pytest.raises(ParameterError, match="unknown executor 'threads'"):
        _grid(tmp_path).run("threads")


def test_unreachable_scheduler_fails_within_seconds_naming_it(tmp_path):
    started = time.time()
    with pytest.raises(GridError, match="tcp://127.0.0.1:9"):
        _grid(tmp_path).run("dask", scheduler="tcp://127.0.0.1:9", progress=False)
    assert time.time() - started < 15


def test_a_failing_task_is_reported_and_the_others_are_kept(tmp_path):
    grid = Grid("toy", FN, cache_dir=tmp_path / "c")
    grid.add(seed=0, size=4, steps=3).add(seed=1, size=-1, steps=3)
    with pytest.raises(GridError, match="1 of 2 task"):
        grid.run(threads=1, progress=False)
    again = Grid("toy", FN, cache_dir=tmp_path / "c").add(seed=0, size=4, steps=3).run(progress=False)
    assert again.cached == 1


def test_killed_grid_resumes_with_the_missing_tasks_only(tmp_path):
    script = (
        f"from labkit.core.grid import Grid\n"
        f"g = Grid('toy', '{FN}', cache_dir={str(tmp_path / 'cache')!r})\n"
        "g.product(fixed={'size': 4, 'steps': 5, 'sleep': 0.4}, seed=list(range(10)))\n"
        "g.run(threads=1, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    cache = tmp_path / "cache"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.glob("*.rec"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(cache.glob("*.rec")))
    assert 4 <= done_before < 10
    grid = Grid("toy", FN, cache_dir=cache).product(fixed={"size": 4, "steps": 5, "sleep": 0.4}, seed=list(range(10)))
    resumed = grid.run(threads=1, progress=False)
    assert resumed.cached == done_before and resumed.computed == 10 - done_before
    clean = (
        Grid("toy", FN, cache_dir=tmp_path / "clean")
        .product(fixed={"size": 4, "steps": 5, "sleep": 0.4}, seed=list(range(10)))
        .run(threads=1, progress=False)
    )
    _same(resumed, clean)
    assert not list(cache.glob("*.tmp"))


def test_frame_is_tidy(tmp_path):
    frame = _grid(tmp_path).run(threads=1, progress=False).frame()
    assert list(frame.seed) == [0, 1, 2, 3] and "loss" in frame and "weights" not in frame


def test_headless_progress_is_one_summary_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABKIT_HEADLESS", "1")
    _grid(tmp_path).run(threads=1)
    _grid(tmp_path).run(threads=1)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2
    assert re.fullmatch(r"grid toy: 4 of 4 tasks done \(0 from cache\) in \d+ s", lines[0]), lines
    assert re.fullmatch(r"grid toy: 4 of 4 tasks done \(4 from cache\) in \d+ s", lines[1]), lines


def test_a_tasks_random_draws_do_not_change_with_the_code_only_with_its_parameters(monkeypatch):
    from labkit.core import grid as core_grid

    task = Task("labkit.core.grid:example_task", {"seed": 3, "steps": 2}, {"data": "abc"})
    before = (task.fingerprint(), task.rng_seed())
    monkeypatch.setattr(core_grid, "code_digest", lambda module: "a reformatted module")
    assert task.fingerprint() != before[0]  # a code change recomputes the record...
    assert task.rng_seed() == before[1]  # ...with the same random draws
    assert Task(task.fn, {"seed": 4, "steps": 2}, task.inputs).rng_seed() != before[1]
    assert Task(task.fn, task.params, {"data": "other"}).rng_seed() != before[1]


def test_a_task_moved_to_another_module_keeps_its_id_and_draws(tmp_path, monkeypatch):
    # the study-shape move put tasks into tasks.py modules: the id, not the module, keys the draws
    import types

    from labkit.core.grid import grid_task

    moved = types.ModuleType("labkit_moved_tasks")
    moved.example_task = grid_task("example")(lambda **kw: None)
    moved.example_task.__module__, moved.example_task.__qualname__ = "labkit_moved_tasks", "example_task"
    monkeypatch.setitem(sys.modules, "labkit_moved_tasks", moved)
    here = Task(FN, {"seed": 3}, {"data": "abc"})
    there = Task("labkit_moved_tasks:example_task", {"seed": 3}, {"data": "abc"})
    assert there.task_id == here.task_id == "example"
    assert there.rng_seed() == here.rng_seed()
    renamed = grid_task("example-v2")(lambda **kw: None)
    moved.renamed = renamed
    assert Task("labkit_moved_tasks:renamed", {"seed": 3}, {"data": "abc"}).rng_seed() != here.rng_seed()


def test_a_task_without_a_stable_id_is_refused_before_it_runs(tmp_path, monkeypatch):
    import types

    module = types.ModuleType("labkit_unmarked_tasks")

    def unmarked(seed):
        return {"seed": seed}

    unmarked.__module__, unmarked.__qualname__ = "labkit_unmarked_tasks", "unmarked"
    module.unmarked = unmarked
    monkeypatch.setitem(sys.modules, "labkit_unmarked_tasks", module)
    with pytest.raises(
        GridError, match=r"labkit_unmarked_tasks:unmarked has no stable id: decorate it with @grid_task"
    ):
        Grid("toy", unmarked, cache_dir=tmp_path / "c")
    with pytest.raises(GridError, match="must be a non-empty string without ':'"):
        from labkit.core.grid import grid_task

        grid_task("module:function")


def test_random_draws_do_not_depend_on_where_the_files_live(tmp_path):
    # the SSL study's tasks name their data file by its absolute cache path: a clone elsewhere drew new numbers;
    # a file's content enters through its digest
    def task(data_file, ckpt, digest="d1"):
        return Task(FN, {"seed": 0, "data_file": data_file, "enc": {"path": ckpt, "digest": digest}}, {"data": "x"})

    here = task("/work/a/.cache/data/3f2a.npz", "/work/a/.cache/ssl/8c1e0f.safetensors")
    there = task("/home/u/cache/data/3f2a.npz", "/home/u/cache/ssl/77ab21.safetensors")
    assert here.rng_seed() == there.rng_seed()
    assert here.rng_seed() != task("/work/a/.cache/data/3f2a.npz", "/x/8c1e0f.safetensors", "d2").rng_seed()
    assert here.fingerprint() != there.fingerprint()  # the cache key still tells the two locations apart


def test_missing_tasks_are_handed_out_longest_first_by_their_cached_siblings():
    from labkit.core.grid import estimated_seconds, longest_first

    tasks = [Task(FN, {"arm": arm, "seed": seed}) for seed in (0, 1) for arm in ("short", "long", "new")]
    records = [{"task_seconds": 1.0}, {"task_seconds": 9.0}, None, None, None, None]
    estimates = estimated_seconds(tasks, records)
    # seed 1's tasks take their seed-0 sibling's time; "new" shares only a seed with cached tasks
    assert estimates[:2] == [None, None] and estimates[3] == 1.0 and estimates[4] == 9.0
    assert estimates[2] == 5.0 and estimates[5] == 5.0  # the median of the tasks sharing the most values
    assert longest_first([2, 3, 4, 5], estimates) == [4, 2, 5, 3]
    assert longest_first([3, 4], [None] * 6) == [3, 4]  # nothing known: the grid's order
    assert estimated_seconds(tasks, [None] * 6) == [None] * 6


def test_a_rerun_computes_the_long_missing_task_first(tmp_path, monkeypatch):
    import labkit.core.grid as grid_module

    def grid(seeds):
        g = Grid("toy", FN, cache_dir=tmp_path / "cache")
        return g.product(fixed={"size": 4, "steps": 2}, seed=list(seeds), sleep=[0.0, 0.3])

    grid_module.example_task(seed=0)  # torch's first call in this process: not part of either task's time
    grid([0]).run(threads=1, progress=False)
    order, run_task = [], grid_module.run_task
    monkeypatch.setattr(grid_module, "run_task", lambda fn, p, *a: order.append(p["sleep"]) or run_task(fn, p, *a))
    grid([0, 1]).run(threads=1, progress=False)
    assert order == [0.3, 0.0]  # the grid's own order is the short task first


def test_a_tasks_cache_key_covers_the_modules_it_imports_relatively_and_nothing_else(tmp_path, monkeypatch):
    # studies/<study>/tasks.py imports its siblings with `from .data import ...`: an edit there must recompute
    from labkit.core import grid as core_grid

    package = tmp_path / "labkit_toy_study"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text("SIZE = 4\n")
    (package / "figures.py").write_text("import matplotlib\n")
    (package / "tasks.py").write_text("from .data import SIZE\nfrom . import data\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = core_grid._labkit_imports.__wrapped__("labkit_toy_study.tasks")  # uncached: a fresh package
    assert found == ("labkit_toy_study", "labkit_toy_study.data")
    assert "labkit_toy_study.figures" not in found
