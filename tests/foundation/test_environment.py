"""environment.yml mirrors pyproject.toml: every dependency present, the same pins, valid specs."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def test_environment_yml_mirrors_pyproject():
    from rattler import MatchSpec

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for item in env["dependencies"]:
        (pip.extend(item["pip"]) if isinstance(item, dict) else conda.append(item))
    for spec in conda:
        MatchSpec(spec)  # raises on an invalid conda spec
    assert any(s.startswith("python=3.11") for s in conda)
    pip_reqs = {Requirement(r).name.lower(): Requirement(r) for r in pip}
    wanted = _pyproject_requirements()
    missing = sorted(set(wanted) - set(pip_reqs))
    assert not missing, f"environment.yml lacks {missing}"
    differ = {
        n: (str(wanted[n].specifier), str(pip_reqs[n].specifier))
        for n in wanted
        if wanted[n].specifier != pip_reqs[n].specifier
    }
    assert not differ, f"pins differ between pyproject and environment.yml: {differ}"


def test_torch_pair_is_pinned_exactly():
    reqs = _pyproject_requirements()
    assert str(reqs["torch"].specifier) == "==2.14.1"
    assert str(reqs["torchvision"].specifier) == "==0.29.1"
