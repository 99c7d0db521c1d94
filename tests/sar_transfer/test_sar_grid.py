"""The study runs fully on labkit.core.grid: the same records on every executor, and a rerun resumes."""

import numpy as np

from labkit.core.params import load_spec
from labkit.studies import sar_transfer as study
from tests.grid_records import assert_same_records

from .test_sar_study import optical_checkpoint  # noqa: F401  (fixture)


def test_smoke_grid_gives_the_same_records_on_every_executor(optical_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    cfg = load_spec("sar_transfer").resolve("smoke")
    weights = study.resolve_weights(cfg)
    assert weights["cross_sensor"]["status"] == "ok"
    grid_tasks = len(study.build_grid(cfg, weights))
    # random, cross_sensor, gbm, majority at 16 tiles; random and gbm at 32; the random and cross_sensor probes
    assert grid_tasks == 8
    runs = {}
    for name, options in {
        "serial": {"executor": "serial", "threads": 1},
        "processes": {"executor": "processes", "workers": 2},
        "dask": {"executor": "dask", "workers": 2},
    }.items():
        monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / f"cache-{name}"))  # each executor computes afresh
        res = study.run(cfg, weights, progress=False, **options)
        assert res.computed == grid_tasks and res.cached == 0
        runs[name] = sorted(res.records, key=lambda r: (r["arm"], r["n_tiles"]))
    for name in ("processes", "dask"):
        assert_same_records(runs["serial"], runs[name], name)
    # a rerun finds every record in the cache and computes nothing
    again = study.run(cfg, weights, progress=False, executor="serial", threads=1)
    assert again.computed == 0 and again.cached == grid_tasks
    assert_same_records(runs["serial"], sorted(again.records, key=lambda r: (r["arm"], r["n_tiles"])), "cached")
    tables = study.claim_tables(again)
    assert set(tables["runs"].arm) == {"random", "cross_sensor", "gbm", "majority"}
    assert len(tables["convergence"]) == 2 and np.isfinite(tables["convergence"]["epochs_to_common"]).all()


def test_a_changed_checkpoint_reruns_only_the_tasks_that_read_it(optical_checkpoint, tmp_path, monkeypatch):  # noqa: F811

    from labkit.core.checkpoints import save_checkpoint
    from labkit.models.registry import named_checkpoint_path

    cfg = load_spec("sar_transfer").resolve("smoke", {"tiles": [16, 24]})
    first = study.run(cfg, progress=False, threads=1)
    assert first.computed == 8
    changed = {k: v + 0.01 if v.is_floating_point() else v for k, v in optical_checkpoint.items()}
    save_checkpoint(named_checkpoint_path(study.CHECKPOINT_NAME), changed, {"produced_by": "test-2"})
    second = study.run(cfg, progress=False, threads=1)
    assert second.computed == 2 and second.cached == 6  # only the cross-sensor task and its probe
    assert second.weights["cross_sensor"]["digest"] != first.weights["cross_sensor"]["digest"]
