"""Every study notebook: well-formed (thin, clean, parameters matching its spec) and runs under nbval at smoke."""

import ast
import json
import logging
from pathlib import Path

import pytest
from papermill import inspect_notebook

from labkit.core.params import list_specs, notebook_parameter_names
from tests.nbval_run import run_under_nbval

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SPEC_BY_NOTEBOOK = {s.notebook: s for s in list_specs()}


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_every_spec_has_its_notebook():
    missing = [s.notebook for s in list_specs() if not (ROOT / "notebooks" / s.notebook).exists()]
    assert not missing, f"specs name notebooks that do not exist: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_clean_and_matches_its_spec(path):
    nb = json.loads(path.read_text())
    assert path.name in SPEC_BY_NOTEBOOK, f"{path.name} has no study spec in src/labkit/presets/"
    spec = SPEC_BY_NOTEBOOK[path.name]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    names = notebook_parameter_names(_source(tagged[0]))
    assert set(names) == {"preset", *spec.params}, (
        f"{path.name}: parameters cell names {sorted(names)} but the spec has preset + {sorted(spec.params)}"
    )
    for cell in code:
        tree = ast.parse(_source(cell).replace("%", "#"))  # magics are not Python
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name}: defines {defs}; logic belongs in labkit"
        assert not cell.get("outputs"), f"{path.name}: committed with outputs (reports/ holds executed copies)"
    assert nb["metadata"]["kernelspec"]["name"] == "labkit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_help(path, caplog):
    # papermill's parser gives up on a comment holding " = " and drops its help from `papermill --help-notebook`
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = inspect_notebook(str(path))
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    missing = [name for name, p in params.items() if name != "preset" and not p["help"]]
    assert not missing, f"{path.name}: parameters without a comment saying what they mean: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_nbval_at_smoke(path, tmp_path):
    run_under_nbval(path, {"preset": "smoke"}, tmp_path, f"for {path.name}", timeout=600)
