"""The HTML export as a report view: no code, no stderr, no widget views, no absolute paths."""

import os
import sys

import nbformat

from labkit.reports.html import export_report_html, path_replacements, report_view, scrub_paths
from labkit.runner import export_html
from tests.foundation.reports_toys import CODE_MARKER, STDERR_TEXT, executed_notebook, toy_report


def test_export_keeps_prose_figures_and_tables_and_drops_code_stderr_and_widgets(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    html = export_report_html(executed_notebook(folder)).read_text()
    assert "prose" in html and "<table>" in html and "data:image/png;base64," in html
    assert CODE_MARKER not in html and "toy_code_marker" not in html  # inputs excluded
    assert "preset = " not in html  # the parameters cell too
    assert STDERR_TEXT.strip() not in html
    assert "0/4 [00:00" not in html  # a progress widget's text fallback
    assert "PosixPath" not in html  # a cell that only echoed a path
    assert "grid toy: 4 of 4 tasks done" in html  # stdout stays


def test_export_leaves_no_absolute_path(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    html = export_report_html(executed_notebook(folder)).read_text()
    assert str(tmp_path) not in html and "/somewhere/" not in html
    assert "files in x.csv" in html  # a file in the report folder reads as its name


def test_scrub_paths_replaces_whole_components_only(tmp_path):
    folder = tmp_path / "reports" / "alpha"
    pairs = path_replacements(folder)
    assert scrub_paths(f"{folder}/fig.png and {folder}", pairs) == "fig.png and ."
    assert scrub_paths(f"{folder}-old/x", pairs) == f"{folder}-old/x"  # a sibling folder is not this folder
    assert scrub_paths(f"{sys.prefix}/lib/x.py", pairs) == "<env>/lib/x.py"
    assert scrub_paths("/work/a/reports/.staging/alpha-1a2b3c4d/fig.png", pairs) == "./fig.png"
    assert scrub_paths(os.path.expanduser("~") + "/data/x.tif", pairs) in ("~/data/x.tif", "data/x.tif")


def test_a_folder_moved_by_an_environment_variable_is_named_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CHECKPOINTS", str(tmp_path / "ckpt"))
    pairs = path_replacements(None)
    assert scrub_paths(f"{tmp_path}/ckpt/enc.safetensors", pairs) == "$LABKIT_CHECKPOINTS/enc.safetensors"


def test_report_view_does_not_change_the_executed_notebook(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    path = executed_notebook(folder)
    nb = nbformat.read(path, as_version=4)
    view = report_view(nb)
    assert len(nb.cells[2].outputs) == 5 and len(view.cells[2].outputs) == 2
    assert nbformat.read(path, as_version=4) == nb


def test_the_runner_exports_the_view_and_writes_the_study_readme_before_publishing(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    target = export_html(executed_notebook(folder))
    assert target == folder / "01_alpha.html" and CODE_MARKER not in target.read_text()
    readme = (folder / "README.md").read_text()
    assert "[01_alpha.html](01_alpha.html)" in readme and "![line](line.png)" in readme


def test_a_table_names_no_machine_path_and_a_warning_is_one_short_line(tmp_path, monkeypatch):
    import warnings as _warnings
    from pathlib import Path

    import pandas as pd

    from labkit.core.paths import repo_root
    from labkit.reports import writer

    df = pd.DataFrame(
        {"file": [str(repo_root() / "checkpoints" / "x.safetensors"), str(Path.home() / "d")], "n": [1, 2]}
    )
    clean = writer._without_machine_paths(df, tmp_path)
    assert clean["file"].tolist() == ["checkpoints/x.safetensors", "~/d"] and clean["n"].tolist() == [1, 2]
    line = writer._short_warning(
        _warnings.WarningMessage("no pixel of class 'x'", UserWarning, "/tmp/ipykernel_1/2.py", 1).message,
        UserWarning,
        "/tmp/ipykernel_1/2.py",
        1,
    )
    assert line == "UserWarning: no pixel of class 'x'\n"
