"""The study's notebook runs under nbval at smoke on fixture trees in both published folder layouts."""

import json
from pathlib import Path

import pytest

from tests.nbval_run import run_under_nbval

from .fixtures import write_mvtec_tree, write_per_class_tree

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_ssl_industrial.ipynb"


@pytest.mark.parametrize("layout", ["mvtec", "per_class"])
def test_notebook_runs_on_a_fixture_tree(tmp_path, layout):
    # smoke takes 32 unlabeled defect-free images after the test set and the pool take theirs
    if layout == "mvtec":
        tree = write_mvtec_tree(tmp_path / "bottle", n_train_good=44, n_test_good=4, colour=True)
    else:
        tree = write_per_class_tree(tmp_path / "plant", n_good=48, colour=False)
    run_under_nbval(
        NOTEBOOK,
        {"preset": "smoke", "data_source": layout, "data_root": str(tree)},
        tmp_path,
        f"on the {layout} tree",
        env={
            "LABKIT_RUNS": str(tmp_path / "runs"),
            "LABKIT_CACHE": str(tmp_path / "cache"),
            "LABKIT_CHECKPOINTS": str(tmp_path / "checkpoints"),
            "HF_HUB_OFFLINE": "1",
        },
    )
    claims = sorted((tmp_path / "runs").rglob("claims.json"))
    assert claims, "the run wrote no claims.json"
    verdicts = {c["id"]: c for c in json.loads(claims[-1].read_text())}
    assert {"C1_label_efficiency_mae", "C2_probe_vs_finetune", "C3_in_domain", "C4_foundation_model"} <= set(verdicts)
    assert all(v["status"] in ("held", "did not hold", "inconclusive", "not evaluated") for v in verdicts.values())
    import pandas as pd

    summary = pd.read_csv(sorted((tmp_path / "runs").rglob("data_summary.csv"))[-1]).set_index("set")
    # the tree's 8 defect images, split; the test set is tiled (non-square images: one or more defect tiles each)
    assert summary.loc["pool", "defective"] == 4 and summary.loc["test", "defective"] >= 4
    assert summary.loc["unlabeled", "source_images"] == 32 and summary.loc["unlabeled", "defective"] == 0
    assert summary.loc["defect masks vanished in the resize", "images"] == 0
