"""The study's notebook runs under nbval at smoke on fixture trees in both published folder layouts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

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
    nb = parameterize_notebook(
        load_notebook_node(str(NOTEBOOK)), {"preset": "smoke", "data_source": layout, "data_root": str(tree)}
    )
    target = tmp_path / NOTEBOOK.name
    write_ipynb(nb, str(target))
    env = {
        **os.environ,
        "LABKIT_NOTEBOOKS": str(ROOT / "notebooks"),
        "LABKIT_RUNS": str(tmp_path / "runs"),
        "LABKIT_CACHE": str(tmp_path / "cache"),
        "LABKIT_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-current-env",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(target),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"nbval failed on the {layout} tree:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    claims = sorted((tmp_path / "runs").rglob("claims.json"))
    assert claims, "the run wrote no claims.json"
    verdicts = {c["id"]: c for c in json.loads(claims[-1].read_text())}
    assert {"C1_label_efficiency_mae", "C2_probe_vs_finetune", "C3_in_domain", "C4_foundation_model"} <= set(verdicts)
    assert all(v["status"] in ("held", "did not hold", "not evaluated") for v in verdicts.values())
    import pandas as pd

    summary = pd.read_csv(sorted((tmp_path / "runs").rglob("data_summary.csv"))[-1]).set_index("set")
    assert summary.loc["pool", "defective"] == 4 and summary.loc["test", "defective"] == 4  # the tree's 8, split
    assert summary.loc["unlabeled", "images"] == 32 and summary.loc["unlabeled", "defective"] == 0
