"""reports/README.md and each study folder's README.md, built from toy published folders."""

import json

from labkit.reports.index import render_index, write_index
from labkit.reports.summary import (
    claims_table,
    grids_text,
    headline_meaning,
    one_line,
    read_study,
    render_study_readme,
)
from tests.foundation.reports_toys import toy_report, toy_verdicts


def _rows(text: str, first_cell: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]


def test_the_judge_gives_the_toy_its_statuses():
    statuses = [v["status"] for v in toy_verdicts()]
    assert statuses == ["held", "did not hold", "inconclusive", "not evaluated", "not evaluated"]


def test_index_has_one_row_per_study_with_preset_seeds_signed_headline_counts_and_wall_time(tmp_path):
    toy_report(tmp_path, "alpha", headline=0.0512)
    toy_report(tmp_path, "beta", headline=-0.25)
    (tmp_path / ".staging").mkdir()  # hidden folders are not studies
    (tmp_path / "notes").mkdir()  # nor folders without a manifest
    text = render_index(tmp_path)
    alpha = _rows(text, "[alpha]")
    beta = _rows(text, "[beta]")
    assert len(alpha) == 1 and len(beta) == 1 and not _rows(text, "[notes]")
    cells = [c.strip() for c in alpha[0].strip("|").split("|")]
    assert cells[0] == "[alpha](alpha/README.md)"
    assert cells[1] == "`default`" and cells[2] == "5 (0-4)"
    assert cells[3] == "`toy_gain_at_fewest = +0.051`"
    assert "> 0" in cells[4]  # the sign is explained
    assert cells[5] == "1 / 1 / 1 / 2"  # held / did not hold / inconclusive / not evaluated
    assert cells[6] == "2.1 min"  # the runner's wall time, in minutes past 90 s
    assert "`toy_gain_at_fewest = -0.250`" in beta[0]


def test_index_gives_each_study_a_thumbnail_links_and_a_short_claims_table(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    (folder / "01_alpha.html").write_text("<html></html>")
    text = render_index(tmp_path)
    assert '<img src="alpha/line.png"' in text  # the first figure, as no main figure is declared
    assert "(alpha/01_alpha.html)" in text and "(alpha/claims.json)" in text
    assert "2026-11-30, 2 CPU cores (x86_64), no GPU" in text  # hardware and date, never "this machine"
    assert "| `ours_beats_base` | **held** | label-limited passed |" in text
    assert "| `base_beats_ours` | did not hold | - | refuted:" in text
    seeds = toy_verdicts()[2]["seeds_to_decide"]
    assert f"| `noisy_beats_base` | inconclusive (about {seeds} seeds would decide) | - | undecided:" in text
    # the reason the two weight-less claims share is written once, below the table
    reason = toy_verdicts()[3]["reason"]
    assert text.count(reason) == 1
    assert text.count("| see (a) |") == 2 and f"(a) {reason}" in text


def test_a_declared_main_figure_wins_and_a_missing_headline_reads_na(tmp_path):
    toy_report(tmp_path, "alpha", headline=None, main_figure="bars")
    text = render_index(tmp_path)
    assert '<img src="alpha/bars.png"' in text and '<img src="alpha/line.png"' not in text
    assert "`toy_gain_at_fewest = n/a`" in text


def test_empty_reports_folder_says_how_to_fill_it(tmp_path):
    assert "labkit reproduce" in render_index(tmp_path)
    assert "labkit reproduce" in render_index(tmp_path / "missing")


def test_write_index_writes_the_index_and_missing_study_readmes_only(tmp_path):
    toy_report(tmp_path, "alpha")
    beta = toy_report(tmp_path, "beta")
    (beta / "README.md").write_text("kept\n")
    target = write_index(tmp_path)
    assert target == tmp_path / "README.md" and "[alpha]" in target.read_text()
    assert (tmp_path / "alpha" / "README.md").read_text().startswith("# Toy study alpha")
    assert (beta / "README.md").read_text() == "kept\n"


def test_study_readme_says_what_was_run_shows_the_main_figure_and_every_claim_in_full(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    (folder / "01_alpha.html").write_text("<html></html>")
    text = render_study_readme(folder)
    assert text.startswith("# Toy study alpha\n")
    assert "preset `default`, seeds 5 (0-4), data `geotiff` from a folder `tiles`, wall time 2.1 min" in text
    assert "![line](line.png)" in text and "[01_alpha.html](01_alpha.html)" in text
    for verdict in toy_verdicts():
        assert f"| `{verdict['id']}` |" in text
    assert "Ours beats the baseline at 1/16 labels" in text  # statements appear in the study's own table
    assert "[numbers](numbers.md)" in text and "`n_steps` | `10`" in text
    assert str(tmp_path) not in render_study_readme(folder)
    assert "1 held, 1 did not hold, 1 inconclusive, 2 not evaluated" in text


def test_study_readme_says_how_many_tasks_came_from_the_cache_so_a_fast_rerender_is_not_read_as_the_cost(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    assert "read from the cache" not in render_study_readme(folder)  # a manifest from before grids were logged
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["grids"] = [
        {"name": "arms", "tasks": 30, "cached": 30, "computed": 0, "failed": 0, "task_seconds": 700.0},
        {"name": "layers", "tasks": 4, "cached": 3, "computed": 1, "failed": 0, "task_seconds": 80.0},
        {"name": "layers", "tasks": 4, "cached": 4, "computed": 0, "failed": 0, "task_seconds": 80.0},
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    expected = "34 tasks in 2 grids: 1 computed, 33 read from the cache (task time 13.0 min"
    assert grids_text(manifest).startswith(expected)
    assert expected in render_study_readme(folder) and "(all from the cache)" not in render_study_readme(folder)
    manifest["grids"][1]["computed"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "wall time 2.1 min (all from the cache)" in render_study_readme(folder)
    assert "2.1 min (all from the cache)" in render_index(tmp_path)


def test_reasons_are_one_line_and_pipes_cannot_break_a_table():
    verdicts = [
        {"id": "a", "status": "not evaluated", "reason": "first | line:\n  1. second line", "preconditions": []}
    ]
    lines = claims_table(verdicts)
    assert len(lines) == 3 and lines[2] == "| `a` | not evaluated | - | first / line |"
    assert one_line("x " * 300, limit=50).endswith("…") and len(one_line("x " * 300, limit=50)) <= 52


def test_headline_meaning_prefers_the_manifest_then_the_name():
    assert headline_meaning("m", {"headline_note": "custom"}) == "custom"
    assert "> 0" in headline_meaning("some_gain_over_x")
    assert "higher is better" in headline_meaning("some_miou")


def test_unreadable_files_do_not_break_the_index(tmp_path):
    folder = toy_report(tmp_path, "alpha")
    (folder / "claims.json").write_text("{not json")
    (folder / "metrics.json").write_text(json.dumps([1, 2]))
    study = read_study(folder)
    assert study["claims"] == [] and study["metrics"] == {}
    assert "0 / 0 / 0" in render_index(tmp_path)
