"""Checks of a study folder written by the runner: every table it writes is shown where it is written."""

import json
import re
from pathlib import Path

import nbformat

from labkit.reports.writer import TABLE_CLASS

_SHOWN = re.compile(rf'class="{TABLE_CLASS}" data-table="([^"]+)"')


def tables_shown_in_notebook(notebook: Path) -> set[str]:
    nb = nbformat.read(notebook, as_version=4)
    shown = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            shown |= set(_SHOWN.findall(str(out.get("data", {}).get("text/html", ""))))
    return shown


def assert_every_table_shown(folder: Path) -> None:
    """The manifest's tables all appear, under their names, in the executed notebook and in its HTML view."""
    manifest = json.loads((folder / "manifest.json").read_text())
    written = set(manifest["tables"])
    assert written, f"{folder}: no table written"
    (notebook,) = [p for p in folder.glob("*.ipynb")]
    missing = written - tables_shown_in_notebook(notebook)
    assert not missing, f"{notebook.name}: tables written but not shown: {sorted(missing)}"
    html = notebook.with_suffix(".html")
    missing = written - set(_SHOWN.findall(html.read_text()))
    assert not missing, f"{html.name}: tables written but not shown: {sorted(missing)}"
