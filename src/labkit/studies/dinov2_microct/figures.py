"""The report's figures: functions of the runs (or of the config, or the first seed's slices) -> Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.data import microct
from labkit.studies.base import Runs
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS, pca_indices
from labkit.studies.dinov2_microct.experiment import TRAINED_RATIO

PHASE_COLOURS = ["#1f1f5f", "#e8d9a8", "#6aa84f"]


def _phase_colormap(phases):
    """One colour per phase of the data (the simulator's three first; more phases from tab10)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    extra = [plt.get_cmap("tab10")(i) for i in range(max(0, len(phases) - len(PHASE_COLOURS)))]
    return ListedColormap((PHASE_COLOURS + extra)[: len(phases)])


def data_slices(data: microct.MicroCTSlices):
    """One slice per rock type (columns) and scanner (rows) of the first seed, with its phase map (last row)."""
    import matplotlib.pyplot as plt

    ds = data
    nr, nc = len(ds.scanners) + 1, len(ds.rock_types)
    fig, axes = plt.subplots(nr, nc, figsize=(2.2 * nc, 2.2 * nr), squeeze=False)
    cmap, top = _phase_colormap(ds.phases), len(ds.phases) - 1
    for ri, rock in enumerate(ds.rock_types):
        shown = None
        for si, sc in enumerate(ds.scanners):
            idx = np.flatnonzero((ds.rock == ri) & (ds.scanner == si) & (ds.geometry == 0))
            ax = axes[si, ri]
            if len(idx):  # real layouts image each rock on one scanner: the other cells stay empty
                ax.imshow(ds.images[idx[0]], cmap="gray", vmin=0, vmax=1)
                shown = idx[0] if shown is None else shown
            else:
                ax.text(0.5, 0.5, "not imaged", ha="center", va="center", fontsize=7, color="#777777")
            ax.set_title(f"{rock.replace('_', ' ')}" if si == 0 else "", fontsize=8)
            if ri == 0:
                ax.set_ylabel(sc, fontsize=8)
        if shown is not None:
            axes[-1, ri].imshow(ds.masks[shown], cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
        if ri == 0:
            axes[-1, 0].set_ylabel("phases", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(ds.phases))]
    fig.legend(handles, ds.phases, loc="lower center", ncol=len(ds.phases), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def grid_ceiling(runs: Runs, split: str = "ood_rock"):
    """The grid ceiling: the per-token oracle's mean IoU against the token grid side on ``split``, with
    the classical pipelines, the UNet and each ViT's frozen heads (at their grid) as marks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    c = runs.tables["ceilings"]
    if c is not None and len(c):
        g = c[c["split"] == split].groupby("grid")["miou"].agg(["mean", "min", "max"]).reset_index()
        ax.plot(g["grid"], g["mean"], "k-o", label="per-token oracle (ceiling)")
        ax.fill_between(g["grid"], g["min"], g["max"], color="k", alpha=0.1)
    seg = runs.tables["segmentation_rows"]
    ok = seg[(seg["status"] == "evaluated") & (seg["split"] == split)] if len(seg) else seg
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    flat = ok[ok["kind"].isin(["classical", "from scratch"])].groupby("method")["miou"].mean()
    for i, (m, v) in enumerate(flat.sort_values().items()):
        ax.axhline(v, ls="--", lw=1, color=colours[i % len(colours)], label=f"{m} ({v:.2f})")
    grids = runs.examples.get("token_grids") or {}
    heads = ok[ok["kind"].isin(["frozen", "LoRA"])]
    markers = iter("s^vDP*X")
    for (backbone, method), v in heads.groupby(["backbone", "method"])["miou"].mean().items():
        grid = grids.get(backbone)
        if grid:
            ax.plot([grid], [v], next(markers, "o"), ms=7, label=f"{method} | {backbone} ({v:.2f})")
    ax.set_xlabel("token grid side (tokens per slice side)")
    ax.set_ylabel(f"mean IoU ({split})")
    ax.set_title("What a per-token head can reach on each token grid")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def standin_pretraining(runs: Runs):
    """The stand-in's MAE training curve (running training loss) and its held-out loss over the learner-free
    predictor's (the "trained" precondition's reference), with the "trained" threshold."""
    import matplotlib.pyplot as plt

    rec = (runs.examples.get("pretraining") or {}).get("ssl") or {}
    curve = _pretraining_curve(rec)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if len(curve):
        a1.plot(curve["step"], curve["loss"], "-", label="training loss (hidden patches)")
        if rec.get("trivial_loss"):
            a1.axhline(rec["trivial_loss"], color="k", ls="--", label="image-mean predictor (held out)")
        if rec.get("learner_free_loss"):
            a1.axhline(rec["learner_free_loss"], color="g", ls=":", label="learner-free predictor (held out)")
        a1.set_xlabel("optimiser step")
        a1.set_ylabel("MSE")
        a1.legend(fontsize=8)
        full = pd.DataFrame(rec.get("curve") or [])
        if "heldout_ratio" in full and rec.get("trivial_loss") and rec.get("learner_free_loss"):
            # the curve's probe ratio is to the image-mean predictor; rescaled to the learner-free reference
            h = full.dropna(subset=["heldout_ratio"])
            scale = float(rec["trivial_loss"]) / float(rec["learner_free_loss"])
            a2.plot(h["step"], h["heldout_ratio"] * scale, "o-", label="held-out loss / learner-free (probe)")
        a2.axhline(TRAINED_RATIO, color="r", ls="--", label=f"'trained' threshold {TRAINED_RATIO}")
        a2.set_xlabel("optimiser step")
        a2.set_ylabel("ratio")
        a2.legend(fontsize=8)
    ratio = rec.get("learner_free_ratio", float("nan"))
    fig.suptitle(f"stand-in MAE pretraining: final held-out loss / learner-free predictor's {ratio:.3f}")
    fig.tight_layout()
    return fig


def _pretraining_curve(rec: dict) -> pd.DataFrame:
    """The stand-in's training curve from its sidecar: step, running training loss."""
    return pd.DataFrame(rec.get("curve") or [], columns=["step", "loss", "seconds"])


def patch_pca(runs: Runs):
    """Top: one slice per rock; below: the first three principal components of its patch
    tokens as RGB, one row per backbone (PCA fitted on those slices' tokens)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    ds, features = runs.examples["slices"], runs.examples["features"]
    idx = pca_indices(ds)
    kinds = list(features)
    fig, axes = plt.subplots(1 + len(kinds), len(idx), figsize=(2.1 * len(idx), 2.1 * (1 + len(kinds))), squeeze=False)
    for j, i in enumerate(idx):
        axes[0, j].imshow(ds.images[i], cmap="gray")
        axes[0, j].set_title(ds.rock_types[ds.rock[i]].replace("_", " "), fontsize=8)
    for r, kind in enumerate(kinds, 1):
        tok = features[kind].patch_of(idx)  # (n, D, h, w)
        n, d, h, w = tok.shape
        flat = tok.transpose(0, 2, 3, 1).reshape(-1, d)
        comp = PCA(3, random_state=0).fit_transform(flat)
        comp = (comp - comp.min(0)) / (np.ptp(comp, 0) + 1e-8)
        comp = comp.reshape(n, h, w, 3)
        for j in range(n):
            axes[r, j].imshow(comp[j], interpolation="nearest")
        axes[r, 0].set_ylabel(BACKBONE_LABELS[kind].split(" (")[0], fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def class_tokens(runs: Runs, method: str = "tsne", seed: int = 0):
    """Class tokens of every slice (first seed) in 2-D, coloured by rock type, one panel per backbone."""
    import matplotlib.pyplot as plt

    ds, features, embeddings = runs.examples["slices"], runs.examples["features"], runs.examples["embeddings"]
    kinds = list(features)
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.2 * max(1, len(kinds)), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        cls = features[kind].cls
        if method == "tsne" and kind in embeddings:
            emb, title = embeddings[kind]["tsne"], f"t-SNE (silhouette {embeddings[kind]['silhouette']:.2f})"
        elif method == "umap":
            import umap

            emb = umap.UMAP(
                n_neighbors=min(15, len(cls) - 1), random_state=seed, n_jobs=1, metric="cosine"
            ).fit_transform(cls)
            title = "UMAP"
        else:
            from sklearn.decomposition import PCA

            emb, title = PCA(2, random_state=seed).fit_transform(cls), "PCA"
        for r, rock in enumerate(ds.rock_types):
            m = ds.rock == r
            ax.scatter(emb[m, 0], emb[m, 1], s=8, label=rock.replace("_", " "))
        ax.set_title(f"{BACKBONE_LABELS[kind]}\n{title}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def example_masks(runs: Runs, max_methods: int | None = None):
    """Out-of-distribution (third rock) slices: image, truth and each evaluated method's phases
    (all of them unless ``max_methods`` is given)."""
    import matplotlib.pyplot as plt

    ex = runs.examples["masks"]
    methods = [k for k in ex if k not in ("image", "truth")][:max_methods]
    cols = ["image", "truth"] + methods
    n = len(ex["image"])
    phases = runs.examples["slices"].phases
    cmap, top = _phase_colormap(phases), len(phases) - 1
    fig, axes = plt.subplots(n, len(cols), figsize=(1.7 * len(cols), 1.9 * n), squeeze=False)
    for i in range(n):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            if c == "image":
                ax.imshow(ex[c][i], cmap="gray")
            else:
                ax.imshow(ex[c][i], cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
            if i == 0:
                ax.set_title(c.replace(" | ", "\n").replace("(", "\n("), fontsize=6)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def berea_through_ct_model(cfg, seed: int = 0):
    """A real segmented Berea sandstone (DeePore repository, MIT; originally Imperial College) used as
    the phase map of the CT forward model, imaged by every scanner, cut to ``slice_size``. None when the file is
    absent (it is never shipped with the kit)."""
    import matplotlib.pyplot as plt

    size = cfg.slice_size
    berea = microct.load_berea_phase_map()
    if berea is None:
        return None
    phases = berea[:5, :size, :size]
    mats = microct.materials_for_phases(phases)
    fig, axes = plt.subplots(1, len(microct.SCANNERS) + 1, figsize=(2.3 * (len(microct.SCANNERS) + 1), 2.6))
    for ax, name in zip(axes, microct.SCANNERS):
        grey = microct.ct_forward(mats, name, seed=seed)[2]
        ax.imshow(microct.normalize_volume(grey), cmap="gray")
        ax.set_title(name, fontsize=8)
    axes[-1].imshow(phases[2], cmap="gray_r", interpolation="nearest")
    axes[-1].set_title("Berea phase map\n(black = solid)", fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
