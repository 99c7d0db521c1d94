"""The study runs on labkit.core.grid: the same records serially and on a process pool, a rerun reads every
record from the cache, and a changed parameter reruns only the tasks that read it."""

import pytest

import labkit
from labkit.studies import dinov2_microct as study
from labkit.studies.dinov2_microct import experiment
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS, SPLITS
from tests.grid_records import assert_same_records

# Two seeds of tiny simulated slices (30 per seed); the random control and the shipped stand-in (LoRA on the
# stand-in); no DINOv2 or ResNet weights offline, so each seed has three tasks: baselines, random, ssl.
SMALL = dict(
    seeds=[0, 1],
    samples_per_rock=2,
    slices_per_sample=1,
    slice_size=42,
    backbones=["random", "ssl"],
    lora_backbones=["ssl"],
    knn_ks=[1, 3],
    head_epochs=1,
    unet_epochs=1,
    lora_epochs=1,
    rf_trees=5,
    knn_seg_memory=500,
    embedders=["tsne"],
)


def _config(**overrides):
    return labkit.configure("dinov2_microct", "smoke", {**SMALL, **overrides})


def _run(cfg):
    return study.run(cfg, study.data(cfg))


def _cached(runs):
    return sum(g["cached"] for g in runs.grids)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_grid_gives_the_same_records_serially_and_on_a_process_pool(cache, tmp_path, monkeypatch):
    cfg = _config(seeds=[0], backbones=["ssl"])  # two tasks, one per worker: the baselines, the stand-in
    arms = experiment.resolve_arms(cfg)
    grid = experiment.build_grid(cfg, arms)
    assert [t.params["part"] for t in grid.tasks] == ["baselines", "ssl"]
    serial = grid.run(executor="serial", threads=1, progress=False)
    assert serial.computed == 2 and serial.cached == 0
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache-processes"))  # the pool computes afresh
    pool = experiment.build_grid(cfg, arms).run(executor="processes", workers=2, progress=False)
    assert pool.computed == 2 and pool.cached == 0
    assert_same_records(serial.records, pool.records, "processes")
    assert pool.records[1]["features"]["ssl"]["patch"].ndim == 4 and "examples" in pool.records[0]


def test_a_rerun_reads_every_record_from_the_cache(cache):
    cfg = _config()
    grid = experiment.build_grid(cfg)
    assert [(t.params["seed"], t.params["part"]) for t in grid.tasks] == [
        (s, p) for s in (0, 1) for p in ("baselines", "random", "ssl")
    ]
    first = _run(cfg)
    assert (first.computed, _cached(first)) == (6, 0)
    again = _run(cfg)
    assert (again.computed, _cached(again)) == (0, 6)
    for name in ("classification_rows", "segmentation_rows", "silhouettes", "ceilings"):
        a, b = first.tables[name], again.tables[name]
        cols = [c for c in a.columns if c != "train_seconds"]
        assert a[cols].equals(b[cols]), name
    features, masks = again.examples["features"], again.examples["masks"]
    assert set(features) == {"random", "ssl"} and masks.keys() == first.examples["masks"].keys()
    backbones = again.tables["backbones"]
    assert dict(zip(backbones["kind"], backbones["status"])) == {"random": "ok", "ssl": "ok"}
    # the shipped stand-in's record rides along (whether it trained is the "trained" precondition's to judge)
    from labkit.methods import microct_standin

    assert again.examples["pretraining"]["ssl"]["loss_ratio"] == microct_standin.load()[1]["loss_ratio"]
    # the figures' arrays travel only in the first seed's records
    records = experiment.build_grid(cfg).run(executor="serial", progress=False).records
    assert records[2]["features"]["ssl"]["patch"].ndim == 4 and "examples" in records[0]
    assert not any("features" in r or "examples" in r for r in records if r["seed"] == 1)


def test_a_changed_parameter_reruns_only_the_tasks_that_read_it(cache):
    assert _run(_config()).computed == 6
    trees = _run(_config(rf_trees=6))  # the classical random forest
    assert (trees.computed, _cached(trees)) == (2, 4)
    lora = _run(_config(rf_trees=6, lora_backbones=["ssl", "random"]))
    assert (lora.computed, _cached(lora)) == (2, 4)  # only the random control's tasks
    seg = lora.tables["segmentation_rows"]
    rows = seg[(seg["backbone"] == BACKBONE_LABELS["random"]) & (seg["method"] == "linear head + LoRA")]
    assert (rows["status"] == "evaluated").all() and len(rows) == 2 * len(SPLITS)
