"""Adding seeds after an inconclusive verdict is cheap: a rerun with more seeds reads every task of the seeds it
already ran from the cache and computes only the new seeds' tasks (through the real runner and notebook).

Run on the two studies whose smoke notebooks are fastest; the same grid fingerprints serve the others (a task's
fingerprint holds its own seed, never the list)."""

import json

import pytest

from labkit.runner import reproduce
from tests.report_checks import assert_every_table_shown


@pytest.mark.parametrize("study", ["farcluss", "noisy_label_pretraining"])
def test_more_seeds_reuse_every_cached_seed(study, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    grids = {}
    for name, seeds in (("one", "[0]"), ("two", "[0, 1]")):
        (result,) = reproduce(
            [study],
            preset="smoke",
            overrides=[("seeds", seeds)],
            out=tmp_path / name,
            log=lambda *_: None,
            progress=False,
        )
        assert result.status == "ok", result.message
        manifest = json.loads((tmp_path / name / study / "manifest.json").read_text())
        grids[name] = {g["name"]: g for g in manifest["grids"]}
        assert_every_table_shown(tmp_path / name / study)
    assert grids["one"] and set(grids["one"]) == set(grids["two"])
    for name, first in grids["one"].items():
        second = grids["two"][name]
        assert first["computed"] == first["tasks"] > 0, first
        # every task of seed 0 read back; only seed 1's computed
        assert second["cached"] == first["tasks"], (name, first, second)
        assert second["computed"] == second["tasks"] - first["tasks"] > 0, (name, first, second)
