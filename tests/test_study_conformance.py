"""One conformance suite for every study, as scikit-learn's ``check_estimator`` is for estimators.

Each study is a package of the same files (``labkit.studies.base``'s docstring): its face exposes the protocol;
its grid tasks import nothing above them, so that an edit to a table, a figure or a claim never recomputes a
grid; every table and figure renders from a smoke run; a second run computes nothing; every arm that could not
run says what to provide.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import labkit
from labkit.core.grid import TASK_ID_ATTRIBUTE, code_modules
from labkit.studies.base import Arm, Runs, Study

STUDIES = ["dinov2_microct", "noisy_label_pretraining", "ssl_industrial", "sar_transfer", "farcluss"]
FILES = ("data", "tasks", "experiment", "tables", "figures", "claims")
ABOVE_TASKS = ("experiment", "tables", "figures", "claims")
STUDIES_DIR = Path(labkit.__file__).parent / "studies"

pytestmark = pytest.mark.parametrize("name", STUDIES)


def _face(name):
    return importlib.import_module(f"labkit.studies.{name}")


def test_the_study_is_a_package_of_the_same_files(name):
    folder = STUDIES_DIR / name
    missing = [f"{f}.py" for f in (*FILES, "__init__") if not (folder / f"{f}.py").is_file()]
    assert not missing, f"studies/{name}/ lacks {', '.join(missing)}"


def test_the_face_exposes_the_protocol(name):
    study = _face(name)
    assert isinstance(study, Study), f"{name} lacks one of NAME, ARMS, data, run, claims, headline"
    assert study.NAME == name
    assert study.ARMS and all(isinstance(arm, Arm) for arm in study.ARMS)
    assert len({arm.name for arm in study.ARMS}) == len(study.ARMS), "arm names repeat"
    assert study.tables.__name__ == f"labkit.studies.{name}.tables"
    assert study.figures.__name__ == f"labkit.studies.{name}.figures"


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = f"labkit.studies.{path.parent.name}" + (f".{base}" if base else "")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def test_the_tasks_import_nothing_above_them(name):
    above = {f"labkit.studies.{name}.{f}" for f in ABOVE_TASKS} | {"labkit.reports", "labkit.runner", "labkit.cli"}
    imported = _imported_modules(STUDIES_DIR / name / "tasks.py")
    bad = sorted(m for m in imported if any(m == a or m.startswith(a + ".") for a in above))
    assert not bad, f"studies/{name}/tasks.py imports {bad}"


def test_each_floor_imports_only_the_floors_below_it(name):
    # data <- tasks <- experiment <- tables, figures <- claims <- __init__
    above = {"data": ABOVE_TASKS + ("tasks",), "experiment": ("tables", "figures", "claims"), "tables": ("claims",)}
    above["figures"] = above["tables"]
    for module, higher in above.items():
        imported = _imported_modules(STUDIES_DIR / name / f"{module}.py")
        bad = sorted(
            m
            for m in imported
            for h in higher
            if m == f"labkit.studies.{name}.{h}" or m.startswith(f"labkit.studies.{name}.{h}.")
        )
        assert not bad, f"studies/{name}/{module}.py imports {bad}, above it"


def test_an_edit_to_a_table_figure_or_claim_leaves_every_grid_fingerprint_unchanged(name):
    # a task's fingerprint covers the code of these modules and nothing else
    reached = set(code_modules(f"labkit.studies.{name}.tasks"))
    above = {f"labkit.studies.{name}.{f}" for f in ABOVE_TASKS}
    assert not reached & above, f"the grid tasks' cache key covers {sorted(reached & above)}"
    assert not {m for m in reached if m.startswith(("labkit.reports", "labkit.runner", "labkit.cli"))}
    assert "labkit.studies.base" not in reached, "the study base is not part of what a task computes"


def test_every_grid_task_has_a_stable_id_of_its_study(name):
    tasks = importlib.import_module(f"labkit.studies.{name}.tasks")
    ids = [
        getattr(fn, TASK_ID_ATTRIBUTE)
        for _, fn in inspect.getmembers(tasks, inspect.isfunction)
        if fn.__module__ == tasks.__name__ and hasattr(fn, TASK_ID_ATTRIBUTE)
    ]
    assert ids, f"studies/{name}/tasks.py defines no @grid_task"
    assert all(i.startswith(f"{name}/") for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_a_grid_worker_importing_the_tasks_imports_no_plotting(name):
    above = tuple(f"labkit.studies.{name}.{f}" for f in ABOVE_TASKS)
    code = (
        f"import sys, labkit.studies.{name}.tasks; "
        f"print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'labkit.reports')) or m in {above!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


# ----------------------------------------------------------------------------- one smoke run, then again


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """{study: (cfg, data, first Runs, second Runs)} at ``smoke``, on a cache of its own."""
    return {}


def _smoke(name, smoke_runs, tmp_path_factory, monkeypatch):
    if name not in smoke_runs:
        root = tmp_path_factory.mktemp(name)
        for var, sub in (("LABKIT_CACHE", "cache"), ("LABKIT_RUNS", "runs"), ("LABKIT_CHECKPOINTS", "ckpt")):
            monkeypatch.setenv(var, str(root / sub))
        study = _face(name)
        cfg = labkit.configure(name, "smoke", {})
        data = study.data(cfg)
        first = study.run(cfg, data)
        second = study.run(cfg, data)
        smoke_runs[name] = (study, cfg, data, first, second)
    return smoke_runs[name]


def test_a_second_run_computes_no_task_and_gives_the_same_tables(name, smoke_runs, tmp_path_factory, monkeypatch):
    study, cfg, data, first, second = _smoke(name, smoke_runs, tmp_path_factory, monkeypatch)
    assert isinstance(first, Runs) and first.grids, "run() must gather its grid runs into Runs.grids"
    assert first.computed > 0
    assert second.computed == 0, second.grids
    assert set(first.tables) == set(second.tables)


def _call(fn, study, cfg, data, runs):
    available = {"runs": runs, "cfg": cfg, "data": data}
    params = inspect.signature(fn).parameters
    required = [
        p for p in params.values() if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    unknown = [p.name for p in required if p.name not in available]
    assert not unknown, f"{fn.__module__}.{fn.__name__} needs {unknown}: tables and figures take runs, cfg or data"
    return fn(**{p.name: available[p.name] for p in required})


def _public_functions(module):
    return [
        fn
        for fname, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == module.__name__ and not fname.startswith("_")
    ]


def test_every_table_renders_from_a_smoke_run(name, smoke_runs, tmp_path_factory, monkeypatch):
    import pandas as pd

    study, cfg, data, runs, _ = _smoke(name, smoke_runs, tmp_path_factory, monkeypatch)
    functions = _public_functions(study.tables)
    assert functions
    for fn in functions:
        table = _call(fn, study, cfg, data, runs)
        assert isinstance(table, pd.DataFrame), f"{fn.__name__} returned {type(table).__name__}"


def test_every_figure_renders_from_a_smoke_run(name, smoke_runs, tmp_path_factory, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    study, cfg, data, runs, _ = _smoke(name, smoke_runs, tmp_path_factory, monkeypatch)
    functions = _public_functions(study.figures)
    assert functions
    for fn in functions:
        figure = _call(fn, study, cfg, data, runs)
        # None only where a figure's input is optional (a real sample absent from this machine)
        assert figure is None or isinstance(figure, Figure), f"{fn.__name__} returned {type(figure).__name__}"
        plt.close("all")


def test_claims_and_headline_read_the_runs(name, smoke_runs, tmp_path_factory, monkeypatch):
    from labkit.core.claims import Claim, judge

    study, cfg, data, runs, _ = _smoke(name, smoke_runs, tmp_path_factory, monkeypatch)
    claims = study.claims(cfg, runs)
    assert claims and all(isinstance(c, Claim) for c in claims)
    for claim in claims:
        verdict = judge(claim, runs.tables)
        assert verdict["status"] in ("held", "did not hold", "inconclusive", "not evaluated")
    headline = study.headline(runs)
    spec = labkit.core.params.load_spec(name)
    assert spec.headline in headline


def test_every_unavailable_arm_says_what_to_provide(name, smoke_runs, tmp_path_factory, monkeypatch):
    study, cfg, data, runs, _ = _smoke(name, smoke_runs, tmp_path_factory, monkeypatch)
    parameters = set(cfg.keys())
    for arm, reason in runs.unavailable.items():
        names_parameter = any(p in reason for p in parameters)
        names_file = any(word in reason for word in ("file", "folder", "LABKIT_WEIGHTS_DIR", ".safetensors", ".pth"))
        assert names_parameter or names_file, f"{name}: arm {arm}'s reason names no parameter or file: {reason}"
