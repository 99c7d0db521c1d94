"""The study's notebook runs under nbval at smoke with data_source volumes on a fixture tree whose manifest lists
every volume format (TIFF stack, raw + header, raw with shape/dtype/byte order in the manifest, .mhd, .mat)."""

import json
from pathlib import Path

from tests.dinov2_microct import trees
from tests.nbval_run import run_under_nbval

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_dinov2_microct.ipynb"


def test_notebook_runs_on_a_manifest_tree_under_nbval(tmp_path):
    root, _ = trees.write_manifest_tree(tmp_path / "volumes")
    params = {"preset": "smoke", "data_source": "volumes", "data_root": str(root)}
    run_under_nbval(
        NOTEBOOK, params, tmp_path, "on the volumes tree", env={"LABKIT_RUNS": str(tmp_path / "runs")}, timeout=900
    )
    runs = sorted((tmp_path / "runs").rglob("claims.json"))
    assert runs, "the run wrote no claims.json"
    verdicts = json.loads(runs[-1].read_text())
    assert verdicts and all(v["status"] in ("held", "did not hold", "inconclusive", "not evaluated") for v in verdicts)
    # the report's data table shows the manifest's rocks and scanners in their splits
    tables = {p.stem: p for p in runs[-1].parent.rglob("data_splits*")}
    assert tables, f"no data_splits table in {sorted(p.name for p in runs[-1].parent.rglob('*'))}"
    text = next(iter(tables.values())).read_text()
    assert "wacke" in text and "tomcat" in text and "berea" in text
