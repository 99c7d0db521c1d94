"""Every grid record a study computes at ``smoke``, keyed by grid name and task parameters: the check that a
move of code reproduces what the study computed (issue 25).

    python tests/study_records.py dump farcluss /tmp/farcluss.pkl      # before the move
    python tests/study_records.py compare farcluss /tmp/farcluss.pkl   # after it: equal but for timings

The study's notebook runs in this process (its code cells, ``preset = "smoke"``) with a fresh cache, run folder
and checkpoint folder, and every ``Grid.run`` hands over its tasks and records. Parameters are compared without
absolute paths (where a file lives is not what a task computes); records with ``grid_records.assert_same_records``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "dinov2_microct": "01_dinov2_microct.ipynb",
    "noisy_label_pretraining": "02_noisy_label_pretraining.ipynb",
    "ssl_industrial": "03_ssl_industrial.ipynb",
    "sar_transfer": "04_sar_transfer.ipynb",
    "farcluss": "05_farcluss.ipynb",
}


def collect(study: str) -> dict:
    """{(grid name, canonical params): record} of one smoke run of ``study``'s notebook."""
    import matplotlib

    matplotlib.use("Agg")
    from labkit.core import grid as core_grid

    with tempfile.TemporaryDirectory() as tmp:
        for var, sub in (("LABKIT_CACHE", "cache"), ("LABKIT_RUNS", "runs"), ("LABKIT_CHECKPOINTS", "ckpt")):
            os.environ[var] = str(Path(tmp) / sub)
        found: dict = {}
        original = core_grid.Grid.run

        def run(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            for task, record in zip(result.tasks, result.records):
                params = core_grid._without_locations(core_grid._canonical(dict(task.params)))
                found[self.name, json.dumps(params, sort_keys=True, default=str)] = record
            return result

        core_grid.Grid.run = run
        try:
            notebook = json.loads((ROOT / "notebooks" / NOTEBOOKS[study]).read_text())
            namespace: dict = {"__name__": "__main__"}
            for cell in notebook["cells"]:
                if cell["cell_type"] != "code":
                    continue
                source = "".join(cell["source"])
                exec(compile(source, f"<{study} cell>", "exec"), namespace)
                if "parameters" in cell.get("metadata", {}).get("tags", []):
                    namespace["preset"] = "smoke"
        finally:
            core_grid.Grid.run = original
    return found


def compare(before: dict, after: dict) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from grid_records import assert_same_records

    missing, extra = set(before) - set(after), set(after) - set(before)
    assert not missing and not extra, (
        f"tasks differ: {len(missing)} missing, {len(extra)} new; e.g. {sorted(missing or extra)[:2]}"
    )
    for key in before:
        assert_same_records(before[key], after[key], where=f"{key[0]} ({key[1][:120]})")


if __name__ == "__main__":
    action, study, path = sys.argv[1:4]
    records = collect(study)
    if action == "dump":
        Path(path).write_bytes(pickle.dumps(records))
        print(f"{study}: {len(records)} records in {len({k[0] for k in records})} grids written to {path}")
    else:
        compare(pickle.loads(Path(path).read_bytes()), records)
        print(f"{study}: all {len(records)} records reproduced")
