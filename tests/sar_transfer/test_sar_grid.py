"""The study runs fully on labkit.core.grid: the same records on every executor, and a rerun resumes."""

import numpy as np

from labkit.core.params import load_spec
from labkit.studies.sar_transfer import experiment
from labkit.studies.sar_transfer.data import CHECKPOINT_NAME
from tests.grid_records import assert_same_records

from .test_sar_study import optical_checkpoint  # noqa: F401  (fixture)


def test_smoke_grid_gives_the_same_records_on_every_executor(optical_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    spec = load_spec("sar_transfer")
    cfg = spec.resolve("smoke")
    weights = experiment.resolve_weights(cfg)
    assert weights["cross_sensor"]["status"] == "ok"
    grid_tasks = len(experiment.build_grid(cfg, weights))
    # random, cross_sensor, gbm, majority at 16 tiles; random and gbm at 32; the random and cross_sensor probes
    assert grid_tasks == 8
    records = {}
    for name, (options, threads) in {
        "serial": ({"executor": "serial"}, 1),
        "processes": ({"executor": "processes", "workers": 2}, None),
        "dask": ({"executor": "dask", "workers": 2}, None),
    }.items():
        monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / f"cache-{name}"))  # each executor computes afresh
        runs = experiment.run(spec.resolve("smoke", options), weights=weights, progress=False, threads=threads)
        assert runs.computed == grid_tasks and sum(g["cached"] for g in runs.grids) == 0
        records[name] = _records(cfg, weights)  # read back from this executor's cache
    for name in ("processes", "dask"):
        assert_same_records(records["serial"], records[name], name)
    # a rerun finds every record in the cache and computes nothing
    again = experiment.run(cfg, weights=weights, progress=False, threads=1)
    assert again.computed == 0 and sum(g["cached"] for g in again.grids) == grid_tasks
    assert set(again.tables["runs"].arm) == {"random", "cross_sensor", "gbm", "majority"}
    convergence = again.tables["convergence"]
    assert len(convergence) == 2 and np.isfinite(convergence["epochs_to_common"]).all()


def _records(cfg, weights):
    res = experiment.run_grid(cfg, weights, progress=False, threads=1)
    return sorted(res.records + res.probes, key=lambda r: (bool(r.get("probe")), r["arm"], r["n_tiles"]))


def test_a_changed_checkpoint_reruns_only_the_tasks_that_read_it(optical_checkpoint, tmp_path, monkeypatch):  # noqa: F811

    from labkit.core.checkpoints import save_checkpoint
    from labkit.models.registry import named_checkpoint_path

    cfg = load_spec("sar_transfer").resolve("smoke", {"tiles": [16, 24]})
    first = experiment.run(cfg, progress=False, threads=1)
    assert first.computed == 8
    changed = {k: v + 0.01 if v.is_floating_point() else v for k, v in optical_checkpoint.items()}
    save_checkpoint(named_checkpoint_path(CHECKPOINT_NAME), changed, {"produced_by": "test-2"})
    second = experiment.run(cfg, progress=False, threads=1)
    assert second.computed == 2 and sum(g["cached"] for g in second.grids) == 6  # the cross-sensor task and its probe
    digests = [runs.tables["weights"].set_index("arm").loc["cross_sensor", "digest"] for runs in (first, second)]
    assert digests[0] != digests[1]
