"""The study's notebook runs under nbval at smoke on real-format fixture trees (netCDF and GeoTIFF)."""

from pathlib import Path

import pytest

from labkit.data import sar
from tests.nbval_run import run_under_nbval

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_sar_transfer.ipynb"


@pytest.mark.parametrize("layout", ["ai4arctic", "geotiff"])
def test_notebook_runs_on_a_fixture_tree(tmp_path, layout):
    triples = [
        (sar.simulate_scene(m, size=112, seed=k), season, split)
        for m, season, split, k in [
            (3, "freeze", "train", 0),
            (10, "freeze", "train", 1),
            (6, "melt", "train", 2),
            (1, "freeze", "test", 3),
            (7, "melt", "test", 4),
        ]
    ]
    tree = sar.write_scene_tree(tmp_path / "scenes", triples, layout)
    run_under_nbval(
        NOTEBOOK,
        {"preset": "smoke", "data_source": layout, "data_root": str(tree), "n_val_tiles": 6},
        tmp_path,
        f"on the {layout} tree",
        env={"LABKIT_RUNS": str(tmp_path / "runs")},
        timeout=900,
    )
    claims = sorted((tmp_path / "runs").rglob("claims.json"))
    assert claims, "the run wrote no claims.json"
    import json

    verdicts = {c["id"]: c for c in json.loads(claims[-1].read_text())}
    assert {"better_on_melt", "better_on_melt_cross_sensor"} <= set(verdicts)
    assert all(v["status"] in ("held", "did not hold", "inconclusive", "not evaluated") for v in verdicts.values())
