"""Study specifications: one declarative YAML per study, its presets and validated parameters.

A spec lives at ``labkit/presets/<study>.yaml``. Each parameter has a type, a help text, optional
``min``/``max``/``choices``/``nullable``, and either one ``value`` for every preset or a
``presets`` mapping. The notebook's ``parameters`` cell picks a preset by name; any parameter the
notebook sets to something other than ``None`` (e.g. papermill ``-p``) overrides the preset.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from labkit.core.errors import ParameterError
from labkit.core.paths import package_dir

PRESETS = ("smoke", "default", "paper")
PRESET_HELP = {
    "smoke": "CI: seconds per notebook, proves the code runs",
    "default": "a 2-core laptop: minutes per study, large enough that the effects show",
    "paper": "a GPU: the papers' settings",
}
TYPES = ("int", "float", "str", "bool", "list[int]", "list[float]", "list[str]")
_SCALAR = {"int": int, "float": float, "str": str, "bool": bool}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; scientific notation without a dot is a float here."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    __import__("re").compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def specs_dir() -> Path:
    """Study specs (``LABKIT_SPECS`` overrides the package's ``presets/`` folder)."""
    env = os.environ.get("LABKIT_SPECS")
    return Path(env).resolve() if env else package_dir() / "presets"


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    type: str
    help: str
    presets: dict[str, Any]
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    nullable: bool = False

    def validate(self, value: Any, where: str = "") -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ParameterError naming it."""
        label = f"parameter '{self.name}'{where}"
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(f"{label} may not be None ({self.help})")
        if self.type.startswith("list["):
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise ParameterError(f"{label} must be a {self.type}, got {type(value).__name__} {value!r}")
            if not value:
                raise ParameterError(f"{label} must not be an empty list")
            inner = self.type[5:-1]
            return [self._scalar(v, inner, f"{label} item") for v in value]
        return self._scalar(value, self.type, label)

    def _scalar(self, value: Any, type_name: str, label: str) -> Any:
        kind = _SCALAR[type_name]
        if kind is bool:
            if not isinstance(value, bool):
                raise ParameterError(f"{label} must be true or false, got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
                raise ParameterError(f"{label} must be an integer, got {value!r}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(f"{label} must be a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise ParameterError(f"{label} must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"{label} must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ParameterError(f"{label} must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ParameterError(f"{label} must be <= {self.max}, got {value!r}")
        return value

    def parse_cli(self, text: str) -> Any:
        """Parse a command-line value (``-p NAME VALUE``): YAML syntax, so ``[0, 1]`` and ``1e-4`` work."""
        try:
            value = _yaml(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"parameter '{self.name}': cannot parse {text!r}: {exc}") from exc
        if self.type == "str" and not isinstance(value, str) and value is not None:
            value = text
        if self.type == "list[str]" and isinstance(value, str):
            value = [value]
        return self.validate(value)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    name: str
    title: str
    notebook: str
    headline: str
    params: dict[str, Param]
    produces: tuple[dict, ...] = ()
    consumes: tuple[str, ...] = ()  # named labkit checkpoints the study reads: part of its fingerprint
    source: Path | None = None

    def preset_values(self, preset: str) -> dict[str, Any]:
        check_preset(preset)
        return {name: p.presets[preset] for name, p in self.params.items()}

    def resolve(self, preset: str, overrides: Mapping[str, Any] | None = None) -> "Config":
        """Preset values, then overrides (None means: keep the preset's), all validated."""
        values = self.preset_values(preset)
        for name, value in (overrides or {}).items():
            if name not in self.params:
                known = ", ".join(self.params)
                raise ParameterError(f"study '{self.name}' has no parameter '{name}' (known: {known})")
            if value is not None:
                values[name] = self.params[name].validate(value, f" of study '{self.name}'")
        return Config(study=self.name, preset=preset, values=values)


class Config(Mapping):
    """The resolved, validated parameters of one study run; attribute and mapping access."""

    def __init__(self, study: str, preset: str, values: dict[str, Any]):
        object.__setattr__(self, "study", study)
        object.__setattr__(self, "preset", preset)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"study '{self.study}' has no parameter '{name}'") from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; pass overrides to labkit.configure instead")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "preset": self.preset, **self._values}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Config({self.study}@{self.preset}: {inner})"


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ParameterError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    return preset


def _parse_param(study: str, name: str, raw: Mapping, source: Path) -> Param:
    where = f"{source.name}: parameter '{name}'"
    if not isinstance(raw, Mapping):
        raise ParameterError(f"{where} must be a mapping")
    type_name = raw.get("type")
    if type_name not in TYPES:
        raise ParameterError(f"{where} has type {type_name!r}; allowed: {', '.join(TYPES)}")
    if "value" in raw and "presets" in raw:
        raise ParameterError(f"{where} gives both 'value' and 'presets'")
    if "value" in raw:
        presets = {p: raw["value"] for p in PRESETS}
    else:
        presets = dict(raw.get("presets") or {})
        missing = [p for p in PRESETS if p not in presets]
        if missing:
            raise ParameterError(f"{where} has no value for preset(s) {missing}")
    param = Param(
        name=name,
        type=type_name,
        help=str(raw.get("help", "")),
        presets=presets,
        min=raw.get("min"),
        max=raw.get("max"),
        choices=tuple(raw["choices"]) if raw.get("choices") is not None else None,
        nullable=bool(raw.get("nullable", False)),
    )
    for preset, value in presets.items():
        param.validate(value, f" in {source.name} preset '{preset}'")
    return dataclasses.replace(param, presets={p: param.validate(v) for p, v in presets.items()})


# Parameters every study has, with one meaning everywhere; a spec may restate one to change its presets.
COMMON_PARAMS = """
device:
  type: str
  help: where models run; auto takes a CUDA GPU when there is one and says so when there is not
  choices: [auto, cpu, cuda]
  value: auto
executor:
  type: str
  help: how the study's grid of tasks runs; serial in this process, processes on a local pool, dask on a cluster
  choices: [serial, processes, dask]
  value: serial
workers:
  type: int
  help: processes or Dask workers for the grid; null means one per core (a jobqueue cluster scales to this many jobs)
  min: 1
  nullable: true
  value: null
scheduler:
  type: str
  help: Dask scheduler address like tcp://host:8786, or slurm or pbs for a dask-jobqueue cluster from your dask config; null means LABKIT_DASK_SCHEDULER or a local cluster
  nullable: true
  value: null
"""


def parse_spec(source: Path) -> StudySpec:
    try:
        raw = _yaml(Path(source).read_text())
    except yaml.YAMLError as exc:
        raise ParameterError(f"{source}: not valid YAML: {exc}") from exc
    for key in ("name", "title", "notebook", "headline", "params"):
        if key not in (raw or {}):
            raise ParameterError(f"{source}: missing top-level key '{key}'")
    if "preset" in raw["params"]:
        raise ParameterError(f"{source}: 'preset' is reserved and cannot be a parameter")
    params = {name: _parse_param(raw["name"], name, value, Path(source)) for name, value in raw["params"].items()}
    for name, value in _yaml(COMMON_PARAMS).items():
        params.setdefault(name, _parse_param(raw["name"], name, value, Path(source)))
    return StudySpec(
        name=raw["name"],
        title=raw["title"],
        notebook=raw["notebook"],
        headline=raw["headline"],
        params=params,
        produces=tuple(raw.get("produces") or ()),
        consumes=tuple(raw.get("consumes") or ()),
        source=Path(source),
    )


@lru_cache(maxsize=None)
def _all_specs(directory: str) -> dict[str, StudySpec]:
    specs = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        spec = parse_spec(path)
        if spec.name != path.stem:
            raise ParameterError(f"{path}: its name '{spec.name}' must match the file name '{path.stem}'")
        specs[spec.name] = spec
    return specs


def list_specs() -> list[StudySpec]:
    """Every study spec, ordered by notebook file name (the order ``reproduce`` runs them)."""
    return sorted(_all_specs(str(specs_dir())).values(), key=lambda s: s.notebook)


def load_spec(name: str) -> StudySpec:
    specs = _all_specs(str(specs_dir()))
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise ParameterError(f"unknown study '{name}' (known studies: {known})")
    return specs[name]


def configure(study: str, preset: str, namespace: Mapping[str, Any] | None = None) -> Config:
    """Resolve a notebook's parameters: ``labkit.configure("sar_transfer", preset, globals())``.

    Spec parameters found in ``namespace`` with a value other than None override the preset.
    """
    spec = load_spec(study)
    check_preset(preset)
    overrides = {k: namespace[k] for k in spec.params if namespace is not None and k in namespace}
    return spec.resolve(preset, overrides)


def notebook_parameter_names(source: str) -> list[str]:
    """Names assigned at top level in a notebook's parameters cell."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names
