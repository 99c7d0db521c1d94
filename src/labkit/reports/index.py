"""``reports/README.md``: every published study at a glance, then each study's claims, in one page.

Rebuilt by ``labkit reproduce`` after a study is published. ``python -m labkit.reports.index [ROOT]``
rebuilds it by hand, together with each study folder's ``README.md`` and its HTML report view (from the
executed notebook in the folder), e.g. after merging reports produced by an older kit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labkit.core.atomic import atomic_write_text
from labkit.core.paths import reports_root
from labkit.reports.summary import (
    RULE_TEXT,
    cell,
    claims_table,
    commit_text,
    html_export,
    main_figure,
    read_study,
    run_on,
    seeds_text,
    study_summary_rows,
    wall_text,
    write_study_readme,
)

THUMBNAIL_WIDTH = 360
study_summary = read_study  # the name this module used to export

INTRO = [
    "# labkit reports",
    "",
    "The latest published run of every study (preset `default`), rebuilt by `labkit reproduce`. Each study's",
    "folder opens on its own `README.md` (what was run, the main figure, the claims); the HTML is the executed",
    "notebook as a report (prose, figures, tables; no code). mIoU and IoU are fractions in [0, 1] throughout;",
    "a difference is in the same unit.",
    "",
    "**Claims.** " + RULE_TEXT,
    "",
]


def _studies(root: Path) -> list[dict]:
    if not root.is_dir():
        return []
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [s for s in (read_study(p) for p in folders) if s]


def render_index(root: Path | None = None) -> str:
    root = Path(root) if root else reports_root()
    studies = _studies(root)
    lines = list(INTRO)
    if not studies:
        return "\n".join(lines + ["No study has been published yet: run `labkit reproduce`.", ""])
    lines += [
        "| study | preset | seeds | headline | what the headline means | held / did not hold / inconclusive / "
        "not evaluated | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in study_summary_rows(studies):
        lines.append("| " + " | ".join(row) + " |")
    for s in studies:
        m, name = s["manifest"], s["name"]
        link = s["folder"].name
        lines += ["", f"## {cell(m.get('title', name))}", ""]
        html = html_export(s)
        figure = main_figure(s)
        links = [f"[report]({link}/README.md)"]
        if html:
            links.append(f"[executed notebook (HTML)]({link}/{html})")
        links.append(f"[claims.json]({link}/claims.json)")
        lines += [
            f"`{name}`: preset `{m.get('preset')}`, seeds {seeds_text(m.get('seeds'))}, "
            f"{wall_text(m)}; run {run_on(m)}; commit {commit_text(m)}. " + " · ".join(links),
            "",
        ]
        if figure:
            lines += [
                f'<a href="{link}/{figure}"><img src="{link}/{figure}" alt="{figure[:-4]}" '
                f'width="{THUMBNAIL_WIDTH}"></a>',
                "",
            ]
        lines += claims_table(s["claims"])
    return "\n".join(lines) + "\n"


def write_index(root: Path | None = None, study_readmes: bool = True) -> Path:
    """Write ``reports/README.md``; also each study folder's ``README.md`` where it is missing."""
    root = Path(root) if root else reports_root()
    root.mkdir(parents=True, exist_ok=True)
    if study_readmes:
        for s in _studies(root):
            if not (s["folder"] / "README.md").exists():
                write_study_readme(s["folder"])
    return atomic_write_text(root / "README.md", render_index(root))


def refresh(root: Path | None = None) -> Path:
    """Rebuild every study folder's HTML report view and ``README.md``, then the index."""
    from labkit.reports.html import export_report_html

    root = Path(root) if root else reports_root()
    for s in _studies(root):
        for notebook in sorted(s["folder"].glob("*.ipynb")):
            export_report_html(notebook)
        write_study_readme(s["folder"])
    return write_index(root)


def _main(argv: list[str]) -> int:
    target = refresh(Path(argv[0]) if argv else None)
    print(f"rebuilt {target} and each study's README.md and HTML view")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
