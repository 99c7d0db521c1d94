"""Study specifications: one declarative YAML per study, its presets and validated parameters.

A spec lives at ``labkit/presets/<study>.yaml``. Each parameter has a type, a help text, optional
``min``/``max``/``choices``/``nullable``, and either one ``value`` for every preset or a
``presets`` mapping. The notebook's ``parameters`` cell picks a preset by name; any parameter the
notebook sets to something other than ``None`` (e.g. papermill ``-p``) overrides the preset.

Values are checked before any work: type, ``min``/``max`` and ``choices`` for a scalar and for every
element of a list; NaN and infinity are never a valid number; a seed is an integer in [0, 2**32); a
weights parameter (``weights``, ``*_weights``, ``*weights_path``) that names a file must name one that
exists. A ``str`` parameter never silently takes a list (``-p encoder '[resnet10t]'`` is an error).

**None, "not set" and an explicit null.** In the notebook's parameters cell ``name = None`` means *not
set*: the preset's value is used. Some parameters document a meaning for null (``threads`` null is
torch's default, ``img_size`` null is the slice size, a null time cap is no cap); an *explicit* null asks
for that meaning and replaces the preset's value. An explicit null is spelled:

- ``labkit reproduce STUDY -p NAME null`` (the YAML null; also ``~``);
- papermill by hand: ``papermill nb.ipynb out.ipynb -p NAME None`` (or ``-p NAME null``, or
  ``-y "NAME: null"``): every value papermill *injects* (its cell tagged ``injected-parameters``) counts,
  None included;
- in JupyterLab: ``NAME = "null"`` in the parameters cell.

The string ``"null"`` is an explicit null only for a parameter that is ``nullable``; for any other it is an
error (or an ordinary string). A name papermill injects that the spec does not know (``-p itertions 3``)
is an error listing the near matches: :func:`configure` tells injected names from ordinary notebook
globals by reading the injected cell from the kernel's input history (IPython's ``In``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import io
import json
import math
import os
import tokenize
from collections.abc import Iterable, Mapping
from functools import cache
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
NULL_TEXT = "null"  # the string that spells an explicit null in a notebook cell or papermill ``-p``
SEED_LIMIT = 2**32  # numpy's and torch's seeds are below this
INT_LIMIT = 2**63  # torch refuses integers beyond int64
WEIGHTS_KEYWORDS = ("random", "pretrained")


def is_seed_name(name: str) -> bool:
    return name in ("seed", "seeds") or name.endswith(("_seed", "_seeds"))


def is_weights_name(name: str) -> bool:
    """Parameters that take ``random``, ``pretrained``, ``labkit:<name>`` or a weights file path."""
    return name == "weights" or name.endswith(("_weights", "weights_path"))


def weights_file_of(value: Any) -> Path | None:
    """The file a weights value names, or None for ``random``/``pretrained``/``labkit:<name>``/null."""
    if not isinstance(value, str) or value in WEIGHTS_KEYWORDS or value.startswith("labkit:") or not value:
        return None
    return Path(value).expanduser()


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
    # the values of other parameters under which this one means anything, e.g. {"data_source": ("simulated",)}
    # for a simulator's knob: a run on other data lists it as not applying instead of showing it as a setting
    applies_when: Mapping[str, tuple] | None = None

    def applies(self, values: Mapping[str, Any]) -> bool:
        return not self.applies_when or all(values.get(k) in allowed for k, allowed in self.applies_when.items())

    def validate(self, value: Any, where: str = "") -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ParameterError naming it."""
        label = f"parameter '{self.name}'{where}"
        if isinstance(value, str) and value.strip().lower() == NULL_TEXT and self.nullable:
            value = None  # an explicit null spelled as text (a notebook cell, papermill -p NAME null)
        if value is None:
            if self.nullable:
                return None
            raise ParameterError(f"{label} may not be None or null ({self.help})")
        if self.type.startswith("list["):
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise ParameterError(f"{label} must be a {self.type}, got {type(value).__name__} {value!r}")
            if not value:
                raise ParameterError(f"{label} must not be an empty list")
            inner = self.type[5:-1]
            items = [self._scalar(v, inner, f"{label} item {i} ({v!r})") for i, v in enumerate(value)]
            repeated = sorted({v for v in items if items.count(v) > 1})
            if is_seed_name(self.name) and repeated:  # a seed counted twice would pair a run with itself
                raise ParameterError(f"{label} lists seed(s) {repeated} more than once: {items}")
            return items
        return self._scalar(value, self.type, label)

    def _scalar(self, value: Any, type_name: str, label: str) -> Any:
        kind = _SCALAR[type_name]
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(f"{label} must be a finite number, got {value!r}")
        if kind is bool:
            if not isinstance(value, bool):
                raise ParameterError(f"{label} must be true or false, got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            ):
                raise ParameterError(f"{label} must be an integer, got {value!r}")
            value = int(value)
            if is_seed_name(self.name) and not 0 <= value < SEED_LIMIT:
                raise ParameterError(f"{label}: a seed must be an integer in [0, 2**32), got {value!r}")
            if abs(value) >= INT_LIMIT:
                raise ParameterError(f"{label} must be below 2**63 in size, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(f"{label} must be a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise ParameterError(f"{label} must be a string, got {type(value).__name__} {value!r}")
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
            # text parameters keep every item as written: YAML would read the split name 1_16 as the number 116
            value = yaml.load(text, Loader=yaml.BaseLoader) if self.type == "list[str]" else _yaml(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"parameter '{self.name}': cannot parse {text!r}: {exc}") from exc
        if self.type == "str" and isinstance(value, (list, dict)):
            raise ParameterError(
                f"parameter '{self.name}' takes one string, got the {type(value).__name__} "
                f"{text!r} (quote it if the brackets are meant literally)"
            )
        if self.type == "str" and not isinstance(value, str) and value is not None:
            value = text  # a number or true/false given to a str parameter is meant as text
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
    # "module:function" checks of the resolved parameters against each other and against the data they name
    # (e.g. a batch larger than the images in data_root), run by resolve: every entry point (notebook,
    # reproduce, plan) refuses bad input before any work. Named in the spec, like an entry point, so that
    # core never imports a study.
    config_checks: tuple[str, ...] = ()

    def preset_values(self, preset: str) -> dict[str, Any]:
        check_preset(preset)
        return {name: p.presets[preset] for name, p in self.params.items()}

    def resolve(self, preset: str, overrides: Mapping[str, Any] | None = None, nulls: Iterable[str] = ()) -> Config:
        """Preset values, then overrides, all validated.

        An override of None means *keep the preset's value*, unless its name is in ``nulls``: then it is an
        explicit null (the parameter's documented meaning of null; an error for a non-nullable one).
        A weights parameter naming a file that does not exist is an error here, before any work.
        """
        values = self.preset_values(preset)
        nulls = set(nulls)
        overrides = dict(overrides or {})
        for name in nulls:
            overrides.setdefault(name, None)
        for name, value in overrides.items():
            if name not in self.params:
                raise ParameterError(unknown_parameter_message(self, name))
            if value is not None or name in nulls:
                values[name] = self.params[name].validate(value, f" of study '{self.name}'")
        for name, value in values.items():
            file = weights_file_of(value) if is_weights_name(name) else None
            if file is not None and not file.exists():
                raise ParameterError(
                    f"parameter '{name}' of study '{self.name}' names the weights file {value!r}, which does not "
                    f"exist (from {os.getcwd()}); give an existing .safetensors/.pth file, pretrained, random or "
                    f"labkit:<name>"
                )
        inapplicable = [name for name, p in self.params.items() if not p.applies(values)]
        cfg = Config(study=self.name, preset=preset, values=values, inapplicable=inapplicable)
        for target in self.config_checks:
            config_check(target, self.source)(cfg)
        return cfg


def config_check(target: str, source: Path | None = None):
    """The function a spec's ``config_checks`` entry ``module:function`` names (it raises ParameterError)."""
    import importlib

    module_name, _, function = target.partition(":")
    where = Path(source).name if source else "a study spec"
    try:
        check = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ParameterError(f"{where}: config_checks names {target!r}, which cannot be imported: {exc}") from exc
    if not callable(check):
        raise ParameterError(f"{where}: config_checks names {target!r}, which is not a function")
    return check


def check_data_root(cfg: Mapping[str, Any], layout: Mapping[str, str], simulated: str = "simulated") -> Path | None:
    """The one ``data_source`` / ``data_root`` rule of every study, before any work: a real source needs an
    existing ``data_root`` folder, and a ``data_root`` given with simulated data is a mistake, not ignored.

    ``layout``: for each real source, what its folder holds (the help text of the ``data/`` module that reads that
    format), quoted in the error. Returns the folder (``None`` for simulated data)."""
    source, root = cfg["data_source"], cfg["data_root"]
    study = getattr(cfg, "study", "<study>")
    if source == simulated:
        if root:
            real = ", ".join(repr(s) for s in layout)
            raise ParameterError(
                f"parameter 'data_root' is {root!r} but data_source is {simulated!r}, which reads no folder: "
                f"set data_source to {real} to read it, or leave data_root unset"
            )
        return None
    help_text = layout.get(source, "the folder of your own data")
    if not root:
        raise ParameterError(
            f"parameter 'data_root' is not set but data_source is {source!r}, which reads {help_text}. Pass its "
            f"folder, e.g. `labkit reproduce {study} -p data_source {source} -p data_root /path/to/folder`"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ParameterError(
            f"parameter 'data_root' is {root!r}, which is not an existing folder (data_source {source!r} reads "
            f"{help_text})"
        )
    return folder


def unknown_parameter_message(spec: StudySpec, name: str) -> str:
    close = difflib.get_close_matches(name, list(spec.params), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"study '{spec.name}' has no parameter '{name}': {hint}"
        f"(known: {', '.join(spec.params)}; see `labkit list {spec.name}`)"
    )


class Config(Mapping):
    """The resolved, validated parameters of one study run; attribute and mapping access."""

    def __init__(self, study: str, preset: str, values: dict[str, Any], inapplicable: Iterable[str] = ()):
        object.__setattr__(self, "study", study)
        object.__setattr__(self, "preset", preset)
        object.__setattr__(self, "_values", dict(values))
        # parameters that mean nothing for this run's data (a simulator's knobs on real data): kept, not shown
        object.__setattr__(self, "inapplicable", tuple(n for n in values if n in set(inapplicable)))

    def applicable(self) -> dict[str, Any]:
        """The parameters that apply to this run (what a report lists as its settings)."""
        return {k: v for k, v in self._values.items() if k not in self.inapplicable}

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

    def _repr_html_(self) -> str:
        """A notebook shows the parameters as a compact two-column table, not one long line."""
        import html

        shown = self.applicable()
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(_short(v))}</code></td></tr>"
            for k, v in shown.items()
        )
        left_out = (
            f"<p>Not applying to this run's data: {', '.join(f'<code>{html.escape(n)}</code>' for n in self.inapplicable)}</p>"
            if self.inapplicable
            else ""
        )
        return (
            f"<details><summary>study <code>{html.escape(self.study)}</code>, preset "
            f"<code>{html.escape(self.preset)}</code>: {len(shown)} parameters</summary>"
            f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>{left_out}</details>"
        )


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        applies_when=_applies_when(raw.get("applies_when"), where),
    )
    for preset, value in presets.items():
        param.validate(value, f" in {source.name} preset '{preset}'")
    return dataclasses.replace(param, presets={p: param.validate(v) for p, v in presets.items()})


def _applies_when(raw: Any, where: str) -> dict[str, tuple] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw:
        raise ParameterError(
            f"{where}: applies_when must map a parameter to its values, e.g. {{data_source: [simulated]}}"
        )
    return {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in raw.items()}


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
    for param in params.values():
        for other, allowed in (param.applies_when or {}).items():
            if other not in params:
                raise ParameterError(
                    f"{Path(source).name}: parameter '{param.name}' applies_when names no parameter '{other}'"
                )
            for value in allowed:
                params[other].validate(value, f" (in applies_when of '{param.name}' in {Path(source).name})")
    return StudySpec(
        name=raw["name"],
        title=raw["title"],
        notebook=raw["notebook"],
        headline=raw["headline"],
        params=params,
        produces=tuple(raw.get("produces") or ()),
        consumes=tuple(raw.get("consumes") or ()),
        source=Path(source),
        config_checks=_config_checks(raw.get("config_checks"), Path(source)),
    )


def _config_checks(raw: Any, source: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    entries = [raw] if isinstance(raw, str) else raw
    if not isinstance(entries, list) or not all(isinstance(e, str) and ":" in e for e in entries):
        raise ParameterError(f"{source.name}: config_checks must list 'module:function' entries, got {raw!r}")
    return tuple(entries)


@cache
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

    Spec parameters found in ``namespace`` with a value other than None override the preset. Values papermill
    injected (see :func:`injected_parameters`) are explicit, None included: an injected None, like the
    string ``"null"``, is an explicit null. An injected name the spec does not know is a ParameterError
    listing the near matches (ordinary notebook globals are never checked).
    """
    spec = load_spec(study)
    check_preset(preset)
    namespace = namespace if namespace is not None else {}
    injected = injected_parameters(namespace)
    unknown = [n for n in injected if n not in spec.params and n != "preset" and not n.startswith("PAPERMILL_")]
    if unknown:
        raise ParameterError(
            "; ".join(unknown_parameter_message(spec, n) for n in unknown) + " (a value papermill injected)"
        )
    overrides = {k: namespace[k] for k in spec.params if k in namespace and namespace[k] is not None}
    nulls = [k for k in injected if k in spec.params and namespace.get(k) is None]
    return spec.resolve(preset, overrides, nulls=nulls)


def _is_injected_cell(source: str) -> bool:
    """Whether ``source`` is a cell papermill wrote: ``# Parameters`` then plain ``name = literal`` lines."""
    lines = source.strip().splitlines()
    if not lines or lines[0].strip() != "# Parameters":
        return False
    try:
        tree = ast.parse(source)
        comments = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    except (SyntaxError, tokenize.TokenError):
        return False
    if len(comments) != 1:  # a hand-written parameters cell carries a help comment per line
        return False
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            return False
        if not _is_literal(node.value):
            return False
    return True


def _is_literal(node: ast.AST) -> bool:
    """A literal as papermill writes it (NaN and infinity are written ``float('nan')``)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float":
        return len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and not node.keywords
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return False
    return True


def injected_parameters(namespace: Mapping[str, Any]) -> list[str]:
    """Names papermill injected into this kernel (its cell tagged ``injected-parameters``), in order.

    The kernel cannot see cell tags, but IPython keeps every executed cell's source in ``In``; papermill's
    cell is ``# Parameters`` followed by ``name = literal`` lines, without the help comments a notebook's own
    parameters cell has. The latest such cell counts. Outside a kernel (no ``In``), nothing was injected.
    """
    history = namespace.get("In") if isinstance(namespace, Mapping) else None
    if not isinstance(history, (list, tuple)):
        return []
    for source in reversed(history):
        if isinstance(source, str) and _is_injected_cell(source):
            return notebook_parameter_names(source)
    return []


def notebook_parameter_names(source: str) -> list[str]:
    """Names assigned at top level in a notebook's parameters cell."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names
