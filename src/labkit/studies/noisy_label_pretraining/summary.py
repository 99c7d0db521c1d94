"""The run's summary: its headline metrics and the report's closing note (the regime's numbers and each claim's
status)."""

from __future__ import annotations

import numpy as np

from labkit.core.claims import judge_all, verdicts_table
from labkit.studies.base import Runs
from labkit.studies.noisy_label_pretraining.claims import claims
from labkit.studies.noisy_label_pretraining.tables import (
    gains_table,
    label_efficiency_table,
    layer_parts_table,
    regime_runs,
)
from labkit.studies.noisy_label_pretraining.tasks import TASK_A, TASK_B


def headline(runs: Runs) -> dict:
    """The run's headline metrics: mIoU per arm and k, the gains, the layer measure, the regime, whether the named
    checkpoint was saved and the real patch's summary."""
    s = runs.examples["settings"]
    out = {"seconds": round(runs.seconds, 1)}
    for r in label_efficiency_table(runs).dropna(subset=["k"]).itertuples():
        out[f"miou_{r.init}_k{int(r.k)}"] = round(float(r.miou_mean), 4)
    for r in gains_table(runs).itertuples():
        out[f"gain_noisy_full_vs_random_k{int(r.k)}"] = round(float(r.mean_diff), 4)
    out["gain_smallest_k"] = out.get(f"gain_noisy_full_vs_random_k{s['k_values'][0]}", float("nan"))
    for r in layer_parts_table(runs).groupby("part")[["raw", "null", "excess"]].mean().reset_index().itertuples():
        out[f"layer_{r.part}_raw"], out[f"layer_{r.part}_null"] = round(float(r.raw), 5), round(float(r.null), 5)
        out[f"layer_{r.part}_excess"] = round(float(r.excess), 5)
    regime = regime_runs(runs).pivot_table(index="seed", columns="k", values="miou")
    if regime.shape[1] == 2:
        out["label_limited_diff"] = round(float((regime.iloc[:, 1] - regime.iloc[:, 0]).mean()), 4)
    ft = runs.tables["finetune"]
    out["late_gain_max_random"] = round(float(ft[ft.init == "random"].late_gain.max()), 4)
    out["checkpoint_saved"] = runs.examples["checkpoint"]["saved"]
    out["real_patch"] = runs.examples["real_patch"]
    return out


def kept_initial(runs: Runs) -> str:
    """How many pretrained fine-tunes kept their starting weights (no validation point beat them), per arm."""
    ft = runs.tables["finetune"]
    ft = ft[ft.init.isin(["noisy_full", "clean_full", "noisy_encoder", "imagenet"]) & (ft.task == TASK_A)]
    if ft.empty or "kept_initial" not in ft:
        return "no pretrained arm"
    parts = [
        f"{init} at k={int(k)} {int(sub.kept_initial.sum())} of {len(sub)}"
        for (init, k), sub in ft.groupby(["init", "k"], sort=True)
    ]
    return "; ".join(parts)


def checkpoint_line(runs: Runs) -> str:
    """The named checkpoint and the "features learned" record its sidecar carries (what the SAR study judges)."""
    saved = runs.examples["checkpoint"]
    if not saved.get("saved"):
        return f"**Checkpoint** `noisy-pretrained-unet-r18` not saved: {saved.get('reason', '')}."
    fl = saved.get("features_learned") or {}
    if not fl:
        return "**Checkpoint** `noisy-pretrained-unet-r18` saved."
    return (
        f"**Checkpoint** `noisy-pretrained-unet-r18` saved; its sidecar's `features_learned`: "
        f"{'passed' if fl['passed'] else 'not passed'}, {fl['estimate']:+.3f} mIoU, 95 % CI "
        f"[{fl['ci'][0]:+.3f}, {fl['ci'][1]:+.3f}], {fl['n']} {fl['unit']} ({fl['statement']})."
    )


def closing_note(cfg, runs: Runs) -> str:
    """The report's closing note (markdown): the regime's numbers and each claim's status, from the run's tables."""
    s, m = runs.examples["settings"], headline(runs)
    verdicts = verdicts_table(judge_all(claims(cfg, runs), runs.tables))
    k_few, k_many = s["k_values"][0], s["k_values"][-1]

    def num(key, fmt=".3f"):
        value = m.get(key)
        return "n/a" if value is None or not np.isfinite(value) else format(value, fmt)

    def late(task):
        ft = runs.tables["finetune"]
        values = ft[(ft.task == task) & (ft.init == "random")].late_gain
        return "n/a" if values.dropna().empty else f"{values.max():.3f}"

    lines = [
        f"**Regime** ({len(s['seeds'])} seeds; fine-tuning steps {s['finetune_steps']} at k={s['k_values']}): "
        f"floor (most frequent class) {num(f'miou_majority_k{k_few}')} / {num(f'miou_majority_k{k_many}')}; random "
        f"init {num(f'miou_random_k{k_few}')} at k={k_few} and {num(f'miou_random_k{k_many}')} at k={k_many} "
        f"(label-limited over {len(s['seeds']) + len(s.get('regime_seeds', []))} seeds: "
        f"{num('label_limited_diff')}); per-pixel QDA {num(f'miou_qda_k{k_few}')} / {num(f'miou_qda_k{k_many}')}; "
        f"clean-pretrained (ceiling) {num(f'miou_clean_full_k{k_few}')} / {num(f'miou_clean_full_k{k_many}')}; "
        f"noisy-pretrained encoder+decoder {num(f'miou_noisy_full_k{k_few}')} / {num(f'miou_noisy_full_k{k_many}')}. "
        f"Largest late gain of random init {late(TASK_A)} on task A, {late(TASK_B)} on task B (plateau if below "
        f"{s.get('plateau_max_gain', float('nan')):g}).",
        "",
        f"**Pretraining**: {s['pretrain_steps']} steps per label set"
        + (
            " on the first seed's pool, one network shared by every seed's fine-tunes and probes (the intervals of "
            "claims 1, 2 and 4 and of their preconditions cover the fine-tuning draws only)"
            if s.get("shared_pretraining")
            else ", each seed its own"
        )
        + f"; the layer-wise claim compares each seed's own pretrainings ({s.get('layer_pretrain_steps')} steps). "
        f"Fine-tuning rate {s['finetune_lr']:g} for random init, {s.get('finetune_lr_pretrained', s['finetune_lr']):g} "
        "for the pretrained arms (same steps, batches and schedule; the best validation point kept, the starting "
        f"weights included: {kept_initial(runs)}).",
        "",
        checkpoint_line(runs),
        "",
        f"**Layer-wise measure** (mean over seeds): encoder raw {num('layer_encoder_raw', '.3g')}, null "
        f"{num('layer_encoder_null', '.3g')}, excess {num('layer_encoder_excess', '.3g')}; decoder raw "
        f"{num('layer_decoder_raw', '.3g')}, null {num('layer_decoder_null', '.3g')}, excess "
        f"{num('layer_decoder_excess', '.3g')}.",
        "",
        "**Claims**:",
    ]
    for row in verdicts.itertuples():
        lines.append(f"- `{row.claim}`: **{row.status}** (preconditions: {row.preconditions}). {row.reason}")
    return "\n".join(lines)
