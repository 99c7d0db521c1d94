"""The study's notebook runs under nbval at smoke on a GeoTIFF fixture tree (the ``geotiff`` data source)."""

import json
from pathlib import Path

import pandas as pd

from tests.nbval_run import run_under_nbval
from tests.noisy_label_pretraining.trees import BANDS, write_tree

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02_noisy_label_pretraining.ipynb"


def test_notebook_runs_at_smoke_on_a_geotiff_tree(tmp_path):
    tree = write_tree(tmp_path / "tiles", n_tiles=6, size=64, nodata_step=32, ignored_label_pixels=5)["root"]
    run_under_nbval(
        NOTEBOOK,
        {"preset": "smoke", "data_source": "geotiff", "data_root": str(tree)},
        tmp_path,
        "on the geotiff tree",
        env={
            "LABKIT_RUNS": str(tmp_path / "runs"),
            "LABKIT_CACHE": str(tmp_path / "cache"),
            "LABKIT_CHECKPOINTS": str(tmp_path / "checkpoints"),
            "LABKIT_SHARED_DATA": None,
        },
    )
    claims = sorted((tmp_path / "runs").rglob("claims.json"))
    assert claims, "the run wrote no claims.json"
    verdicts = {c["id"]: c for c in json.loads(claims[-1].read_text())}
    assert set(verdicts) == {
        "noisy_pretraining_beats_random",
        "encoder_transfers_to_new_classes",
        "encoder_robust_decoder_sensitive",
        "benefit_shrinks_with_noise",
    }
    assert all(v["status"] == "not evaluated" for v in verdicts.values())  # one seed at smoke
    # the tree has one class definition: the second-task claim says so rather than running on made-up classes
    assert "class definition" in verdicts["encoder_transfers_to_new_classes"]["reason"]
    manifest = json.loads(sorted((tmp_path / "runs").rglob("manifest.json"))[-1].read_text())
    assert manifest["params"]["data_source"] == "geotiff"
    data = pd.read_csv(sorted((tmp_path / "runs").rglob("data.csv"))[-1])
    assert (
        data.nodata_image_pixels > 0
    ).all() and "noise_rate_real" in data  # counted, and the tree's noisy labels used
    assert "nodata_label_pixels" in data and "nodata_noisy_label_pixels" in data  # label no-data counted apart
    settings = pd.read_csv(sorted((tmp_path / "runs").rglob("settings.csv"))[-1])
    assert settings.set_index("setting").value["bands"] == str(list(BANDS))  # the model took the tree's 6 bands
