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
from tests.report_checks import assert_every_table_shown

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
    (
        "code",
        "import time\nimport pandas as pd\nimport matplotlib.pyplot as plt\nimport labkit\n"
        "from labkit.reports import Report\n"
        "cfg = labkit.configure('{name}', preset, globals())\nreport = Report(cfg)",
        [],
    ),
    ("markdown", "The toy's table and figure.", []),
    (
        "code",
        "if cfg.fail:\n    raise RuntimeError('the toy failed on purpose')\n"
        "report.table('numbers', pd.DataFrame({{'n': [cfg.n], 'seeds': [len(cfg.seeds)]}}))\n"
        "fig, ax = plt.subplots()\nax.plot([0, cfg.n])\nreport.figure('line', fig)\n"
        "report.metrics(score=cfg.n * 10)\n"
        "from labkit.core.claims import Claim, Compare\n"
        "runs = pd.DataFrame({{'arm': ['a'] * 3 + ['b'] * 3, 'seed': [0, 1, 2] * 2,\n"
        "                     'score': [cfg.n + 0.1, cfg.n + 0.2, cfg.n + 0.15, 0, 0, 0]}})\n"
        "report.claim(Claim('c1', 'n is positive', [Compare('score', a={{'arm': 'a'}}, b={{'arm': 'b'}}, effect=1)]), runs)\n"
        "report.claim(Claim('c2', 'needs weights', [], unavailable='weights unavailable'))\n"
        "open(report.path / 'started.flag', 'w').close()\ntime.sleep(cfg.sleep)\n"
        "import os\n(report.path / 'checkpoint_store.txt').write_text(os.environ.get('LABKIT_RUN_CHECKPOINTS', ''))",
        [],
    ),
    (
        "code",
        "from labkit.core.grid import Grid\n"
        "Grid('toy', 'labkit.core.grid:example_task').product(fixed={{'size': 4, 'steps': 2}}, seed=cfg.seeds)"
        ".run(progress=False)",
        [],
    ),
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
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


def quiet(*args, **kwargs):
    return reproduce(*args, progress=False, log=lambda *_: None, **kwargs)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_runs_inject_parameters_publish_and_skip_when_unchanged(toys):
    results = quiet(["alpha"], preset="default", overrides=[("n", "4")])
    assert [r.status for r in results] == ["ok"]
    folder = toys / "reports" / "alpha"
    assert json.loads((folder / "metrics.json").read_text())["score"] == 40
    assert {
        "01_alpha.ipynb",
        "01_alpha.html",
        "line.png",
        "numbers.csv",
        "numbers.md",
        "claims.json",
        "manifest.json",
        "metrics.json",
    } <= {p.name for p in folder.iterdir()}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["preset"] == "default" and manifest["params"]["n"] == 4 and manifest["seeds"] == [0, 1]
    assert manifest["published"] is True
    assert manifest["packages"]["torch"] and "cpu_count" in manifest["device"]
    (grid,) = manifest["grids"]  # the notebook's one grid run, logged for the report
    assert grid["name"] == "toy" and grid["tasks"] == 2 and grid["cached"] + grid["computed"] == 2
    assert grid["task_seconds"] > 0 and grid["failed"] == 0
    assert "2 tasks in 1 grid:" in (folder / "README.md").read_text()
    from labkit.reports.summary import wall_text

    assert f"wall time {wall_text(manifest)};" in (folder / "README.md").read_text(), "the runner's wall time"
    executed = nbformat.read(folder / "01_alpha.ipynb", as_version=4)
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
    ), "figure not inline"
    assert_every_table_shown(folder)
    index = (toys / "reports" / "README.md").read_text()
    assert "alpha" in index and "score = 40.000" in index and "1 / 0 / 0 / 1" in index

    claims = {c["id"]: c for c in json.loads((folder / "claims.json").read_text())}
    assert claims["c1"]["status"] == "held" and claims["c1"]["rule"] and claims["c1"]["comparisons"][0]["n"] == 3
    assert claims["c2"]["status"] == "not evaluated" and claims["c2"]["reason"] == "weights unavailable"

    again = quiet(["alpha"], preset="default", overrides=[("n", "4")])
    assert again[0].status == "skipped" and again[0].headline_value == 40
    assert quiet(["alpha"], preset="default", overrides=[("n", "5")])[0].status == "ok"
    assert quiet(["alpha"], preset="default", overrides=[("n", "5")], force=True)[0].status == "ok"


def test_other_presets_and_out_go_to_run_folders_and_leave_reports_untouched(toys):
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    before = snapshot(toys / "reports")
    smoke = quiet(["alpha"], preset="smoke", overrides=[("n", "7")])[0]
    assert smoke.status == "ok" and "smoke" in smoke.report
    runs = list((toys / "runs" / "alpha").glob("*-smoke"))
    assert len(runs) == 1 and json.loads((runs[0] / "metrics.json").read_text())["score"] == 70
    assert json.loads((runs[0] / "manifest.json").read_text())["published"] is False
    lines = []
    out = reproduce(["alpha"], "default", [("n", "8")], out=toys / "elsewhere", progress=False, log=lines.append)[0]
    assert out.status == "ok" and (toys / "elsewhere" / "alpha" / "metrics.json").exists()
    # the console gives the reason that applies: at the default preset it is --out, not the preset
    assert any("--out never publishes" in line for line in lines)
    assert not any("published only from the default preset" in line for line in lines)
    assert snapshot(toys / "reports") == before, "a non-published run changed reports/"
    published = quiet(["alpha"], preset="smoke", overrides=[("n", "3")], publish=True)[0]
    assert published.status == "ok"
    assert json.loads((toys / "reports" / "alpha" / "metrics.json").read_text())["score"] == 30


def test_only_a_publishing_run_writes_the_shared_named_checkpoints(toys):
    # a run that does not publish writes the checkpoints it produces into its own folder (issue 31)
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    assert (toys / "reports" / "alpha" / "checkpoint_store.txt").read_text() == ""
    smoke = quiet(["alpha"], preset="smoke")[0]
    (run,) = list((toys / "runs" / "alpha").glob("*-smoke"))
    assert (run / "checkpoint_store.txt").read_text() == str(run / "checkpoints")
    out = quiet(["alpha"], preset="default", out=toys / "elsewhere")[0]
    assert out.status == smoke.status == "ok"
    folder = toys / "elsewhere" / "alpha"
    assert (folder / "checkpoint_store.txt").read_text() == str(folder.resolve() / "checkpoints")


def test_a_notebook_run_by_hand_writes_a_run_folder_not_reports(toys):
    import papermill

    out = toys / "executed.ipynb"
    papermill.execute_notebook(
        str(toys / "notebooks" / "01_alpha.ipynb"),
        str(out),
        parameters={"preset": "smoke"},
        kernel_name="python3",
        progress_bar=False,
    )
    assert not (toys / "reports").exists()
    runs = list((toys / "runs" / "alpha").glob("*-smoke"))
    assert len(runs) == 1 and (runs[0] / "claims.json").exists()
    printed = "".join(
        o.get("text", "") for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs
    )
    assert "This run writes" in printed and "reports/ holds the published default run" in printed
    assert (runs[0] / "checkpoint_store.txt").read_text() == str(runs[0] / "checkpoints")


def test_sweep_runs_the_product_into_a_run_folder_with_a_table(toys):
    from labkit.runner import sweep

    before = snapshot(toys / "reports") if (toys / "reports").exists() else {}
    folder, table = sweep("alpha", {"n": [1, 2]}, preset="smoke", log=lambda *_: None)
    assert list(table["n"]) == [1, 2] and list(table["score"]) == [10, 20] and (table["status"] == "ok").all()
    assert "claim c1" in table and (folder / "sweep.md").exists() and (folder / "sweep.csv").exists()
    assert folder.parent == toys / "runs" / "alpha"
    assert (snapshot(toys / "reports") if (toys / "reports").exists() else {}) == before
    with pytest.raises(ParameterError, match="has no parameter 'm'"):
        sweep("alpha", {"m": [1]}, preset="smoke")


def test_consumed_checkpoints_are_part_of_the_fingerprint(toys):
    spec = toys / "specs" / "alpha.yaml"
    spec.write_text(spec.read_text().replace("headline: score", "headline: score\nconsumes: [toy-encoder]"))
    from labkit.core import params

    params._all_specs.cache_clear()
    assert quiet(["alpha"])[0].status == "ok"
    assert quiet(["alpha"])[0].status == "skipped"
    (toys / "checkpoints").mkdir(exist_ok=True)
    (toys / "checkpoints" / "toy-encoder.safetensors").write_bytes(b"new weights")
    assert quiet(["alpha"])[0].status == "ok", "a rewritten consumed checkpoint must rerun the study"
    params._all_specs.cache_clear()


def test_a_failing_study_does_not_stop_the_others_or_clobber_its_last_report(toys):
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    before = (toys / "reports" / "alpha" / "metrics.json").read_text()
    results = quiet(preset="default", overrides=[("fail", "true")], force=True)
    assert [(r.study, r.status) for r in results] == [("alpha", "failed"), ("beta", "failed")]
    assert "the toy failed on purpose" in results[0].message
    assert (toys / "reports" / "alpha" / "metrics.json").read_text() == before
    assert (toys / "reports" / ".failed" / "alpha" / "01_alpha.ipynb").exists()
    mixed = quiet(["alpha", "beta"], preset="default")
    assert [r.status for r in mixed] == ["skipped", "ok"]
    table = summary_table(results)
    assert "failed" in table and "alpha" in table and "beta" in table


def test_parallel_jobs(toys):
    results = quiet(preset="smoke", jobs=2)
    assert [(r.study, r.status) for r in results] == [("alpha", "ok"), ("beta", "ok")]


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets only")
def test_kernels_talk_over_their_own_unix_sockets_so_parallel_starts_cannot_race_for_a_port():
    # Over TCP a port is picked free and released before the kernel binds it: two kernels starting at once
    # (--jobs 2, pytest-xdist) could take the same one (seen in CI as "ZMQError: Address already in use").
    import asyncio

    from labkit.runner import kernel_manager_class

    async def run_two_kernels_at_once():
        managers = [kernel_manager_class()(kernel_name="python3") for _ in range(2)]
        await asyncio.gather(*(km.start_kernel() for km in managers))
        folders = [Path(km.ip).parent for km in managers]
        try:
            replies = []
            for km in managers:
                client = km.client()
                client.start_channels()
                await client.wait_for_ready(timeout=60)
                replies.append((await client.execute_interactive("x = 1 + 1", timeout=60))["content"]["status"])
                bound = sorted(p.name for p in Path(km.ip).parent.iterdir())
                client.stop_channels()
            return managers, folders, replies, bound
        finally:
            await asyncio.gather(*(km.shutdown_kernel(now=True) for km in managers))

    managers, folders, replies, bound = asyncio.run(run_two_kernels_at_once())
    assert all(km.transport == "ipc" for km in managers) and replies == ["ok", "ok"]
    assert folders[0] != folders[1] and all(len(km.ip) < 90 for km in managers), "one short folder per kernel"
    assert len(bound) >= 5 and all(name.startswith("ipc-") for name in bound), bound
    assert not any(f.exists() for f in folders), "a kernel's socket folder outlived it"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(studies=["gamma"]), ParameterError, "unknown study 'gamma'"),
        (dict(preset="fast"), ParameterError, "unknown preset 'fast'"),
        (dict(overrides=[("n", "zero")]), ParameterError, "parameter 'n' must be an integer"),
        (dict(overrides=[("n", "0")]), ParameterError, "parameter 'n' must be >= 1"),
        (dict(overrides=[("epochs", "3")]), ParameterError, "no selected study has a parameter 'epochs'"),
    ],
)
def test_bad_requests_fail_before_running(toys, kwargs, error, message):
    with pytest.raises(error, match=message):
        quiet(**kwargs)
    assert not (toys / "reports" / "alpha").exists()


def test_notebook_without_parameters_cell_is_named(toys):
    write_toy(toys, "gamma", "03_gamma.ipynb", parameters_cell=False)
    with pytest.raises(NotebookError, match="03_gamma.ipynb: no code cell is tagged 'parameters'"):
        quiet(["gamma"], preset="smoke")


def test_a_killed_run_leaves_the_previous_report_whole(toys):
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    folder = toys / "reports" / "alpha"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labkit.cli",
            "reproduce",
            "alpha",
            "--preset",
            "default",
            "--force",
            "--quiet",
            "-p",
            "sleep",
            "60",
            "-p",
            "n",
            "9",
        ],
        env=os.environ.copy(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not list((toys / "reports" / ".staging").glob("alpha-*/started.flag")):
        assert time.time() < deadline and proc.poll() is None, "the run never reached its last cell"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before
    assert json.loads((folder / "metrics.json").read_text())["score"] == 20
    assert "score = 20.000" in render_index(toys / "reports")
