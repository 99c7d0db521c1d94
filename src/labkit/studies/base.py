"""What every study shares: its arms as rows, its runs as one gathered object, the protocol its face exposes,
and the grid options and regime seeds read from its config once.

A study is a package of the same files in the same floors (``tests/test_study_conformance.py`` checks each):

    data.py        checks the spec cannot express, then simulate or load (``data_source``), splits
    tasks.py       pure, module-level ``@grid_task`` functions; imports nothing above it (its digest is the cache key)
    experiment.py  weights resolved once, the grids, gathered into ``Runs``
    tables.py      functions of ``runs`` (or ``cfg``, ``data``) -> DataFrame
    figures.py     functions of ``runs`` (or ``cfg``, ``data``) -> Figure
    claims.py      the paper's claims in the paper's order, each with its preconditions and effect of interest
    __init__.py    the face: NAME, ARMS, data, run, claims, headline, tables, figures (lazy re-exports)

A notebook then reads the same in every study::

    cfg = labkit.configure(study.NAME, preset, globals()); report = Report(cfg)
    data = study.data(cfg)
    runs = study.run(cfg, data)
    report.table("...", study.tables.some_table(runs)) ...
    report.conclude(study, cfg, runs)
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from labkit.core.arms import Arm, arm_colours, arm_labels  # noqa: F401  (the face of every study uses them)
from labkit.core.grid import Grid, GridResult
from labkit.core.seeding import regime_seeds  # noqa: F401


@dataclass
class Runs:
    """What a study's grids computed, gathered once; every table, figure, claim and headline reads it.

    ``tables``: the tidy tables (the claims judge these by name). ``unavailable``: arm -> a reason a user can act on
    (the parameter or file to provide). ``context``: keyword arguments of the study's ``claims``. ``examples``:
    first-seed objects for figures (a model, example maps). ``grids``: what each grid run did (tasks, cached,
    computed). ``checkpoints``: files written. ``seconds``: wall time of ``run``."""

    tables: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)
    grids: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        """Tasks computed (not read from the cache) by this run's grids."""
        return sum(int(g["computed"]) for g in self.grids)


@runtime_checkable
class Study(Protocol):
    """The face of a study package (its ``__init__``)."""

    NAME: str
    ARMS: tuple[Arm, ...]

    def data(self, cfg) -> Any: ...

    def run(self, cfg, data) -> Runs: ...

    def claims(self, cfg, runs: Runs) -> list: ...

    def headline(self, runs: Runs) -> dict[str, Any]: ...


#: Where each name of the Study protocol lives in a study package (a study's face names only what differs).
FACE = {
    "NAME": "data",
    "ARMS": "data",
    "data": "data",
    "run": "experiment",
    "plan": "experiment",
    "tables": "tables",
    "figures": "figures",
    "claims": "claims",
    "declare_claims": "claims",
    "headline": "claims",
}


def lazy_face(
    package: str, names: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a study's ``__init__``: ``FACE`` updated with ``names`` maps each public
    name to the submodule that defines it, imported on first use, so that a grid worker importing ``tasks`` imports
    no matplotlib.

    A name mapped to the submodule of the same name is that submodule's function of the same name when it has
    one (``data`` in ``data.py``, ``claims`` in ``claims.py``), else the submodule (``tables``, ``figures``). The
    import system binds a submodule to its name on the package when it loads it; the face keeps such names as
    properties of the package's module class, which read the function and ignore that binding."""

    names = {**FACE, **(names or {})}

    def resolve(name: str) -> Any:
        module = importlib.import_module(f"{package}.{names[name]}")
        return getattr(module, name, module) if name == names[name] else getattr(module, name)

    def __getattr__(name: str) -> Any:
        if name in names:
            return resolve(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    def face_property(name: str) -> property:
        return property(lambda module: resolve(name), lambda module, value: None)

    same_named = {name: face_property(name) for name, module in names.items() if name == module}
    face = sys.modules[package]
    face.__class__ = type("StudyFace", (types.ModuleType,), same_named)
    return __getattr__, __dir__


def grid_options(cfg, progress: bool | None = None, threads: int | None = None) -> dict[str, Any]:
    """``Grid.run``'s options from a study's config: executor, workers, scheduler, torch threads per task (the
    ``threads`` parameter where the study has one: none leaves serial runs at torch's default and gives pool and
    Dask workers one each) and progress bars."""

    def get(key, default=None):
        return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)

    return {
        "executor": get("executor", "serial") or "serial",
        "workers": get("workers"),
        "scheduler": get("scheduler"),
        "threads": threads if threads is not None else get("threads"),
        "progress": bool(get("progress", True)) if progress is None else progress,
    }


def run_grids(cfg, *grids: Grid, progress: bool | None = None, threads: int | None = None) -> list[GridResult]:
    """Run each grid in turn with the config's grid options (see ``grid_options``)."""
    options = grid_options(cfg, progress=progress, threads=threads)
    return [grid.run(**options) for grid in grids]


def task_device(cfg) -> str:
    """The device a grid task builds its models on, resolved once in the main process (``auto`` becomes what it
    means here, so that every worker gets the same answer and the task's parameters say where it ran)."""
    from labkit.core.device import resolve_device

    name = cfg.get("device", "auto") if hasattr(cfg, "get") else getattr(cfg, "device", "auto")
    return str(resolve_device(name or "auto", announce=False))


class Stopwatch:
    """``with Stopwatch() as clock: ...; clock.seconds`` and ``clock.started`` (for ``grid_runs(since=...)``)."""

    def __enter__(self) -> Stopwatch:
        self.started, self._t0 = time.time(), time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
