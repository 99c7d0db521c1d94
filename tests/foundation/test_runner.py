"""The runner on throwaway notebooks: injection, validation, failure isolation, skip-if-unchanged, kills."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.core.errors import NotebookError, ParameterError
from labkit.reports.index import render_index
from labkit.runner import reproduce, summary_table

TOY_SPEC = """
name: {name}
title: Toy study {name}
notebook: {notebook}
headline: score
params:
  seeds:
    type: list[int]
    help: seeds
    presets: {{smoke: [0], default: [0, 1], paper: [0, 1, 2]}}
  n: {{type: int, min: 1, help: a number, presets: {{smoke: 1, default: 2, paper: 3}}}}
  fail: {{type: bool, value: false, help: raise inside the notebook}}
  sleep: {{type: float, min: 0, value: 0.0, help: seconds to wait before finishing}}
"""

CELLS = [
    ("code", 'preset = "default"\nseeds = None\nn = None\nfail = None\nsleep = None', ["parameters"]),
    ("code", "import time\nimport pandas as pd\nimport matplotlib.pyplot as plt\nimport labkit\n"
             "from labkit.reports import Report\n"
             "cfg = labkit.configure('{name}', preset, globals())\nreport = Report(cfg)", []),
    ("markdown", "The toy's table and figure.", []),
    ("code", "if cfg.fail:\n    raise RuntimeError('the toy failed on purpose')\n"
             "report.table('numbers', pd.DataFrame({{'n': [cfg.n], 'seeds': [len(cfg.seeds)]}}))\n"
             "fig, ax = plt.subplots()\nax.plot([0, cfg.n])\nreport.figure('line', fig)\n"
             "report.metrics(score=cfg.n * 10)\n"
             "report.claim('c1', 'n is positive', 'held' if cfg.n > 0 else 'did not hold', {{'n': cfg.n}})\n"
             "report.claim('c2', 'needs weights', 'not evaluated', reason='weights unavailable')\n"
             "open(report.path / 'started.flag', 'w').close()\ntime.sleep(cfg.sleep)", []),
    ("code", "report.finalize()", []),
]


def write_toy(folder: Path, name: str, notebook: str, parameters_cell: bool = True):
    (folder / "specs").mkdir(exist_ok=True)
    (folder / "notebooks").mkdir(exist_ok=True)
    (folder / "specs" / f"{name}.yaml").write_text(TOY_SPEC.format(name=name, notebook=notebook))
    nb = nbformat.v4.new_notebook()
    for kind, source, tags in CELLS:
        source = source.format(name=name)
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        if tags and parameters_cell:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "notebooks" / notebook)


@pytest.fixture
def toys(tmp_path, monkeypatch):
    write_toy(tmp_path, "alpha", "01_alpha.ipynb")
    write_toy(tmp_path, "beta", "02_beta.ipynb")
    monkeypatch.setenv("LABKIT_SPECS", str(tmp_path / "specs"))
    monkeypatch.setenv("LABKIT_NOTEBOOKS", str(tmp_path / "notebooks"))
    monkeypatch.setenv("LABKIT_REPORTS", str(tmp_path / "reports"))
    return tmp_path


def quiet(*args, **kwargs):
    return reproduce(*args, progress=False, log=lambda *_: None, **kwargs)


def test_runs_inject_parameters_publish_and_skip_when_unchanged(toys):
    results = quiet(["alpha"], preset="smoke", overrides=[("n", "4")])
    assert [r.status for r in results] == ["ok"]
    folder = toys / "reports" / "alpha"
    assert json.loads((folder / "metrics.json").read_text())["score"] == 40
    assert {"01_alpha.ipynb", "01_alpha.html", "line.png", "numbers.csv", "numbers.md", "claims.json",
            "manifest.json", "metrics.json"} <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["preset"] == "smoke" and manifest["params"]["n"] == 4 and manifest["seeds"] == [0]
    assert manifest["packages"]["torch"] and "cpu_count" in manifest["device"]
    executed = nbformat.read(folder / "01_alpha.ipynb", as_version=4)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in executed.cells if c.cell_type == "code" for o in c.outputs), "figure not inline"
    index = (toys / "reports" / "README.md").read_text()
    assert "alpha" in index and "score = 40.000" in index and "1 / 0 / 1" in index

    again = quiet(["alpha"], preset="smoke", overrides=[("n", "4")])
    assert again[0].status == "skipped" and again[0].headline_value == 40
    assert quiet(["alpha"], preset="smoke", overrides=[("n", "5")])[0].status == "ok"
    assert quiet(["alpha"], preset="smoke", overrides=[("n", "5")], force=True)[0].status == "ok"


def test_a_failing_study_does_not_stop_the_others_or_clobber_its_last_report(toys):
    assert quiet(["alpha"], preset="smoke")[0].status == "ok"
    before = (toys / "reports" / "alpha" / "metrics.json").read_text()
    results = quiet(preset="smoke", overrides=[("fail", "true")], force=True)
    assert [(r.study, r.status) for r in results] == [("alpha", "failed"), ("beta", "failed")]
    assert "the toy failed on purpose" in results[0].message
    assert (toys / "reports" / "alpha" / "metrics.json").read_text() == before
    assert (toys / "reports" / ".failed" / "alpha" / "01_alpha.ipynb").exists()
    mixed = quiet(["alpha", "beta"], preset="smoke")
    assert [r.status for r in mixed] == ["skipped", "ok"]
    table = summary_table(results)
    assert "failed" in table and "alpha" in table and "beta" in table


def test_parallel_jobs(toys):
    results = quiet(preset="smoke", jobs=2)
    assert [(r.study, r.status) for r in results] == [("alpha", "ok"), ("beta", "ok")]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(studies=["gamma"]), ParameterError, "unknown study 'gamma'"),
    (dict(preset="fast"), ParameterError, "unknown preset 'fast'"),
    (dict(overrides=[("n", "zero")]), ParameterError, "parameter 'n' must be an integer"),
    (dict(overrides=[("n", "0")]), ParameterError, "parameter 'n' must be >= 1"),
    (dict(overrides=[("epochs", "3")]), ParameterError, "no selected study has a parameter 'epochs'"),
])
def test_bad_requests_fail_before_running(toys, kwargs, error, message):
    with pytest.raises(error, match=message):
        quiet(**kwargs)
    assert not (toys / "reports" / "alpha").exists()


def test_notebook_without_parameters_cell_is_named(toys):
    write_toy(toys, "gamma", "03_gamma.ipynb", parameters_cell=False)
    with pytest.raises(NotebookError, match="03_gamma.ipynb: no code cell is tagged 'parameters'"):
        quiet(["gamma"], preset="smoke")


def test_a_killed_run_leaves_the_previous_report_whole(toys):
    assert quiet(["alpha"], preset="smoke")[0].status == "ok"
    folder = toys / "reports" / "alpha"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "reproduce", "alpha", "--preset", "smoke",
                             "--force", "--quiet", "-p", "sleep", "60", "-p", "n", "9"],
                            env=os.environ.copy(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((toys / "reports" / ".staging").glob("alpha-*/started.flag")):
        assert time.time() < deadline and proc.poll() is None, "the run never reached its last cell"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before
    assert json.loads((folder / "metrics.json").read_text())["score"] == 10
    assert "score = 10.000" in render_index(toys / "reports")
