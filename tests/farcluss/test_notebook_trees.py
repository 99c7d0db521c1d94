"""The FARCLUSS notebook at smoke on fixture trees with split lists (VOC train_aug and Cityscapes), under nbval,
as tests/test_notebooks.py runs it on the simulated scenes."""

from pathlib import Path

import pytest

from tests.farcluss import trees
from tests.nbval_run import run_under_nbval

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
    run_under_nbval(NOTEBOOK, params, tmp_path, f"on the {source} tree", timeout=600)
