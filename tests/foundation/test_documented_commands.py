"""Every `labkit` command the README and the guides show parses: its subcommand and options, its studies, and
each `-p NAME VALUE` as that study's parameter (the value read as the CLI reads it). Placeholders in capitals
(STUDY, NAME, VALUE) and angle brackets are the docs' syntax, not commands."""

import re
import shlex
from pathlib import Path

import pytest

from labkit.cli import _preset_from_params, build_parser
from labkit.core.params import list_specs, load_spec

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
GRID_PARAMS = {"executor", "workers", "scheduler", "device"}
_PLACEHOLDER = re.compile(r"\b(STUDY|NAME|VALUES?|P)\b|<[^>]+>|\.\.\.")


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")  # shell line continuations
        for line in text.splitlines():
            for match in re.finditer(r"(?:\.venv/bin/)?\blabkit (?:reproduce|sweep|plan|list)\b[^`|]*", line):
                command = match.group(0).split(" #")[0].strip()
                bare_mention = command.endswith("labkit sweep")  # prose naming the subcommand, not a command
                if not _PLACEHOLDER.search(command) and not bare_mention:
                    found.append((doc.relative_to(ROOT).as_posix(), command))
    return sorted(set(found))


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in COMMANDS])
def test_a_documented_command_parses(doc, command):
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)
    _preset_from_params(args)
    names = {s.name for s in list_specs()}
    studies = getattr(args, "studies", None) or ([args.study] if getattr(args, "study", None) else [])
    assert set(studies) <= names, f"{doc}: unknown study in `{command}`"
    for study in studies or sorted(names):
        spec = load_spec(study)
        for name, value in getattr(args, "param", []):
            if name in GRID_PARAMS and name not in spec.params:
                continue
            assert name in spec.params, f"{doc}: `{command}`: {study} has no parameter '{name}'"
            if args.func.__name__ == "cmd_sweep":
                continue  # a sweep's value is a list of values of the parameter
            spec.params[name].parse_cli(value)
