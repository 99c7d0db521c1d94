"""What a preset will really do, before it runs: each grid's tasks, steps, parameters, FLOPs and GPU hours.

A study declares ``plan(cfg) -> list[GridPlan]`` (``labkit plan STUDY``): one :class:`GridPlan` per grid of
cached tasks, each holding one :class:`TaskBudget` per kind of task (same model, same data, same steps). The
numbers come from the study's own parameters and helpers; nothing is trained and no data is read (where a
count depends on the data, the plan uses the parameter and says so in ``notes``).

FLOPs per optimiser step are counted once per (model, input) with :class:`torch.utils.flop_counter.FlopCounterMode`
on the real model (random init, never downloaded), batch 1, forward and backward, on the ``meta`` device (no
arithmetic is done; the CPU is the fallback), then scaled by the batch. GPU hours assume
:data:`GPU_PEAK_FLOPS` x :data:`GPU_UTILISATION` (stated in every rendering).

:func:`check_budgets` refuses degenerate budgets (a batch larger than the data it draws from without
replacement, too few steps per epoch where the preset counts epochs, a run shorter than its warm-up) with a
:class:`~labkit.core.errors.ParameterError` naming the parameters and their values.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labkit.core.errors import ParameterError

GPU_PEAK_FLOPS = 300e12  # one A100/H100-class GPU, dense fp32 through TF32 (bf16 is faster)
GPU_UTILISATION = 0.40
MIN_STEPS_PER_EPOCH = 4
ASSUMPTION = (
    f"GPU hours: FLOPs / ({GPU_PEAK_FLOPS / 1e12:.0f} TFLOP/s x {GPU_UTILISATION:.0%} utilisation), one A100/H100-class "
    "GPU, dense TF32-like; optimiser steps only (no data loading, evaluation or feature caching)"
)


@dataclasses.dataclass
class TaskBudget:
    """One kind of grid task: ``n_tasks`` runs, each ``steps`` optimiser steps on batches of ``batch``.

    ``data_items``: what one run draws its batches from (images, tiles); ``params``: the parameter names the
    sizes come from (``{"batch": "pretrain_batch_size", "data_items": "n_unlabeled"}``) so that an error can
    name them; ``replacement``: batches drawn with replacement (a batch larger than the data is then allowed);
    ``counts_epochs``: the preset sets epochs (so too few steps per epoch is degenerate); ``warmup``: warm-up
    steps of the schedule (a run shorter than it is degenerate). ``flops_per_step`` is for the whole batch.
    """

    name: str
    n_tasks: int
    data_items: int | None
    input_size: str
    batch: int
    steps: int
    epochs: float | None = None
    steps_per_epoch: int | None = None
    trainable_params: int = 0
    total_params: int = 0
    flops_per_step: float = 0.0
    notes: str = ""
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    replacement: bool = False
    counts_epochs: bool = False
    warmup: int | None = None
    requested_batch: int | None = None  # the parameter's batch when the study clips it to the data
    full_batch_ok: bool = False  # a step-counted run on a few labels: a batch of all of them is the design

    @property
    def flops(self) -> float:
        """Every run of this kind together."""
        return float(self.flops_per_step) * self.steps * self.n_tasks

    @property
    def gpu_hours(self) -> float:
        return gpu_hours(self.flops)


@dataclasses.dataclass
class GridPlan:
    """One grid of cached tasks: its name, what its task count multiplies, and its kinds of task."""

    study: str
    grid: str
    shape: str  # e.g. "5 inits x 4 label counts x 5 seeds"
    budgets: list[TaskBudget]
    notes: str = ""

    @property
    def n_tasks(self) -> int:
        return sum(b.n_tasks for b in self.budgets)

    @property
    def steps(self) -> int:
        return sum(b.steps * b.n_tasks for b in self.budgets)

    @property
    def flops(self) -> float:
        return sum(b.flops for b in self.budgets)

    @property
    def gpu_hours(self) -> float:
        return gpu_hours(self.flops)

    def summary(self) -> str:
        """One line: ``study/grid: N tasks (shape), S optimiser steps, F FLOPs, about H GPU hours``."""
        return (
            f"{self.study}/{self.grid}: {self.n_tasks} tasks ({self.shape}), {self.steps:,} optimiser steps, "
            f"{_si(self.flops)}FLOP, about {_hours(self.gpu_hours)} GPU h"
        )


def gpu_hours(flops: float, peak: float = GPU_PEAK_FLOPS, utilisation: float = GPU_UTILISATION) -> float:
    return float(flops) / (peak * utilisation) / 3600.0


# ----------------------------------------------------------------------------- counting


_FLOP_CACHE: dict[Any, tuple[float, int, int]] = {}


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameters of a torch module.

    After a backward pass, trainable means *receives a gradient*: a parameter with ``requires_grad`` that the
    forward never reaches (an encoder stage a truncated U-Net skips) does not train, and is not counted as if it
    did. Before any backward, every parameter with ``requires_grad`` counts."""
    params = list(model.parameters())
    wanting = [p for p in params if p.requires_grad]
    if any(p.grad is not None for p in wanting):
        wanting = [p for p in wanting if p.grad is not None]
    return sum(p.numel() for p in wanting), sum(p.numel() for p in params)


def count_flops(model, inputs, backward: bool = True, loss: Callable | None = None) -> float:
    """FLOPs of one forward (and backward) pass of ``model`` on ``inputs`` (a tensor or a tuple of them).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions: 2 per
    multiply-add). ``loss(output) -> scalar`` (default: the sum of the output, or of its first element)."""
    from torch.utils.flop_counter import FlopCounterMode

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(*args)
        if backward:
            value = loss(out) if loss is not None else _first(out).sum()
            if value.requires_grad:
                value.backward()
    return float(counter.get_total_flops())


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, Mapping):
        out = next(iter(out.values()))
    return out


def measure(
    key: Any,
    build: Callable[[], Any],
    input_shapes: Sequence[tuple[int, ...]],
    backward: bool = True,
    loss: Callable | None = None,
    trainable: Callable[[Any], int] | None = None,
) -> tuple[float, int, int]:
    """``(flops per sample, trainable, total parameters)`` of the model ``build()`` makes, on inputs of
    ``input_shapes`` (batch 1, or 2 where batch norm needs it: divided by the first input's batch), cached per ``key`` in this process. Tried on the ``meta`` device first (no
    arithmetic, so a ViT-B at 560 px costs nothing), then on the CPU. ``trainable(model)`` overrides the count of
    trainable parameters (a frozen encoder); by default the parameters that receive a gradient in the backward
    pass (with ``backward``), else those with ``requires_grad``."""
    if key in _FLOP_CACHE:
        return _FLOP_CACHE[key]
    import torch

    errors = []
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build()
                inputs = tuple(torch.randn(*s) for s in input_shapes)
            model.train()
            flops = count_flops(model, inputs, backward=backward, loss=loss) / input_shapes[0][0]
            n_train, n_total = count_parameters(model)
            if trainable is not None:
                n_train = int(trainable(model))
            _FLOP_CACHE[key] = (flops, n_train, n_total)
            return _FLOP_CACHE[key]
        except Exception as exc:  # noqa: BLE001  (meta lacks some ops; the CPU then counts)
            errors.append(f"{device}: {type(exc).__name__}: {exc}")
    raise RuntimeError(f"could not count the FLOPs of {key!r}: " + "; ".join(errors))


# ----------------------------------------------------------------------------- checks


def degenerate(plans: Sequence[GridPlan], min_steps_per_epoch: int = MIN_STEPS_PER_EPOCH) -> list[str]:
    """The degenerate budgets of ``plans``, each a sentence naming the parameters and their values."""
    problems = []
    for plan in plans:
        for b in plan.budgets:
            where = f"{plan.study}/{plan.grid} '{b.name}'"
            names = b.params
            batch = b.requested_batch if b.requested_batch is not None else b.batch
            if b.data_items is not None and not (b.replacement or b.full_batch_ok) and batch > b.data_items:
                problems.append(
                    f"{where}: the batch {names.get('batch', 'batch')} = {batch} is larger than the "
                    f"{b.data_items} items it draws from ({names.get('data_items', 'data')} = {b.data_items})"
                    + (f"; the study clips it to {b.batch}" if b.batch != batch else "")
                )
            if b.counts_epochs and b.steps_per_epoch is not None and b.steps_per_epoch < min_steps_per_epoch:
                problems.append(
                    f"{where}: {b.steps_per_epoch} optimiser step(s) per epoch (fewer than {min_steps_per_epoch}): "
                    f"{names.get('data_items', 'data')} = {b.data_items} with {names.get('batch', 'batch')} = "
                    f"{b.batch}, so {names.get('epochs', 'epochs')} = {b.epochs:g} epochs are {b.steps} steps"
                )
            if b.warmup is not None and b.steps < b.warmup:
                problems.append(
                    f"{where}: {b.steps} optimiser steps ({names.get('steps', 'steps')}) are fewer than its "
                    f"warm-up of {b.warmup} ({names.get('warmup', 'warm-up')})"
                )
    return problems


def far_from_reference(cfg: Mapping, reference: Mapping[str, Any] | None, factor: float = 3.0) -> list[str]:
    """Settings far from the paper's (``reference``: parameter -> the paper's value): a number off by more
    than ``factor`` either way, or another string."""
    out = []
    for name, ref in (reference or {}).items():
        if name not in cfg:
            continue
        value = cfg[name]
        if isinstance(ref, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if ref > 0 and value > 0 and max(value / ref, ref / value) > factor:
                out.append(f"{name} = {value:g} is far from the paper's {ref:g}")
        elif isinstance(ref, str) and value != ref:
            out.append(f"{name} = {value!r} differs from the paper's {ref!r}")
    return out


def check_budgets(plans: Sequence[GridPlan], allow_degenerate: bool = False) -> list[str]:
    """The degenerate budgets as warnings (``allow_degenerate``), else a ParameterError naming them."""
    problems = degenerate(plans)
    if problems and not allow_degenerate:
        raise ParameterError(
            "degenerate budget: "
            + "; ".join(problems)
            + " (change these parameters, or pass --allow-degenerate to print the plan anyway)"
        )
    return problems


# ----------------------------------------------------------------------------- rendering


def _si(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} "


def _hours(h: float) -> str:
    return f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def _num(v) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else f"{v:,}")


COLUMNS = (
    "task",
    "tasks",
    "data",
    "input",
    "batch",
    "steps/epoch",
    "epochs",
    "steps",
    "trainable / total params",
    "FLOP/step",
    "GPU h",
)


def _row(b: TaskBudget) -> list[str]:
    batch = f"{b.batch} (of {b.requested_batch})" if b.requested_batch not in (None, b.batch) else str(b.batch)
    return [
        b.name,
        str(b.n_tasks),
        _num(b.data_items) if b.data_items is not None else "from data",
        b.input_size,
        batch,
        _num(b.steps_per_epoch),
        _num(round(b.epochs, 2) if b.epochs is not None else None),
        f"{b.steps:,}",
        f"{_si(b.trainable_params).strip()} / {_si(b.total_params).strip()}",
        _si(b.flops_per_step) + "FLOP",
        _hours(b.gpu_hours),
    ]


def render_text(study: str, preset: str, plans: Sequence[GridPlan], warnings: Sequence[str] = ()) -> str:
    lines = [f"{study} at preset '{preset}'"]
    for plan in plans:
        lines.append("  " + plan.summary())
        rows = [list(COLUMNS)] + [_row(b) for b in plan.budgets]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        for r in rows:
            lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for b in plan.budgets:
            if b.notes:
                lines.append(f"    note ({b.name}): {b.notes}")
        if plan.notes:
            lines.append(f"    note: {plan.notes}")
    total = sum(p.gpu_hours for p in plans)
    lines.append(f"  total: {sum(p.n_tasks for p in plans)} tasks, about {_hours(total)} GPU h")
    lines += [f"  warning: {w}" for w in warnings]
    return "\n".join(lines)


def render_markdown(rows: Sequence[tuple[str, str, Sequence[GridPlan], Sequence[str]]]) -> str:
    """One table over studies: ``rows`` of ``(study, preset, plans, warnings)``."""
    out = [
        "| study | grid | tasks | largest task kind (data, input, batch, steps) | FLOP/step | GPU h (one GPU) |",
        "|---|---|---|---|---|---|",
    ]
    for study, _preset, plans, _warnings in rows:
        for plan in plans:
            top = max(plan.budgets, key=lambda b: b.flops)
            data = _num(top.data_items) if top.data_items is not None else "from data"
            batch = (
                f"{top.batch} (of {top.requested_batch})" if top.requested_batch not in (None, top.batch) else top.batch
            )
            out.append(
                f"| {study} | {plan.grid} | {plan.n_tasks} ({plan.shape}) | {top.name}: {data} items, {top.input_size}, "
                f"batch {batch}, {top.steps:,} steps | {_si(top.flops_per_step)}FLOP | {_hours(plan.gpu_hours)} |"
            )
        total = sum(p.gpu_hours for p in plans)
        out.append(f"| {study} | **total** | {sum(p.n_tasks for p in plans)} | | | **{_hours(total)}** |")
    warnings = [f"{study}: {w}" for study, _p, _plans, ws in rows for w in ws]
    out.append("")
    out.append(f"{ASSUMPTION}. Generated on {datetime.date.today().isoformat()}.")
    if warnings:
        out.append("")
        out.append("Degenerate or unusual settings:")
        out.append("")
        out += [f"- {w}" for w in warnings]
    return "\n".join(out)


def steps_per_epoch(n_items: int, batch: int, drop_last: bool) -> int:
    """Optimiser steps in one pass over ``n_items`` in batches of ``batch``."""
    return n_items // batch if drop_last else math.ceil(n_items / batch)
