"""The committed reports/ as a reader finds them: every table a study writes is shown in its executed notebook and
its HTML view, every claim has one of the four verdicts (an inconclusive one says how many seeds would decide it),
the index counts all four, and no published file names a path of the machine it ran on."""

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from labkit.core.claims import INCONCLUSIVE, STATUSES
from tests.report_checks import assert_every_table_shown

REPORTS = Path(__file__).resolve().parents[1] / "reports"
STUDIES = sorted(p for p in REPORTS.iterdir() if (p / "manifest.json").is_file()) if REPORTS.is_dir() else []


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_every_table_is_shown_and_every_verdict_is_one_of_four(folder):
    assert_every_table_shown(folder)
    claims = json.loads((folder / "claims.json").read_text())
    for claim in claims:
        assert claim["status"] in STATUSES, (folder.name, claim["id"], claim["status"])
        if claim["status"] == INCONCLUSIVE:
            assert "seeds would decide it" in claim["reason"], (folder.name, claim["id"])
        for part in claim.get("comparisons") or []:
            assert part.get("effect") is not None and part.get("effect_source"), (folder.name, claim["id"])
    readme = (folder / "README.md").read_text()
    assert re.search(r"\d+ held, \d+ did not hold, \d+ inconclusive, \d+ not evaluated", readme), folder.name


def test_the_index_counts_four_verdicts():
    index = (REPORTS / "README.md").read_text()
    assert "held / did not hold / inconclusive / not evaluated" in index
    assert len(re.findall(r"\| \d+ / \d+ / \d+ / \d+ \|", index)) == len(STUDIES)


# a path into some checkout of the kit (another machine's or folder's): /somewhere/kit/checkpoints/...
_CHECKOUT_PATH = re.compile(r"(?<![\w.~$])/(?:[\w.-]+/)+(?:src/labkit|checkpoints|notebooks|\.venv|\.cache)/")


def _machine_prefixes() -> list[str]:
    root = Path(__file__).resolve().parents[1]
    found = {str(root), str(Path.home()), tempfile.gettempdir(), sys.prefix, os.getcwd()}
    return sorted(p for p in found if len(p) > 1)


def test_no_published_file_names_a_machine_path():
    prefixes = _machine_prefixes()
    offenders = []
    for path in REPORTS.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(REPORTS).parts)  # staging, trash: not git's
        if path.is_file() and path.suffix in (".md", ".csv", ".json", ".html", ".ipynb") and not hidden:
            text = path.read_text(errors="ignore")
            offenders += [f"{path.relative_to(REPORTS)}: {p}" for p in prefixes if p + "/" in text]
            offenders += [f"{path.relative_to(REPORTS)}: {m}" for m in set(_CHECKOUT_PATH.findall(text))]
    assert not offenders, offenders
