"""Layer-by-layer comparison of two networks of the same architecture through their weight statistics.

For each weight tensor of a convolution or linear layer (``ndim >= 2``), the two models' weights are
histogrammed over a shared range and compared by the KL divergence ``KL(P_a || P_b)`` (additively
smoothed, in nats). Layers are ordered along the forward path (encoder, then decoder and head), so the
divergence can be plotted against depth, split by part. Optionally, linear CKA compares feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

#: smp naming: which top-level module belongs to which part.
DEFAULT_PARTS = {"encoder": ("encoder.",), "decoder": ("decoder.", "segmentation_head.")}


def weight_layers(model: nn.Module | dict, parts: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Rows ``name, part, depth, n_params`` for each conv/linear weight, in forward order.

    ``model`` may be a module or a state dict. ``parts`` maps a part name to name prefixes; weights in none
    of them are skipped. ``depth`` is the index along the path, ``relative_depth`` in [0, 1] per part.
    """
    parts = parts or DEFAULT_PARTS
    state = model.state_dict() if isinstance(model, nn.Module) else model
    rows = []
    for name, value in state.items():
        if not name.endswith("weight") or value.ndim < 2:
            continue  # batch-norm scales and biases are not layers' filters
        part = next((p for p, prefixes in parts.items() if name.startswith(tuple(prefixes))), None)
        if part is None:
            continue
        rows.append({"name": name, "part": part, "n_params": int(value.numel())})
    df = pd.DataFrame(rows, columns=["name", "part", "n_params"])
    df["depth"] = np.arange(len(df))
    df["relative_depth"] = df.groupby("part")["depth"].transform(lambda d: (d - d.min()) / max(d.max() - d.min(), 1))
    return df


def histogram_pair(a: torch.Tensor, b: torch.Tensor, bins: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised histograms of two weight tensors over their common range, and the bin edges."""
    a = a.detach().float().reshape(-1)
    b = b.detach().float().reshape(-1)
    lo = float(torch.minimum(a.min(), b.min()))
    hi = float(torch.maximum(a.max(), b.max()))
    if hi <= lo:
        hi = lo + 1e-8
    ha = torch.histc(a, bins=bins, min=lo, max=hi).double()
    hb = torch.histc(b, bins=bins, min=lo, max=hi).double()
    return (ha / ha.sum()).numpy(), (hb / hb.sum()).numpy(), np.linspace(lo, hi, bins + 1)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """``KL(p || q)`` in nats of two histograms, each smoothed by ``eps`` and renormalised."""
    p = np.asarray(p, np.float64) + eps
    q = np.asarray(q, np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def layerwise_kl(
    model_a: nn.Module | dict,
    model_b: nn.Module | dict,
    bins: int = 64,
    eps: float = 1e-6,
    parts: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Per-layer ``KL(hist(a) || hist(b))``; columns of :func:`weight_layers` plus ``kl``.

    Raises ``ValueError`` if the models differ in a layer's presence or shape.
    """
    state_a = model_a.state_dict() if isinstance(model_a, nn.Module) else model_a
    state_b = model_b.state_dict() if isinstance(model_b, nn.Module) else model_b
    layers = weight_layers(state_a, parts)
    kls = []
    for name in layers["name"]:
        if name not in state_b:
            raise ValueError(f"layer {name} is missing from the second model")
        if state_a[name].shape != state_b[name].shape:
            raise ValueError(
                f"layer {name}: shapes differ {tuple(state_a[name].shape)} vs {tuple(state_b[name].shape)}"
            )
        p, q, _ = histogram_pair(state_a[name], state_b[name], bins)
        kls.append(kl_divergence(p, q, eps))
    layers["kl"] = kls
    return layers


def summarize_by_part(df: pd.DataFrame, value: str = "kl") -> pd.DataFrame:
    """Mean, median and max of ``value`` per part (and the number of layers)."""
    return (
        df.groupby("part")[value]
        .agg(["mean", "median", "max", "count"])
        .rename(columns={"count": "layers"})
        .reset_index()
    )


def plot_layerwise_kl(df: pd.DataFrame, ax=None, value: str = "kl", hue: str | None = None, title: str = ""):
    """KL along depth; encoder and decoder layers in different colours. With ``hue`` (e.g. a comparison
    column), one line per value, with the mean and min-max band over other rows (e.g. seeds)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    markers = {"encoder": "o", "decoder": "s"}
    for i, (label, sub) in enumerate(groups):
        stats = sub.groupby(["depth", "part"])[value].agg(["mean", "min", "max"]).reset_index()
        color = f"C{i}"
        ax.plot(stats["depth"], stats["mean"], color=color, lw=1, label=label)
        ax.fill_between(stats["depth"], stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
        for part, marker in markers.items():
            s = stats[stats["part"] == part]
            ax.scatter(s["depth"], s["mean"], color=color, marker=marker, s=14, label=f"{part}" if i == 0 else None)
    boundary = df.loc[df["part"] != "encoder", "depth"].min()
    if np.isfinite(boundary):
        ax.axvline(boundary - 0.5, color="grey", ls="--", lw=0.8)
        ax.text(boundary - 0.7, ax.get_ylim()[1], "encoder | decoder ", ha="right", va="top", fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel(f"{value} (nats)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax.figure


def plot_weight_histograms(model_a, model_b, names: Sequence[str], labels=("a", "b"), bins: int = 64):
    """Side-by-side weight histograms of the named layers for two models, with each layer's KL."""
    import matplotlib.pyplot as plt

    state_a = model_a.state_dict() if isinstance(model_a, nn.Module) else model_a
    state_b = model_b.state_dict() if isinstance(model_b, nn.Module) else model_b
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        p, q, edges = histogram_pair(state_a[name], state_b[name], bins)
        centres = (edges[:-1] + edges[1:]) / 2
        ax.step(centres, p, where="mid", label=labels[0])
        ax.step(centres, q, where="mid", label=labels[1])
        ax.set_title(f"{name}\nKL={kl_divergence(p, q):.3g}", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations ``(n_samples, features)`` (Kornblith 2019)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples: {x.shape[0]} vs {y.shape[0]}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


@torch.inference_mode()
def encoder_feature_cka(
    encoder_a: nn.Module, encoder_b: nn.Module, images: torch.Tensor, max_positions: int = 2048, seed: int = 0
) -> pd.DataFrame:
    """Linear CKA between the two encoders' feature maps at each stage (pixels as samples, subsampled)."""
    was = encoder_a.training, encoder_b.training
    encoder_a.eval()
    encoder_b.eval()
    feats_a, feats_b = encoder_a(images), encoder_b(images)
    encoder_a.train(was[0])
    encoder_b.train(was[1])
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for stage, (fa, fb) in enumerate(zip(feats_a, feats_b)):
        if fa.shape[1] == 0:
            continue
        xa = fa.permute(0, 2, 3, 1).reshape(-1, fa.shape[1])
        xb = fb.permute(0, 2, 3, 1).reshape(-1, fb.shape[1])
        if len(xa) > max_positions:
            pick = torch.randperm(len(xa), generator=gen)[:max_positions]
            xa, xb = xa[pick], xb[pick]
        rows.append({"stage": stage, "channels": int(fa.shape[1]), "cka": linear_cka(xa, xb)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- a size-free layer measure

DIVERGENCE_ESTIMATOR = (
    "per layer: KL(P_a || P_b) in nats between histograms of equal-size weight subsamples (the same positions in both "
    "models, n weights per layer whatever its size, averaged over draws), with bins fixed in units of the layer's "
    "initial standard deviation (+-4 sd, values beyond clipped into the edge bins) and additive smoothing; equal n "
    "gives every layer the same finite-sample floor, and the clean-vs-clean null (same initial weights, another data "
    "order) is subtracted layer by layer"
)
DIVERGENCE_ESTIMATOR_SHORT = (
    "KL of equal-size weight subsamples per layer, bins in units of the layer's initial sd; "
    "null = two clean pretrainings that differ in data order only"
)


def layerwise_divergence(
    model_a: nn.Module | dict,
    model_b: nn.Module | dict,
    reference: nn.Module | dict,
    sample: int = 512,
    bins: int = 32,
    draws: int = 8,
    span: float = 4.0,
    seed: int = 0,
    eps: float = 1e-3,
    parts: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Per-layer divergence of two models' weights that does not scale with layer size.

    For each conv/linear weight (:func:`weight_layers`), ``min(sample, smallest layer)`` positions are drawn
    (``draws`` times, the same positions in both models), histogrammed over ``bins`` bins spanning ``+-span``
    standard deviations of the layer in ``reference`` (the common initial weights) around its mean, and compared by
    ``KL(P_a || P_b)``; the value is the mean over draws. Columns of :func:`weight_layers` plus ``value``,
    ``sample``. Equal sample sizes put every layer on the same finite-sample floor (see
    :data:`DIVERGENCE_ESTIMATOR`); compare against a null pair, not against zero.
    """
    state_a = model_a.state_dict() if isinstance(model_a, nn.Module) else model_a
    state_b = model_b.state_dict() if isinstance(model_b, nn.Module) else model_b
    ref = reference.state_dict() if isinstance(reference, nn.Module) else reference
    layers = weight_layers(state_a, parts)
    if layers.empty:
        return layers.assign(value=[], sample=[])
    n = int(min(sample, layers.n_params.min()))
    rng = np.random.default_rng(seed)
    values = []
    for name in layers["name"]:
        for state, label in ((state_b, "second"), (ref, "reference")):
            if name not in state or tuple(state[name].shape) != tuple(state_a[name].shape):
                raise ValueError(f"layer {name} is missing from the {label} model or has another shape")
        a = state_a[name].detach().float().reshape(-1).numpy()
        b = state_b[name].detach().float().reshape(-1).numpy()
        r = ref[name].detach().float().reshape(-1).numpy()
        sd = float(r.std()) or float(np.abs(r).mean()) or 1e-8
        edges = float(r.mean()) + np.linspace(-span * sd, span * sd, bins + 1)
        kls = []
        for _ in range(draws):
            pick = rng.choice(len(a), size=n, replace=False)
            ha = np.histogram(np.clip(a[pick], edges[0], edges[-1]), edges)[0]
            hb = np.histogram(np.clip(b[pick], edges[0], edges[-1]), edges)[0]
            kls.append(kl_divergence(ha / n, hb / n, eps))
        values.append(float(np.mean(kls)))
    layers["value"] = values
    layers["sample"] = n
    return layers
