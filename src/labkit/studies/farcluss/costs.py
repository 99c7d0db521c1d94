"""FARCLUSS cost per iteration: every method's training step on the same batch, and the two contrast losses alone as
the number of pixels grows (what the cost claims are judged on; ``benchmarks/bench_farcluss.py`` measures the same).

Measured, not a grid: timings are not cached, and a run measures them again."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from labkit.core.errors import DataError
from labkit.methods import semisup as ss
from labkit.methods.scaling_exponents import log_log_slopes

from .arms import arm_config, model_params
from .data import StudyData
from .tasks import build_model, torch_device

COST_REFERENCE = "supervised"
COST_WITHOUT_CONTRAST = "FARCLUSS without contrast"
COST_PROTOTYPE = "FARCLUSS (prototype contrast)"
COST_PAIRWISE = "FARCLUSS with pairwise contrast"
CONTRAST_SCALING_PIXELS = (256, 512, 1024, 2048, 4096)


@dataclass
class CostResults:
    table: pd.DataFrame  # one row per method: time and memory per step
    rounds: pd.DataFrame  # one row per (contrast, measuring round): the contrast's extra time in that round
    scaling: pd.DataFrame  # one row per (contrast, pixels, repeat)
    exponents: pd.DataFrame  # one row per (contrast, repeat): log-log slopes of time and memory in pixels
    step_model_params: int = 0  # parameters of the network whose step was timed (the overhead claim's regime)

    @property
    def scaling_table(self) -> pd.DataFrame:
        return scaling_table(self.scaling)

    @property
    def exponent_table(self) -> pd.DataFrame:
        return exponent_table(self.exponents)

    def claim_tables(self) -> dict[str, pd.DataFrame]:
        """The cost claims' tables: ``cost_rounds`` (contrast x measuring round), ``scaling`` (contrast x repeat)
        and ``cost_regime`` (the size of the network whose step was timed)."""
        return {
            "cost_rounds": self.rounds,
            "scaling": self.exponents,
            "cost_regime": pd.DataFrame([{"step_model_params": self.step_model_params}]),
        }


def no_cost_tables() -> dict[str, pd.DataFrame]:
    """The cost claims' tables, empty (costs not measured)."""
    return {
        "cost_rounds": pd.DataFrame(columns=["contrast", "round", "extra_ms", "extra_pct"]),
        "scaling": pd.DataFrame(columns=["contrast", "repeat", "time_exponent", "memory_exponent"]),
        "cost_regime": pd.DataFrame(columns=["step_model_params"]),
    }


def scaling_table(scaling: pd.DataFrame) -> pd.DataFrame:
    """Prototype vs pairwise contrast alone as the pixel count grows: time and saved memory, median over repeats."""
    wide = scaling.groupby(["pixels", "contrast"])[["ms", "saved_activation_mb"]].median().unstack()
    wide.columns = [f"{c} {v}" for v, c in wide.columns]
    return wide.round(3).reset_index()


def exponent_table(exponents: pd.DataFrame) -> pd.DataFrame:
    """The log-log slopes in the pixel count per contrast, mean and std over repeats."""
    stats = exponents.groupby("contrast")[["time_exponent", "memory_exponent"]].agg(["mean", "std"])
    stats.columns = [f"{m} {s}" for m, s in stats.columns]
    return stats.round(3).reset_index()


def timed_model(cfg, data: StudyData) -> dict:
    """The network whose steps are timed: the arms' architecture at random weights (a step costs the same whatever
    the weights, so the cost claims are judged even when the encoder's pretrained weights are missing)."""
    return {**model_params(cfg, data), "weights": "random"}


def _step_costs(cfg, data, repeats=None, batch_size=None, contrast_pixels=None, device=None) -> pd.DataFrame:
    """Time and memory per training step of each method on the same batch, in interleaved rounds."""
    torch.manual_seed(0)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dev = torch_device(device or cfg.device)
    b = batch_size or cfg.batch_size
    if len(data.train) < 2 * b:
        raise DataError(f"cost table needs {2 * b} training images, got {len(data.train)}")
    # the batch a step sees: whole simulated scenes, or a crop of the model's side from real images
    side = data.crop or data.tile or max(data.train.images.shape[-2:])
    images, masks = data.train.images[: 2 * b, :, :side, :side], data.train.masks[: 2 * b, :side, :side]
    xl = torch.from_numpy(ss.as_float(np.ascontiguousarray(images[:b]))).to(dev)
    yl = torch.from_numpy(np.ascontiguousarray(masks[:b])).long().to(dev)
    xu = torch.from_numpy(ss.as_float(np.ascontiguousarray(images[b:]))).to(dev)
    # The pixels the arms' contrast samples per step (contrast_pixels), at most every pixel of the batch at the
    # embedding stride; both contrasts see the same set. Every pixel of a 320-px batch would be 25,600 per two
    # images: a pairwise matrix of 2.6 GB, 168 GB at the paper's batch.
    h, w = xl.shape[-2:]
    all_pixels = 2 * b * -(-h // 4) * -(-w // 4)
    n_pix = min(contrast_pixels or cfg.contrast_pixels, all_pixels)
    base = replace(arm_config(cfg, "farcluss"), contrast_pixels=n_pix)
    configs = {
        COST_REFERENCE: arm_config(cfg, "supervised"),
        "hard threshold (FixMatch-style)": arm_config(cfg, "fixmatch"),
        COST_WITHOUT_CONTRAST: replace(base, prototype=False),
        COST_PROTOTYPE: base,
        COST_PAIRWISE: replace(base, prototype=False, pairwise=True),
    }
    rounds = repeats or cfg.cost_repeats
    model = timed_model(cfg, data)
    table = ss.measure_step_costs(
        lambda: build_model(model).to(dev),
        configs,
        xl,
        yl,
        xu,
        data.num_classes,
        repeats=rounds,
        warmup=min(3, rounds - 1),  # untimed steps first; a one-round (smoke) measurement is not a timing: none
        reference=COST_REFERENCE,
        baselines={COST_PROTOTYPE: COST_WITHOUT_CONTRAST, COST_PAIRWISE: COST_WITHOUT_CONTRAST},
    )
    times = table.attrs["rounds_ms"]
    table = table.rename(
        columns={
            "vs_reference": "vs supervised",
            "extra_ms": "contrast extra ms",
            "extra_pct_of_reference": "contrast extra (% of supervised)",
        }
    )
    table["contrast_pixels"] = [n_pix if m in (COST_PROTOTYPE, COST_PAIRWISE) else 0 for m in table.method]
    table["rounds"] = rounds
    table = table.round(3)
    table.attrs["rounds_ms"] = times
    return table


def measure_costs(
    cfg,
    data: StudyData,
    repeats: int | None = None,
    batch_size: int | None = None,
    pixels=CONTRAST_SCALING_PIXELS,
    device: str | None = None,
) -> CostResults:
    """The measurements the cost claim rests on (``benchmarks/bench_farcluss.py`` calls this too).

    1. Every method's training step on the same batch, in ``cost_repeats`` interleaved rounds (one step of
       each per round, the order reversed every other round); per round, each contrast's extra time over
       the same step without it, in ms and in % of that step.
    2. The two contrast losses alone (forward + backward) as the number of pixels grows, interleaved over
       repeats; per repeat, the log-log slope of time and of saved memory in the pixel count (1 = linear,
       2 = quadratic).
    """
    table = _step_costs(cfg, data, repeats, batch_size, device=device)
    times = table.attrs["rounds_ms"]
    rows = []
    for contrast, name in (("prototype", COST_PROTOTYPE), ("pairwise", COST_PAIRWISE)):
        for r in range(len(times)):
            extra = float(times[name].iloc[r] - times[COST_WITHOUT_CONTRAST].iloc[r])
            rows.append(
                {
                    "contrast": contrast,
                    "round": r,
                    "extra_ms": extra,
                    "extra_pct": 100 * extra / float(times[COST_WITHOUT_CONTRAST].iloc[r]),
                }
            )
    scaling = ss.measure_contrast_scaling(
        pixels,
        num_classes=data.num_classes,
        embed_dim=cfg.embed_dim,
        temperature=cfg.temperature,
        repeats=max(3, min(cfg.cost_repeats, 5)),
    )
    fits = log_log_slopes(
        scaling, ["contrast", "repeat"], "pixels", {"time_exponent": "ms", "memory_exponent": "saved_activation_mb"}
    )
    n_params = sum(p.numel() for p in build_model(timed_model(cfg, data)).parameters())
    return CostResults(table, pd.DataFrame(rows), scaling, fits, int(n_params))
