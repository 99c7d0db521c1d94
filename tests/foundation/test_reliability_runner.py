"""Issue 17, runner and files: explicit null through ``labkit reproduce`` (5), the one-line error summary (9),
concurrent publishing (12), umask (13), stale staging folders (14), printed paths (15)."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.core.atomic import atomic_write_text, publish_dir
from labkit.core.checkpoints import save_checkpoint
from labkit.runner import clean_stale_staging, error_summary, reproduce, run_study

TOY_SPEC = """
name: {name}
title: Toy study {name}
notebook: {notebook}
headline: score
params:
  seeds: {{type: "list[int]", help: seeds, value: [0, 1, 2]}}
  n: {{type: int, min: 1, help: a number, presets: {{smoke: 1, default: 2, paper: 3}}}}
  fail: {{type: bool, value: false, help: raise inside the notebook}}
  threads:
    type: int
    min: 1
    nullable: true
    help: torch threads (null is torch's default)
    presets: {{smoke: 1, default: 1, paper: null}}
"""

CELLS = [
    (
        "code",
        'preset = "default"  # preset\nseeds = None  # seeds\nn = None  # n\nfail = None  # fail\n'
        "threads = None  # threads",
        ["parameters"],
    ),
    (
        "code",
        "import os\nimport pandas as pd\nimport labkit\nfrom labkit.reports import Report\n"
        "cfg = labkit.configure('{name}', preset, globals())\nreport = Report(cfg)\n"
        "print('writing to', report.path)\nprint('working in', os.getcwd())",
        [],
    ),
    (
        "code",
        "if cfg.fail:\n    raise RuntimeError('the toy failed on purpose\\nwhile reading ' + str(report.path / "
        "'tile_007.tif') + '\\nsee the log')\n"
        "report.table('numbers', pd.DataFrame({{'n': [cfg.n], 'threads': [str(cfg.threads)]}}))\n"
        "report.metrics(score=cfg.n * 10)",
        [],
    ),
    ("code", "report.finalize()", []),
]


def write_toy(folder: Path, name: str, notebook: str):
    (folder / "specs").mkdir(exist_ok=True)
    (folder / "notebooks").mkdir(exist_ok=True)
    (folder / "specs" / f"{name}.yaml").write_text(TOY_SPEC.format(name=name, notebook=notebook))
    nb = nbformat.v4.new_notebook()
    for _kind, source, tags in CELLS:
        cell = nbformat.v4.new_code_cell(source.format(name=name))
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "notebooks" / notebook)


@pytest.fixture
def toys(tmp_path, monkeypatch):
    write_toy(tmp_path, "alpha", "01_alpha.ipynb")
    for key, sub in (
        ("LABKIT_SPECS", "specs"),
        ("LABKIT_NOTEBOOKS", "notebooks"),
        ("LABKIT_REPORTS", "reports"),
        ("LABKIT_RUNS", "runs"),
        ("LABKIT_ROOT", ""),
    ):
        monkeypatch.setenv(key, str(tmp_path / sub) if sub else str(tmp_path))
    return tmp_path


def quiet(*args, **kwargs):
    return reproduce(*args, progress=False, log=lambda *_: None, **kwargs)


# ---- 5: -p NAME null ----------------------------------------------------------------------------


def test_reproduce_with_an_explicit_null(toys):
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    manifest = json.loads((toys / "reports" / "alpha" / "manifest.json").read_text())
    assert manifest["params"]["threads"] == 1
    result = quiet(["alpha"], preset="default", overrides=[("threads", "null")])[0]
    assert result.status == "ok"  # not skipped: null is a different value from the preset's 1
    manifest = json.loads((toys / "reports" / "alpha" / "manifest.json").read_text())
    assert manifest["params"]["threads"] is None
    assert "None" in (toys / "reports" / "alpha" / "numbers.md").read_text()


# ---- 9: the run summary -------------------------------------------------------------------------


def test_error_summary_keeps_type_and_the_line_naming_a_file():
    import papermill

    long_tail = "x" * 300
    exc = papermill.PapermillExecutionError(
        3,
        3,
        "load()",
        "DataError",
        f"4 pages differ in size\n  in /data/scan/volume.tif: pages 16x16 and 20x20\n{long_tail}",
        ["Traceback..."],
    )
    summary = error_summary(exc)
    assert summary.startswith("DataError: 4 pages differ in size")
    assert "/data/scan/volume.tif" in summary and long_tail not in summary
    assert error_summary(ValueError("bad weights.safetensors\nmore")) == "ValueError: bad weights.safetensors"
    assert error_summary(EOFError()) == "EOFError"


def test_a_failed_run_reports_type_first_line_and_file(toys):
    result = quiet(["alpha"], preset="default", overrides=[("fail", "true")], force=True)[0]
    assert result.status == "failed"
    assert result.message.startswith("RuntimeError: the toy failed on purpose")
    assert "tile_007.tif" in result.message and "see the log" not in result.message
    assert ".failed/alpha" in result.message and str(toys) not in result.message


def test_the_summary_of_a_failed_run_shows_its_whole_error_message(toys):
    from labkit.runner import summary_table

    result = quiet(["alpha"], preset="default", overrides=[("fail", "true")], force=True)[0]
    text = summary_table([result])
    assert "alpha failed with:\nRuntimeError: the toy failed on purpose\nwhile reading" in text
    assert "tile_007.tif\nsee the log" in text and str(toys) not in text


def test_out_gives_each_run_a_fresh_folder_and_says_so(toys):
    from labkit.core.errors import ParameterError

    out = toys / "out"
    assert quiet(["alpha"], preset="smoke", out=out)[0].status == "ok"
    (out / "alpha" / "stale.png").write_bytes(b"x")
    said = []
    (failed,) = reproduce(
        ["alpha"], preset="smoke", out=out, overrides=[("fail", "true")], progress=False, log=said.append
    )
    assert failed.status == "failed"
    assert not (out / "alpha" / "stale.png").exists() and not (out / "alpha" / "README.md").exists()
    assert any("previous run" in line and "replaced" in line for line in said)
    (toys / "a_file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        quiet(["alpha"], preset="smoke", out=toys / "a_file")
    (toys / "other" / "alpha").mkdir(parents=True)
    (toys / "other" / "alpha" / "thesis.tex").write_text("x")  # not a labkit run: never emptied
    with pytest.raises(ParameterError, match="not a labkit run of alpha"):
        quiet(["alpha"], preset="smoke", out=toys / "other")
    assert (toys / "other" / "alpha" / "thesis.tex").exists()


# ---- 12: concurrent publishing ------------------------------------------------------------------

FILES = ("manifest.json", "metrics.json", "claims.json", "table.md")


def _publisher(root: str, who: int, count: int, errors) -> None:
    root = Path(root)
    for i in range(count):
        try:
            staging = root / ".staging" / f"study-{who}-{i}-{os.getpid()}"
            staging.mkdir(parents=True)
            payload = json.dumps({"who": who, "i": i, "pad": "p" * 4000})
            for name in FILES:
                atomic_write_text(staging / name, payload)
            publish_dir(staging, root / "study")
        except Exception as exc:  # noqa: BLE001 - every failure counts
            errors.put(f"publisher {who}: {type(exc).__name__}: {exc}")


def _reader(root: str, stop, errors, reads) -> None:
    final = Path(root) / "study"
    n = 0
    while not stop.is_set():
        try:
            names = set(os.listdir(final))
            if not set(FILES) <= names:
                errors.put(f"partial report: {sorted(names)}")
            for name in FILES:
                json.loads((final / name).read_text())
            n += 1
        except FileNotFoundError as exc:
            errors.put(f"missing: {exc}")
        except (json.JSONDecodeError, OSError) as exc:
            errors.put(f"half-written: {type(exc).__name__}: {exc}")
    reads.put(n)


def test_two_concurrent_publishers_and_a_reader_fault_injection(tmp_path):
    ctx = multiprocessing.get_context("fork")
    root = tmp_path / "reports"
    first = root / ".staging" / "first"
    first.mkdir(parents=True)
    for name in FILES:
        atomic_write_text(first / name, json.dumps({"who": -1}))
    publish_dir(first, root / "study")
    errors, reads, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    reader = ctx.Process(target=_reader, args=(str(root), stop, errors, reads))
    reader.start()
    publishers = [ctx.Process(target=_publisher, args=(str(root), who, 150, errors)) for who in (0, 1)]
    for p in publishers:
        p.start()
    for p in publishers:
        p.join(timeout=240)
    stop.set()
    reader.join(timeout=30)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert reads.get(timeout=5) > 10  # the reader really read while the publishers ran
    assert sorted(os.listdir(root / "study")) == sorted(FILES)
    assert not [p for p in (root / ".staging").iterdir() if p.is_dir()]  # every old report moved out
    assert len(list((root / ".trash").iterdir())) >= 1  # kept a moment for readers, then purged
    last = root / ".staging" / "last"
    last.mkdir()
    for name in FILES:
        atomic_write_text(last / name, "{}")
    publish_dir(last, root / "study", grace=0)
    assert len(list((root / ".trash").iterdir())) <= 1


def _run_toy(env: dict, n: int, queue) -> None:
    os.environ.update(env)
    result = run_study("alpha", "smoke", {"n": n}, force=True, progress=False, publish=True)
    queue.put((result.status, result.message))


def test_two_runs_of_one_study_finishing_together_both_publish(toys):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    env = {
        k: os.environ[k] for k in ("LABKIT_SPECS", "LABKIT_NOTEBOOKS", "LABKIT_REPORTS", "LABKIT_RUNS", "LABKIT_ROOT")
    }
    procs = [ctx.Process(target=_run_toy, args=(env, n, queue)) for n in (3, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    results = [queue.get(timeout=5) for _ in procs]
    assert [status for status, _ in results] == ["ok", "ok"], results
    score = json.loads((toys / "reports" / "alpha" / "metrics.json").read_text())["score"]
    assert score in (30, 40)
    assert not (toys / "reports" / ".failed").exists()


# ---- 13: permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_honour_the_umask(tmp_path, umask, mode):
    import torch

    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "report.md", "hello")
        checkpoint = save_checkpoint(tmp_path / "enc", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert checkpoint.stat().st_mode & 0o777 == mode
    assert (tmp_path / "enc.json").stat().st_mode & 0o777 == mode


# ---- 14: stale staging folders ------------------------------------------------------------------


def test_stale_staging_folders_are_cleaned_unless_locked_or_newer(tmp_path):
    root = tmp_path / ".staging"
    stale, locked, fresh = root / "alpha-stale", root / "alpha-locked", root / "alpha-fresh"
    for folder in (stale, locked, fresh):
        folder.mkdir(parents=True)
        (folder / "notebook.ipynb").write_text("{}")
    (root / "alpha-orphan.lock").write_text("")
    past = time.time() - 3600
    for path in (stale, locked, root / "alpha-orphan.lock"):
        os.utime(path, (past, past))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom filelock import FileLock\n"
            f"lock = FileLock({str(locked) + '.lock'!r}); lock.acquire()\n"
            "print('locked', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.utime(locked, (past, past))
        removed = clean_stale_staging(root, before=time.time() - 60)
    finally:
        holder.kill()
        holder.wait()
    assert removed == [stale]
    assert not stale.exists() and locked.exists() and fresh.exists()
    assert not (root / "alpha-stale.lock").exists() and not (root / "alpha-orphan.lock").exists()


def test_a_publishing_run_removes_a_killed_runs_staging_folder(toys):
    staging = toys / "reports" / ".staging" / "alpha-20260101-000000-deadbeef"
    staging.mkdir(parents=True)
    (staging / "01_alpha.ipynb").write_text("{}")
    past = time.time() - 600
    os.utime(staging, (past, past))
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    assert not staging.exists()
    assert not list((toys / "reports" / ".staging").iterdir())  # its own folder and lock are gone too


def test_a_run_leaves_another_runs_fresh_lock_alone(toys):
    # another run starting now: its lock file exists a moment before it holds it; a cleaner that took it then
    # failed that run (two runs of one study starting together)
    root = toys / "reports" / ".staging"
    root.mkdir(parents=True)
    fresh = root / "alpha-20991231-000000-0123abcd.lock"
    fresh.write_text("")
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    assert fresh.exists()


# ---- 15: printed paths --------------------------------------------------------------------------


def test_printed_paths_are_relative_to_the_project_and_name_the_published_folder(toys):
    assert quiet(["alpha"], preset="default")[0].status == "ok"
    folder = toys / "reports" / "alpha"
    executed = nbformat.read(folder / "01_alpha.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "writing to reports/alpha" in printed and "working in notebooks" in printed
    for text in (printed, (folder / "01_alpha.html").read_text(), json.dumps(executed.metadata)):
        assert ".staging" not in text and str(toys) not in text
