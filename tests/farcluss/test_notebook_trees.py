"""The FARCLUSS notebook at smoke on fixture trees with split lists (VOC train_aug and Cityscapes), under nbval,
as tests/test_notebooks.py runs it on the simulated scenes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

from tests.farcluss import trees

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "05_farcluss.ipynb"


@pytest.mark.parametrize("source", ["voc", "cityscapes"])
def test_notebook_runs_on_a_fixture_tree_under_nbval(tmp_path, source):
    writer = trees.write_voc_tree if source == "voc" else trees.write_cityscapes_tree
    writer(tmp_path / "data")
    params = {
        "preset": "smoke",
        "data_source": source,
        "data_root": str(tmp_path / "data"),
        "splits": ["1_4"],
        "image_size": 16,
    }
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), params)
    target = tmp_path / NOTEBOOK.name
    write_ipynb(nb, str(target))
    env = {**os.environ, "LABKIT_NOTEBOOKS": str(ROOT / "notebooks")}
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
        timeout=600,
    )
    assert proc.returncode == 0, f"nbval failed on the {source} tree:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
