"""The experiment: which rows can run (weights resolved once, before the grid), the grid of one task per seed x
part (:func:`tasks.seed_part_task`), and its records gathered into :class:`labkit.studies.base.Runs`: the tidy
tables the claims judge, the per-seed rows the report's tables and figures read, the first seed's figure material,
and the claims' context (the arms that could not run, the methods chosen in distribution, the judged k)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from labkit.core.claims import BUDGET_KEYS
from labkit.core.grid import grid_runs
from labkit.studies.base import Runs, Stopwatch, run_grids, task_device
from labkit.studies.dinov2_microct.backbones import load_ssl_backbone, vit_input_size
from labkit.studies.dinov2_microct.data import BACKBONE_LABELS, NAME, VIT_KINDS, data_inputs, data_settings, plain
from labkit.studies.dinov2_microct.tasks import SeedResult, seed_part_task, unavailable_record

# The parameters each part reads besides the data's (see task_settings): a changed one reruns only its tasks
PROBE_KEYS = ("knn_ks", "knn_temperature", "feature_batch_size")
LORA_KEYS = (
    "batch_size",
    "lora_rank",
    "lora_alpha",
    "head_epochs",
    "head_lr",
    "lora_epochs",
    "lora_lr",
    "resize_policy",
    "feature_batch_size",
)
PART_KEYS = {
    "baselines": PROBE_KEYS
    + ("denoise_sigma", "rf_trees", "unet_epochs", "unet_batch_size", "unet_lr", "resnet_backbone"),
    "resnet": LORA_KEYS + ("resnet_backbone",),
    "vit": PROBE_KEYS
    + LORA_KEYS
    + ("img_size", "token_grid", "head_epochs", "head_lr", "knn_seg_k", "knn_seg_memory", "lora_heads", "lora_targets"),
    "dinov2": ("dinov2_backbone",),
    "random": ("vit_arch",),
    "ssl": (),
}

BEST_CLASSICAL = "best classical pipeline"
BEST_BASELINE = "best of UNet and classical pipelines"


# The stand-in "trained" precondition: final held-out MAE loss below this fraction of the learner-free predictor's
TRAINED_RATIO = 0.7


def pretrained_arm(parameter: str, value: str, backbone: str) -> dict:
    """A pretrained row's weights, resolved once before the grid (:func:`labkit.models.weights.resolve_weights`):
    ``{"status": "ok", "weights": value (a file: its absolute path), "digest": ...}`` (the digest of the file read,
    part of its tasks' fingerprint, so new weights rerun them) or ``{"status": "not evaluated: " + the reason, which
    names the parameter to set}``."""
    from labkit.models.weights import resolve_weights

    w = resolve_weights(parameter, value, backbone)
    if not w.ok:
        return {"status": f"not evaluated: {w.reason}"}
    return {"status": "ok", "weights": w.file if w.provenance.get("source") == "file" else w.value, "digest": w.digest}


def resolve_arms(cfg) -> dict[str, dict]:
    """Which rows can run, decided once before the grid, so a task only computes: each ViT kind of
    ``backbones`` (``dinov2``: its weights; ``random``; ``ssl``: the stand-in's checkpoint, its path and
    digest, and its training record) and ``resnet`` (the pretrained ResNet + LoRA row). Each is
    ``{"status": "ok", ...}`` or ``{"status": the reason it is not evaluated}``."""
    arms = {}
    if "dinov2" in cfg.backbones:
        arms["dinov2"] = pretrained_arm("dinov2_weights", cfg.dinov2_weights, cfg.dinov2_backbone)
    if "random" in cfg.backbones:
        arms["random"] = {"status": "ok"}
    if "ssl" in cfg.backbones:
        bb = load_ssl_backbone(cfg)
        arms["ssl"] = {"status": bb.status, "path": bb.file, "digest": bb.digest, "pretraining": bb.pretraining}
    arms["resnet"] = (
        pretrained_arm("resnet_weights", cfg.resnet_weights, cfg.resnet_backbone)
        if cfg.resnet_lora
        else {"status": "not evaluated: disabled (resnet_lora)"}
    )
    return arms


def parts(cfg) -> list[str]:
    """Each seed's parts, in the order of the tables' rows: baselines, ResNet + LoRA, each ViT."""
    return ["baselines", "resnet", *[k for k in VIT_KINDS if k in cfg.backbones]]


def task_settings(cfg, part: str) -> dict[str, Any]:
    """The JSON-able parameters one part reads: the data's, the part's own (:data:`PART_KEYS`) and the device
    (resolved here, once); a ViT also gets ``lora`` (its kind is in ``lora_backbones``) and ``tsne``."""
    keys = PART_KEYS[part] if part in ("baselines", "resnet") else PART_KEYS["vit"] + PART_KEYS[part]
    out = {**data_settings(cfg), **{k: plain(cfg[k]) for k in keys}, "device": task_device(cfg)}
    if part in VIT_KINDS:
        out.update(lora=part in cfg.lora_backbones, tsne="tsne" in cfg.embedders)
    if part == "resnet":
        out["input_size"] = vit_input_size(cfg)
    return out


def _task_weights(part: str, arm: dict) -> dict | None:
    if part == "ssl":
        return {"path": arm["path"], "digest": arm["digest"]}
    if part in ("dinov2", "resnet"):
        return {"weights": arm["weights"], "digest": arm["digest"]}
    return None


def build_grid(cfg, arms: dict[str, dict] | None = None):
    """One task per seed x part whose arm can run (:func:`resolve_arms`); the first seed's tasks keep the
    figures' arrays. Parts are split so that each task is a few tens of seconds at ``default`` and two
    workers stay busy; a ViT's probes, heads and LoRA share one task so its tokens are extracted once."""
    from labkit.core.grid import Grid

    arms = resolve_arms(cfg) if arms is None else arms
    grid = Grid(NAME, seed_part_task, inputs=data_inputs(cfg))
    first = cfg.seeds[0]
    for seed in cfg.seeds:
        for part in parts(cfg):
            arm = arms.get(part, {"status": "ok"})
            if arm["status"] != "ok":
                continue
            weights = _task_weights(part, arm)
            grid.add(part=part, seed=int(seed), settings=task_settings(cfg, part), weights=weights, keep=seed == first)
    return grid


def run(cfg, data) -> Runs:
    """Decide which rows can run, run the grid (``executor``, ``workers``, ``scheduler``; records are cached and a
    rerun computes only what is missing) and gather its records; ``data`` is the first seed's slices
    (:func:`data.data`, which checked every parameter and input before any work)."""
    with Stopwatch() as clock:
        arms = resolve_arms(cfg)
        (result,) = run_grids(cfg, build_grid(cfg, arms))
        runs = gather(cfg, arms, result.records, data)
    runs.seconds = clock.seconds
    runs.grids = grid_runs(since=clock.started)
    return runs


def gather(cfg, arms: dict[str, dict], records: list[dict | None], slices) -> Runs:
    """The records of every seed and part (a part whose arm could not run: rows saying why), in the order of the
    tables' rows, into the runs: the per-seed rows, the claims' tables and context, the first seed's figure
    material."""
    by_task = {(r["seed"], r["part"]): r for r in records if r is not None}
    cls_rows, seg_rows, sil_rows, ceil, budgets = [], [], [], [], {}
    first = SeedResult()
    for seed in cfg.seeds:
        for part in parts(cfg):
            record = by_task.get((seed, part)) or unavailable_record(
                cfg, part, seed, arms[part]["status"], slices.phases
            )
            cls_rows += record["classification"]
            for row in record["segmentation"]:
                row = dict(row)
                budget = row.pop("budget", None)
                if budget is not None:  # one budget per arm and seed (its rows of every split carry it)
                    key = (row["method"], row["backbone"], row["kind"], row["seed"])
                    budgets[key] = dict(zip(("method", "backbone", "kind", "seed"), key), **budget)
                seg_rows.append(row)
            ceil += record["ceilings"]
            for kind, sil in record["silhouettes"].items():
                sil_rows.append({"seed": seed, "backbone": BACKBONE_LABELS[kind], "tsne_silhouette": sil})
            if seed == cfg.seeds[0]:
                first.add(record)
    ssl = arms.get("ssl", {})
    backbones = [
        {"kind": k, "backbone": BACKBONE_LABELS[k], "status": arms[k]["status"], "input": first.inputs.get(k, "")}
        for k in VIT_KINDS
        if k in arms
    ]
    runs = Runs(
        tables={
            "classification_rows": pd.DataFrame(cls_rows),
            "segmentation_rows": pd.DataFrame(seg_rows),
            "silhouettes": pd.DataFrame(sil_rows),
            "ceilings": pd.DataFrame(ceil),
            "budget_rows": pd.DataFrame(
                list(budgets.values()), columns=["method", "backbone", "kind", "seed", *BUDGET_KEYS]
            ),
            "backbones": pd.DataFrame(backbones, columns=["kind", "backbone", "status", "input"]),
        },
        examples={
            "slices": slices,
            "features": first.features,
            "embeddings": first.embeddings,
            "masks": first.examples,
            "token_grids": dict(first.grids),
            "pretraining": {"ssl": ssl["pretraining"]} if ssl.get("pretraining") else {},
        },
    )
    runs.tables.update(claim_tables(runs))
    runs.context = claim_context(cfg, runs)
    runs.unavailable = dict(runs.context["unavailable"])
    return runs


def _arm(row) -> str:
    if row["kind"] == "classical":
        return "classical"
    if row["method"] == "UNet from scratch":
        return "unet"
    inverse = {v: k for k, v in BACKBONE_LABELS.items()}
    if row["backbone"] in inverse:
        return inverse[row["backbone"]]
    return "resnet" if "resnet" in str(row["backbone"]).lower() else str(row["backbone"])


def claim_tables(runs: Runs) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on (one row per arm x condition x seed):
    ``segmentation`` (method, arm, split, seed, miou; with the per-token oracle and the best classical /
    baseline rows), ``classification`` (arm, probe, feature, k, seed, accuracy), ``embeddings`` (arm,
    seed, tsne_silhouette), ``pretraining`` (arm, final_loss, learner_free_loss, loss_ratio, ...), ``params``
    (method, arm, param_ratio_vs_unet) and ``budgets`` (method, arm, seed, steps, batch_size, lr, schedule,
    trainable_params)."""
    seg = runs.tables["segmentation_rows"]
    seg = (
        seg[seg["status"] == "evaluated"].copy()
        if len(seg)
        else pd.DataFrame(columns=["method", "backbone", "kind", "split", "seed", "miou", "trainable_params", "status"])
    )
    seg["arm"] = [_arm(r) for _, r in seg.iterrows()] if len(seg) else []
    extra = []
    for (seed, split), g in seg.groupby(["seed", "split"]):
        cl = g[g["arm"] == "classical"]["miou"]
        base = g[g["arm"].isin(["classical", "unet"])]["miou"]
        if len(cl):
            extra.append(
                {"method": BEST_CLASSICAL, "arm": "classical", "split": split, "seed": seed, "miou": float(cl.max())}
            )
        if len(base):
            extra.append(
                {"method": BEST_BASELINE, "arm": "baseline", "split": split, "seed": seed, "miou": float(base.max())}
            )
    cols = ["method", "arm", "split", "seed", "miou"]
    segmentation = pd.concat([seg[cols], pd.DataFrame(extra, columns=cols)], ignore_index=True)
    cls = runs.tables["classification_rows"]
    classification = pd.DataFrame(columns=["arm", "probe", "feature", "k", "seed", "accuracy"])
    if len(cls):
        ok = cls[cls["status"] == "evaluated"].copy()
        inverse = {v: k for k, v in BACKBONE_LABELS.items()}
        ok["arm"] = ok["backbone"].map(lambda b: inverse.get(b, b))
        if "feature" not in ok:
            ok["feature"] = "cls"
        classification = ok[["arm", "probe", "feature", "k", "seed", "accuracy"]].reset_index(drop=True)
    sil = runs.tables["silhouettes"]
    embeddings = pd.DataFrame(columns=["arm", "seed", "tsne_silhouette"])
    if len(sil):
        inverse = {v: k for k, v in BACKBONE_LABELS.items()}
        embeddings = sil.assign(arm=sil["backbone"].map(lambda b: inverse.get(b, b)))[
            ["arm", "seed", "tsne_silhouette"]
        ]
    pretraining = pd.DataFrame(
        [{"arm": k, **v} for k, v in runs.examples["pretraining"].items()],
        columns=["arm", "loss_ratio", "final_loss", "trivial_loss", "steps", "learner_free_loss", "learner_free_ratio"],
    )
    params = pd.DataFrame(columns=["method", "arm", "param_ratio_vs_unet"])
    if len(seg):
        unet = seg[seg["arm"] == "unet"]["trainable_params"]
        if len(unet):
            p = seg[seg["trainable_params"].notna()].drop_duplicates(["method", "arm"])
            params = p.assign(param_ratio_vs_unet=p["trainable_params"] / float(unet.iloc[0]))[
                ["method", "arm", "param_ratio_vs_unet"]
            ].reset_index(drop=True)
    return {
        "segmentation": segmentation,
        "classification": classification,
        "embeddings": embeddings,
        "pretraining": pretraining,
        "params": params,
        "budgets": budget_rows(runs),
    }


def budget_rows(runs: Runs) -> pd.DataFrame:
    """Each trained arm's budget per seed: method, arm, seed, steps, batch_size, lr, schedule, trainable_params
    (the ``same budget`` preconditions read it)."""
    b = runs.tables.get("budget_rows")
    cols = ["method", "arm", "seed", *BUDGET_KEYS]
    if b is None or not len(b):
        return pd.DataFrame(columns=cols)
    return b.assign(arm=[_arm(r) for _, r in b.iterrows()])[cols].reset_index(drop=True)


def claim_context(cfg, runs: Runs) -> dict:
    """What :func:`claims.declare_claims` needs to know from a run: the arms that could not run (with reasons a
    user can act on) and the methods chosen on the in-distribution split."""
    backbones = runs.tables["backbones"]
    unavailable = {k: v for k, v in zip(backbones["kind"], backbones["status"]) if not str(v).startswith("ok")}
    seg = runs.tables["segmentation_rows"]
    resnet = seg[(seg["kind"] == "LoRA") & seg["backbone"].str.contains("resnet", case=False)] if len(seg) else seg
    if len(resnet) and not (resnet["status"] == "evaluated").any():
        unavailable["resnet"] = resnet["status"].iloc[0]
    if len(seg) and not (seg["split"] == "ood_scanner").any():
        unavailable["ood_scanner"] = (
            "not evaluated: the data have no slices of a training rock on the test scanner (each rock imaged on one "
            "scanner, as in the Digital Rocks Portal layouts), so the out-of-distribution-scanner half cannot be "
            "judged; list a second scanner for the training rocks in the manifest"
        )
    if "tsne" not in cfg.embedders:
        unavailable["tsne"] = "not evaluated: the t-SNE half of the claim was not run; add tsne to parameter embedders"
    chosen = {}
    for kind in ("dinov2", "ssl"):
        ours = (
            seg[
                (seg["backbone"] == BACKBONE_LABELS[kind])
                & (seg["status"] == "evaluated")
                & (seg["split"] == "in_distribution")
            ]
            if len(seg)
            else seg
        )
        if not len(ours):
            continue
        means = ours.groupby("method")["miou"].mean()
        pick = {"best": str(means.idxmax())}
        lora = means[[m for m in means.index if m.endswith("+ LoRA")]]
        if len(lora):
            pick["lora"] = str(lora.idxmax())
        chosen[kind] = pick
    ks = None
    c = runs.tables["classification_rows"]
    if len(c) and "k_below_class_size" in c:
        ks = sorted(
            int(k)
            for k in c[(c["probe"] == "knn") & c["k_below_class_size"].fillna(False).astype(bool)]["k"]
            .dropna()
            .unique()
        )
    slices = runs.examples.get("slices")
    split = getattr(slices, "split_plan", None)  # real volumes: the manifest's split; simulated: the parameters
    return {"unavailable": unavailable, "chosen": chosen, "ks": ks, "split": dict(split) if split else None}
