"""A published study folder read back, and rendered for a reader: its ``README.md`` and the index rows.

Every study folder under ``reports/`` (or a run folder under ``runs/``) holds ``manifest.json``,
``metrics.json``, ``claims.json`` (verdicts of :func:`labkit.core.claims.judge`), its figures (``.png``),
tables (``.md``/``.csv``) and the executed notebook with its HTML export. :func:`write_study_readme` turns
them into a short ``README.md`` (what was run, the main figure, the claims table) so that a link to the
folder opens on something readable; :mod:`labkit.reports.index` builds ``reports/README.md`` from the same
pieces.

Numbers are printed as recorded (mIoU and IoU as fractions in [0, 1], differences in the same unit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.core.atomic import atomic_write_text

STATUSES = ("held", "did not hold", "inconclusive", "not evaluated")  # labkit.core.claims.STATUSES, in order

# What each study's headline number means and which sign favours what. A manifest may carry its own
# ``headline_note``; otherwise this table, then a rule on the name (see :func:`headline_meaning`).
HEADLINE_MEANING: dict[str, str] = {
    "ood_rock_miou_dinov2_linear": "mIoU (0-1) of the DINOv2 linear head on the held-out rock; higher is better",
    "farcluss_gain_over_supervised_lowest_fraction": (
        "mIoU of FARCLUSS minus supervised-only at the fewest labels (0-1 scale); > 0: FARCLUSS ahead"
    ),
    "gain_smallest_k": (
        "mIoU with noisy-label pretraining minus random init at the fewest clean tiles (0-1 scale); "
        "> 0: pretraining helps"
    ),
    "melt_miou_pretrained": "mIoU (0-1) of the pretrained encoder on the melt-season test scene; higher is better",
    "miou_few_labels_mae": "mIoU (0-1) of the MAE-pretrained ViT at the fewest labels; higher is better",
    "defect_ap_few_labels_mae": "defect average precision (0-1) of the MAE-pretrained ViT at the fewest labels; higher is better",
}
_DIFFERENCE_WORDS = ("gain", "diff", "delta", "minus", "improvement", "advantage")

RULE_TEXT = (
    "A claim is *held* when the paired 95 % interval over at least 3 seeds lies past its margin on the claimed "
    "side (every part); it *did not hold* when a part's interval lies wholly below the claim's effect of interest "
    "(the data exclude an effect that matters); it is *inconclusive* when neither, with about how many seeds "
    "would decide it; it is *not evaluated* when a precondition failed or weights or data were missing (the "
    "reason says which)."
)
REASON_CHARS = 220  # a reason in a summary table is cut to one line of about this length
NOTE_CHARS = 600  # a reason shared by several claims, said once below the table


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default


def read_study(folder: str | Path) -> dict[str, Any] | None:
    """The pieces of one study folder (None when it has no readable ``manifest.json``)."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json", None)
    if not isinstance(manifest, dict):
        return None
    claims = read_json(folder / "claims.json", [])
    if not isinstance(claims, list):
        claims = []
    metrics = read_json(folder / "metrics.json", {})
    counts = {s: sum(1 for c in claims if isinstance(c, dict) and c.get("status") == s) for s in STATUSES}
    return {
        "folder": folder,
        "name": manifest.get("study", folder.name),
        "manifest": manifest,
        "claims": [c for c in claims if isinstance(c, dict)],
        "metrics": metrics if isinstance(metrics, dict) else {},
        "counts": counts,
    }


# ----------------------------------------------------------------------------- small formatters


def cell(text: Any) -> str:
    """Text safe inside one Markdown table cell: one line, no pipes."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "/").strip()


def one_line(text: Any, limit: int = REASON_CHARS) -> str:
    """The first line of ``text``, trimmed to about ``limit`` characters, for a summary table."""
    first = next((ln.strip() for ln in str(text or "").splitlines() if ln.strip()), "")
    first = cell(first).rstrip(":").rstrip()
    if len(first) > limit:
        first = first[: limit - 1].rsplit(" ", 1)[0].rstrip(",;") + " …"
    return first


def seconds_text(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def wall_seconds(manifest: Mapping[str, Any]) -> float | None:
    """The run's wall time: the runner's (kernel start to export) when known, else the notebook's."""
    value = manifest.get("runner_wall_seconds", manifest.get("wall_seconds"))
    return value if isinstance(value, (int, float)) else None


def wall_text(manifest: Mapping[str, Any]) -> str:
    """The run's wall time, marked when every grid record came from the cache (the time is then a render's)."""
    text = seconds_text(wall_seconds(manifest))
    runs = manifest.get("grids")
    if isinstance(runs, list) and runs and all(not r.get("computed") and not r.get("failed") for r in runs):
        text += " (all from the cache)"
    return text


def grids_text(manifest: Mapping[str, Any]) -> str:
    """How the run's grid records were obtained, e.g. "56 tasks in 3 grids: 0 computed, 56 read from the cache
    (task time 13.9 min, ...)": a run that only read the cache is fast, and its wall time says nothing of the
    computation. Empty for manifests from before grids were logged."""
    runs = manifest.get("grids")
    if not isinstance(runs, list) or not runs:
        return ""
    # a grid run twice in one kernel (a cell rerun in JupyterLab) counts once: its tasks at most, what was
    # computed in either run
    by_name: dict[str, dict[str, float]] = {}
    for run in runs:
        seen = by_name.setdefault(str(run.get("name")), {"tasks": 0, "computed": 0, "failed": 0, "task_seconds": 0})
        seen["tasks"] = max(seen["tasks"], run.get("tasks", 0))
        seen["computed"] += run.get("computed", 0)
        seen["failed"] = run.get("failed", 0)
        seen["task_seconds"] = max(seen["task_seconds"], run.get("task_seconds", 0))
    tasks = int(sum(g["tasks"] for g in by_name.values()))
    computed = int(min(tasks, sum(g["computed"] for g in by_name.values())))
    failed = int(sum(g["failed"] for g in by_name.values()))
    task_seconds = sum(g["task_seconds"] for g in by_name.values())
    cached = max(0, tasks - computed - failed)
    grids = f"{len(by_name)} grid{'s' if len(by_name) > 1 else ''}"
    text = f"{tasks} tasks in {grids}: {computed} computed, {cached} read from the cache"
    if failed:
        text += f", {failed} failed"
    return text + f" (task time {seconds_text(task_seconds)}, summed over tasks when they were computed)"


def seeds_text(seeds: Any) -> str:
    if isinstance(seeds, list) and seeds:
        if all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            return f"{len(seeds)} ({seeds[0]}-{seeds[-1]})" if len(seeds) > 1 else f"1 ({seeds[0]})"
        return f"{len(seeds)} ({', '.join(map(str, seeds))})"
    return "-"


def headline_meaning(name: str | None, manifest: Mapping[str, Any] | None = None) -> str:
    """What the headline number means, with the sign that favours the claim."""
    if manifest and manifest.get("headline_note"):
        return str(manifest["headline_note"])
    if not name:
        return ""
    if name in HEADLINE_MEANING:
        return HEADLINE_MEANING[name]
    if any(word in name.lower() for word in _DIFFERENCE_WORDS):
        return "a paired difference (first-named arm minus its reference); > 0: the first-named arm is ahead"
    return "a score; higher is better"


def headline_value(study: Mapping[str, Any]) -> str:
    """The headline number as text: signed for differences, ``n/a`` when it was not computed."""
    key = study["manifest"].get("headline_metric")
    value = study["metrics"].get(key) if key else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return "n/a"
    signed = any(word in str(key).lower() for word in _DIFFERENCE_WORDS)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def run_on(manifest: Mapping[str, Any]) -> str:
    """Hardware and date of the run, e.g. ``2026-11-25, 2 CPU cores (x86_64), no GPU``."""
    device = manifest.get("device") or {}
    date = str(manifest.get("started_at") or "")[:10] or "unknown date"
    cores = device.get("cpu_count")
    cpu = f"{cores} CPU cores" if cores else "CPU"
    if device.get("processor"):
        cpu += f" ({device['processor']})"
    gpu = device.get("gpu") if device.get("cuda") else None
    return f"{date}, {cpu}, " + (f"GPU {gpu}" if gpu else "no GPU")


def data_text(manifest: Mapping[str, Any]) -> str:
    """Which data the run read: ``data_source`` and the name (never the full path) of ``data_root``."""
    params = manifest.get("params") or {}
    source = params.get("data_source") if isinstance(params, dict) else None
    if not source:
        return ""
    root = params.get("data_root")
    return f"data `{source}`" + (f" from a folder `{Path(str(root)).name}`" if root else "")


def commit_text(manifest: Mapping[str, Any]) -> str:
    git = manifest.get("git") or {}
    commit = git.get("commit")
    text = f"`{commit[:10]}`" if commit else "unknown commit"
    return text + (" (with uncommitted changes)" if git.get("dirty") else "")


def main_figure(study: Mapping[str, Any]) -> str | None:
    """The study's main figure (file name): the manifest's ``main_figure`` when declared, else its first."""
    folder: Path = study["folder"]
    manifest = study["manifest"]
    names = [manifest.get("main_figure")] + list(manifest.get("figures") or [])
    for name in names:
        if name and (folder / f"{name}.png").is_file():
            return f"{name}.png"
    pngs = sorted(p.name for p in folder.glob("*.png"))
    return pngs[0] if pngs else None


def html_export(study: Mapping[str, Any]) -> str | None:
    htmls = sorted(p.name for p in Path(study["folder"]).glob("*.html"))
    return htmls[0] if htmls else None


def preconditions_text(claim: Mapping[str, Any]) -> str:
    parts = [
        f"{p.get('name')} {'passed' if p.get('passed') else 'failed'}"
        for p in claim.get("preconditions") or []
        if isinstance(p, dict)
    ]
    return ", ".join(parts) or "-"


def status_text(status: Any, claim: Mapping[str, Any] | None = None) -> str:
    text = f"**{status}**" if status == "held" else str(status)
    if status == "inconclusive" and claim is not None:
        seeds = claim.get("seeds_to_decide")
        text += f" (about {seeds} seeds would decide)" if isinstance(seeds, int) else " (over 10,000 seeds to decide)"
    return text


def claims_table(claims: Sequence[Mapping[str, Any]], statements: bool = False, limit: int = REASON_CHARS) -> list[str]:
    """A Markdown claims table; a reason shared by several claims is written once, below the table."""
    if not claims:
        return ["No claims were recorded."]
    reasons = [one_line(c.get("reason", ""), limit) for c in claims]
    shared = [r for i, r in enumerate(reasons) if r and reasons.count(r) > 1 and reasons.index(r) == i]
    notes = {r: f"({chr(ord('a') + i)})" if i < 26 else f"({i + 1})" for i, r in enumerate(shared)}
    head = ["claim", "status"] + (["statement"] if statements else []) + ["preconditions", "reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for claim, reason in zip(claims, reasons, strict=True):
        row = [f"`{cell(claim.get('id', '?'))}`", status_text(claim.get("status"), claim)]
        if statements:
            row.append(cell(claim.get("statement", "")))
        row += [cell(preconditions_text(claim)), f"see {notes[reason]}" if reason in notes else reason or "-"]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        full = {r: one_line(c.get("reason", ""), max(limit, NOTE_CHARS)) for c, r in zip(claims, reasons, strict=True)}
        lines += [f"{mark} {full[reason]}  " for reason, mark in notes.items()]
    return lines


def counts_text(counts: Mapping[str, int]) -> str:
    return " / ".join(str(counts.get(s, 0)) for s in STATUSES)


def study_summary_rows(studies: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """One row per study for the index: link, preset, seeds, headline, its meaning, claim counts, wall time."""
    rows = []
    for s in studies:
        m = s["manifest"]
        key = m.get("headline_metric")
        headline = f"`{cell(key)} = {headline_value(s)}`" if key else "-"
        rows.append(
            [
                f"[{cell(s['name'])}]({s['folder'].name}/README.md)",
                f"`{m.get('preset')}`",
                seeds_text(m.get("seeds")),
                headline,
                cell(headline_meaning(key, m)),
                counts_text(s["counts"]),
                wall_text(m),
            ]
        )
    return rows


# ----------------------------------------------------------------------------- the study README


def render_study_readme(folder: str | Path) -> str:
    """``README.md`` of one study folder: what was run, the main figure, the claims table, the files."""
    study = read_study(folder)
    if study is None:
        raise FileNotFoundError(f"{folder} has no readable manifest.json, so it is not a study report")
    m, folder = study["manifest"], study["folder"]
    key = m.get("headline_metric")
    html = html_export(study)
    figure = main_figure(study)
    lines = [
        f"# {m.get('title', study['name'])}",
        "",
        f"Study `{study['name']}`, preset `{m.get('preset')}`, seeds {seeds_text(m.get('seeds'))}, "
        + (f"{data_text(m)}, " if data_text(m) else "")
        + f"wall time {wall_text(m)}; run {run_on(m)}; commit {commit_text(m)}.",
        "",
    ]
    if grids_text(m):
        lines += [grids_text(m) + ".", ""]
    if html:
        lines += [f"The executed notebook as a report (prose, figures, tables): [{html}]({html}).", ""]
    if key:
        lines += [f"Headline: `{key} = {headline_value(study)}`: {headline_meaning(key, m)}.", ""]
    if figure:
        lines += [f"![{figure[:-4]}]({figure})", ""]
    c = study["counts"]
    lines += [
        "## Claims",
        "",
        f"{c['held']} held, {c['did not hold']} did not hold, {c['inconclusive']} inconclusive, "
        f"{c['not evaluated']} not evaluated. {RULE_TEXT} The evidence of each is in [`claims.json`](claims.json).",
        "",
    ]
    lines += claims_table(study["claims"], statements=True, limit=10_000)
    tables = [t for t in m.get("tables") or [] if (folder / f"{t}.md").is_file()]
    figures = [f for f in m.get("figures") or [] if (folder / f"{f}.png").is_file()]
    lines += ["", "## Files", ""]
    if tables:
        lines += ["Tables: " + ", ".join(f"[{t}]({t}.md)" for t in tables) + ".", ""]
    if figures:
        lines += ["Figures: " + ", ".join(f"[{f}]({f}.png)" for f in figures) + ".", ""]
    lines += [
        "Numbers: [`metrics.json`](metrics.json); parameters, seeds, package versions and device: "
        "[`manifest.json`](manifest.json)."
    ]
    params = m.get("params")
    if isinstance(params, dict) and params:
        lines += ["", "<details><summary>Parameters of this run</summary>", "", "| parameter | value |", "|---|---|"]
        from labkit.reports.html import path_replacements, scrub_paths

        paths = path_replacements(folder)  # a data_root inside the project or the home folder reads relative
        skipped = [k for k in m.get("params_not_applying") or [] if k in params]
        lines += [
            f"| `{cell(k)}` | `{cell(_param_text(v, paths, scrub_paths))}` |"
            for k, v in params.items()
            if k not in skipped
        ]
        if skipped:
            lines += [
                "",
                "Not applying to this run's data (kept in the manifest): " + ", ".join(f"`{k}`" for k in skipped),
            ]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _param_text(value: Any, paths, scrub) -> str:
    """A parameter value for the README; an absolute path outside the project and home reads ``.../<name>``
    (the manifest keeps it whole)."""
    if isinstance(value, str) and Path(value).is_absolute():
        text = scrub(value, paths)
        return json.dumps(text if not Path(text).is_absolute() else f".../{Path(text).name}")
    return scrub(json.dumps(value), paths)


def write_study_readme(folder: str | Path) -> Path:
    """Write ``<folder>/README.md`` (atomically) from the folder's manifest, claims and figures."""
    return atomic_write_text(Path(folder) / "README.md", render_study_readme(folder))
