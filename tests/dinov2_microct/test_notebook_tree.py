"""The study's notebook runs under nbval at smoke with data_source volumes on a fixture tree whose manifest lists
every volume format (TIFF stack, raw + header, raw with shape/dtype/byte order in the manifest, .mhd, .mat)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

from tests.dinov2_microct import trees

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_dinov2_microct.ipynb"


def test_notebook_runs_on_a_manifest_tree_under_nbval(tmp_path):
    root, _ = trees.write_manifest_tree(tmp_path / "volumes")
    params = {"preset": "smoke", "data_source": "volumes", "data_root": str(root)}
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), params)
    target = tmp_path / NOTEBOOK.name
    write_ipynb(nb, str(target))
    env = {**os.environ, "LABKIT_NOTEBOOKS": str(ROOT / "notebooks"), "LABKIT_RUNS": str(tmp_path / "runs")}
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
    assert proc.returncode == 0, f"nbval failed on the volumes tree:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    runs = sorted((tmp_path / "runs").rglob("claims.json"))
    assert runs, "the run wrote no claims.json"
    verdicts = json.loads(runs[-1].read_text())
    assert verdicts and all(v["status"] in ("held", "did not hold", "not evaluated") for v in verdicts)
    # the report's data table shows the manifest's rocks and scanners in their splits
    tables = {p.stem: p for p in runs[-1].parent.rglob("data_splits*")}
    assert tables, f"no data_splits table in {sorted(p.name for p in runs[-1].parent.rglob('*'))}"
    text = next(iter(tables.values())).read_text()
    assert "wacke" in text and "tomcat" in text and "berea" in text
