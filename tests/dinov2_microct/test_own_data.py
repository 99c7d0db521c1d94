"""The study on a researcher's own volumes (issue 31): the class names and the networks' outputs come from the
manifest's ``phases``, every method is scored on the data's phases, a ``phases`` list that does not match the
label values is refused before any work, and claims that describe the data are filled from it."""

import numpy as np
import pandas as pd
import pytest

import labkit
from labkit.core.claims import judge_all
from labkit.core.errors import DataError
from labkit.methods import baselines
from labkit.models.vit_heads import count_parameters
from labkit.studies import dinov2_microct as study
from labkit.studies.base import Runs
from labkit.studies.dinov2_microct import tables
from labkit.studies.dinov2_microct.probes import probe_rows
from labkit.studies.dinov2_microct.tasks import _scores
from tests.dinov2_microct import trees

# the smallest run that still trains every kind of network on the tree (random ViT: frozen heads; UNet; classical)
RUN = dict(
    samples_per_rock=2,
    slices_per_sample=2,
    slice_step=4,
    slice_size=28,
    backbones=["random"],
    lora_backbones=["dinov2"],
    resnet_lora=False,
    embedders=["pca"],
    knn_ks=[1, 3],
    executor="serial",
)


def _cfg(root, **kw):
    return labkit.configure("dinov2_microct", "smoke", {"data_source": "volumes", "data_root": str(root), **RUN, **kw})


def two_phases(doc):
    """pore / solid: the mineral and micro-porous phases of the tree's labels merged through a label map."""
    doc["phases"] = ["pore", "solid"]
    for v in doc["volumes"]:
        labels = v["labels"] if isinstance(v["labels"], dict) else {"file": v["labels"]}
        v["labels"] = {**labels, "map": {0: 0, 1: 1, 2: 1}}


@pytest.fixture
def tree(tmp_path):
    return trees.write_manifest_tree(tmp_path / "data", shape=(12, 40, 40))[0]


def test_two_phase_data_give_two_output_networks_and_two_iou_columns(tree, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tree.parent / "cache"))
    trees.edit_manifest(tree, two_phases)
    cfg = _cfg(tree)
    data = study.data(cfg)
    assert data.phases == ("pore", "solid") and set(np.unique(data.masks)) == {0, 1}
    runs = study.run(cfg, data)
    seg = tables.segmentation(runs)
    iou_cols = sorted(c for c in seg.columns if "/iou/" in c)
    assert iou_cols == ["ood_rock/iou/pore", "ood_rock/iou/solid"], iou_cols
    rows = runs.tables["segmentation_rows"]
    assert not any(c.endswith("microporous") for c in rows.columns)
    # the UNet was built with one output per phase of the data: its trainable parameters are a 2-class UNet's
    unet = rows[rows["method"] == "UNet from scratch"]["trainable_params"].iloc[0]
    assert unet == count_parameters(baselines.create_unet(2, in_channels=1))
    assert unet != count_parameters(baselines.create_unet(3, in_channels=1))
    # every prediction (networks and classical pipelines) is a phase of the data
    for name, masks in runs.examples["masks"].items():
        if name != "image":
            assert set(np.unique(masks)) <= {0, 1}, name
    assert list(tables.data_splits(cfg, data).filter(like="fraction/").columns) == ["fraction/pore", "fraction/solid"]


def test_phases_with_more_entries_than_the_label_values_are_refused_before_any_work(tree):
    # four declared phases, labels hold 0, 1, 2: phase 3 occurs nowhere
    trees.edit_manifest(tree, lambda d: d.update(phases=["pore", "mineral", "microporous", "pyrite"]))
    with pytest.raises(
        DataError, match=r"manifest\.yaml: 'phases' lists 4 phases .*phase ids \['3 \(pyrite\)'\].*values \[0, 1, 2\]"
    ):
        study.data(_cfg(tree))


def test_label_values_outside_the_phases_are_refused_before_any_work_naming_the_manifest(tree):
    trees.edit_manifest(tree, lambda d: d.update(phases=["pore", "solid"]))
    with pytest.raises(DataError, match=r"manifest\.yaml: volume .* holds label values \[2\] outside the 2 declared"):
        study.data(_cfg(tree))


def test_every_method_is_scored_on_the_phases_present_in_the_split():
    phases = ("pore", "mineral", "microporous")
    truth = np.zeros((1, 4, 4), np.int64)
    truth[0, :, 2:] = 1  # no micro-porosity in this split
    never = truth.copy()  # a method that never predicts the absent phase
    stray = truth.copy()
    stray[0, 0, 0] = 2  # one pixel of the absent phase: it costs the pore IoU, not a whole class of IoU 0
    a, b = _scores(never, truth, phases), _scores(stray, truth, phases)
    assert np.isnan(a["iou/microporous"]) and np.isnan(b["iou/microporous"])
    assert a["miou"] == 1.0
    assert b["miou"] == pytest.approx((7 / 8 + 1.0) / 2)


def test_a_k_larger_than_the_training_slices_is_a_row_saying_so_not_a_silent_copy():
    cfg = labkit.configure("dinov2_microct", "smoke", {"knn_ks": [1, 3, 8, 50, 100]})
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 6)
    x = rng.normal(size=(12, 4)).astype(np.float32) + labels[:, None]
    tr, te = np.arange(0, 12, 2), np.arange(1, 12, 2)  # 6 training slices
    rows = pd.DataFrame(probe_rows(cfg, 0, "toy", {"cls": x}, labels, tr, te, 3))
    knn = rows[rows["probe"] == "knn"]
    assert sorted(knn[knn["status"] == "evaluated"]["k"]) == [1, 3]
    skipped = knn[knn["status"] != "evaluated"]
    assert sorted(skipped["k"]) == [8, 50, 100] and skipped["accuracy"].isna().all()
    assert all("more than the 6 training slices" in s and "knn_ks" in s for s in skipped["status"])
    table = tables.classification(Runs(tables={"classification_rows": rows}))
    shown = table[table["probe"].isin(["kNN k=8", "kNN k=50", "kNN k=100"])]
    assert len(shown) == 3 and shown["status"].str.contains("knn_ks").all()


def test_one_training_rock_and_scanner_leave_claim_5_not_evaluated_and_the_statements_name_the_data(tree, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tree.parent / "cache"))
    trees.edit_manifest(tree, lambda d: d["splits"].update(train_rocks=["berea"], train_scanners=["zeiss_versa"]))
    cfg = _cfg(tree)
    data = study.data(cfg)
    runs = study.run(cfg, data)
    verdicts = {v["id"]: v for v in judge_all(study.claims(cfg, runs), runs.tables)}
    c5 = verdicts["c5_holds_out_of_distribution"]
    assert c5["status"] == "not evaluated", c5
    assert "one training rock (berea) and one training scanner (zeiss_versa)" in c5["reason"], c5["reason"]
    assert "splits" in c5["reason"]  # where to add a second one
    assert "trained on berea imaged by zeiss_versa" in c5["statement"]
    assert "(wacke)" in c5["statement"] and "(tomcat)" in c5["statement"] and "two rocks" not in c5["statement"]
    assert "held-out rock wacke" in verdicts["c2_linear_head_beats_classical"]["statement"]
    # the same manifest with two training rocks and scanners: claim 5 is judged (here on too few seeds)
    both = {c.id: c for c in study.declare_claims(cfg, split=dict(trees.SPLITS))}["c5_holds_out_of_distribution"]
    assert both.unavailable is None and "berea and estaillades imaged by zeiss_versa and nikon_xth" in both.statement
