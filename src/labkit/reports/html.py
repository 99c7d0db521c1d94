"""The HTML export of an executed study notebook as a report view: prose, figures and tables, no code.

``export_report_html(notebook)`` writes ``<notebook>.html`` beside it with

- code inputs and prompts removed (nbconvert's ``exclude_input``), so a reader sees the prose, the figures
  and the tables in order;
- no stderr stream outputs (library warnings, progress lines) and no widget views (a progress bar has no
  state once the kernel is gone; the grid prints its one-line summary on stdout);
- no absolute paths: the report folder becomes ``.``, the project root is dropped (paths read relative to
  it), a folder moved by a ``LABKIT_*`` variable becomes ``$LABKIT_...``, the Python environment ``<env>``
  and the home folder ``~``.

The executed ``.ipynb`` beside it keeps everything (code, stderr) for whoever needs it.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_PATH_ECHO = re.compile(r"^(Posix|Windows)?Path\(.*\)$", re.S)  # a cell that only echoes a path
_STAGING = re.compile(r"(?:/[^\s'\"<>/]+)*/reports/\.staging/[^\s'\"<>/]+")  # an older run's staging folder
_MOVABLE = ("LABKIT_CHECKPOINTS", "LABKIT_WEIGHTS_DIR", "LABKIT_CACHE", "LABKIT_RUNS", "LABKIT_REPORTS", "LABKIT_ROOT")
_TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "text/latex")


def path_replacements(folder: str | Path | None = None) -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, longest prefix first."""
    from labkit.core.paths import repo_root

    pairs: list[tuple[str, str]] = []
    if folder is not None:
        resolved = Path(folder).resolve()
        pairs += [(str(resolved) + os.sep, ""), (str(resolved), ".")]
        if str(Path(folder).absolute()) != str(resolved):
            pairs += [(str(Path(folder).absolute()) + os.sep, ""), (str(Path(folder).absolute()), ".")]
    moved = [(Path(os.environ[var]), f"${var}") for var in _MOVABLE if os.environ.get(var)]
    for prefix, replacement in [*moved, (repo_root(), ""), (Path(sys.prefix), "<env>"), (Path.home(), "~")]:
        text = str(Path(prefix).resolve())
        if len(text) > 1:  # never strip a bare "/"
            pairs += [(text + os.sep, f"{replacement}/" if replacement else ""), (text, replacement or ".")]
    return sorted(dict.fromkeys(pairs), key=lambda p: -len(p[0]))


def scrub_paths(text: str, replacements: Iterable[tuple[str, str]]) -> str:
    """``text`` with each absolute prefix replaced; a bare prefix only where its path component ends."""
    text = _STAGING.sub(".", text)
    for prefix, replacement in replacements:
        if prefix.endswith(os.sep):
            text = text.replace(prefix, replacement)
        elif prefix in text:
            text = re.sub(re.escape(prefix) + r"(?![\w.\-])", lambda _m, r=replacement: r, text)
    return text


def _scrub(value, replacements):
    if isinstance(value, str):
        return scrub_paths(value, replacements)
    if isinstance(value, list):
        return [_scrub(v, replacements) for v in value]
    return value


def report_view(nb, replacements: Iterable[tuple[str, str]] = ()):
    """A copy of the notebook node without stderr streams and widget views, with paths scrubbed."""
    replacements = list(replacements)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.get("cell_type") == "markdown":
            cell["source"] = _scrub(cell.get("source", ""), replacements)
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                if out.get("name") == "stderr":
                    continue
                out["text"] = _scrub(out.get("text", ""), replacements)
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if WIDGET_VIEW in data:
                    continue
                if (
                    kind == "execute_result"
                    and set(data) == {"text/plain"}
                    and _PATH_ECHO.match("".join(data["text/plain"]).strip())
                ):
                    continue
                for key in _TEXT_KEYS:
                    if key in data:
                        data[key] = _scrub(data[key], replacements)
            elif kind == "error":
                out["traceback"] = [_scrub(line, replacements) for line in out.get("traceback", [])]
                out["evalue"] = _scrub(out.get("evalue", ""), replacements)
            kept.append(out)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)
    papermill = nb.metadata.get("papermill")
    if isinstance(papermill, dict):
        for key in ("input_path", "output_path"):
            if isinstance(papermill.get(key), str):
                papermill[key] = Path(papermill[key]).name
    return nb


def export_report_html(notebook: str | Path, target: str | Path | None = None) -> Path:
    """Write the report view of an executed notebook as HTML (``<notebook>.html`` unless ``target``)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    raw = nbformat.read(notebook, as_version=4)
    replacements = path_replacements(notebook.parent)
    executed_at = (raw.metadata.get("papermill") or {}).get("output_path")
    if isinstance(executed_at, str) and os.path.isabs(executed_at):  # the folder it ran in (a staging folder)
        parent = os.path.dirname(executed_at)
        replacements = sorted(set(replacements) | {(parent + os.sep, ""), (parent, ".")}, key=lambda p: -len(p[0]))
    nb = report_view(raw, replacements)
    quiet = logging.getLogger("labkit.reports.html")  # nbconvert warns on every figure without alt text
    quiet.setLevel(logging.ERROR)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True, log=quiet)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    target = Path(target) if target is not None else notebook.with_suffix(".html")
    from labkit.core.atomic import atomic_write_text

    return atomic_write_text(target, scrub_paths(body, replacements))
