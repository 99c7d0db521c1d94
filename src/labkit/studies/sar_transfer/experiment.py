"""SAR sea-ice study, the experiment: each arm's encoder weights resolved once (and adapted to the truncated
2-band encoder), the grid of arm x seed x training-tile count and the frozen probes built and run, and their records
gathered into ``Runs``; and ``plan``, the preset's real budget.

Pretrained encoders ("arms"):

* ``imagenet``: timm's ImageNet ResNet-18 (``imagenet_weights``: ``pretrained`` or a file), first
  convolution adapted from RGB to 2 bands by timm. Offline and without a file it is *not evaluated*.
* ``cross_sensor``: ``cross_sensor_weights``, by default the labkit checkpoint ``noisy-pretrained-unet-r18``
  (a ResNet-18 U-Net encoder the noisy-label study trained on 4-band optical land-cover tiles; declared
  under ``consumes:`` so it is part of the run's fingerprint), or any ResNet-18 state dict file (e.g.
  Sentinel-1 pretrained weights). Its first convolution is adapted to the 2 SAR bands
  (``labkit.models.weight_transfer``). This is a cross-sensor transfer, not the paper's ImageNet transfer,
  and is named so in every claim.
* ``random``: the reference. ``gbm`` (gradient boosting on per-pixel HH/HV and local means) and
  ``majority`` (the training tiles' most common class) are reference rows, not claims.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.core.errors import WeightsUnavailableError
from labkit.core.grid import Grid, grid_runs
from labkit.models import weight_transfer
from labkit.studies.base import Runs, Stopwatch, run_grids, task_device

from . import source_features
from .arms import ARM_LABELS
from .data import (
    CHECKPOINT_NAME,
    IN_CHANNELS,
    INITS,
    NAME,
    NUM_CLASSES,
    PRETRAINED_ARMS,
    REFERENCE_ARMS,
    check_settings,
    data_inputs,
    data_settings,
)
from .frames import GridRecords, all_tables
from .tasks import PROBE_LR, PROBE_STEPS, FrozenProbe, create_model, run_task

# ---- each arm's encoder weights, resolved once ------------------------------------------------------------


def adapt_encoder_state(state: dict, encoder: nn.Module, source: str) -> tuple[dict, dict]:
    """Fit a ResNet-18 encoder state dict (any band count; 4 stages - stem, layer1 to layer3 - or more) into the
    truncated encoder of the SAR inputs: layer4 and any classifier dropped and listed, the first convolution adapted
    to the SAR inputs, every other key the encoder loads taken from ``state`` (a shorter or another network's state
    is a CheckpointMismatchError naming the keys)."""
    return weight_transfer.adapt_encoder_state(
        state,
        encoder,
        IN_CHANNELS,
        source=source,
        target="the truncated ResNet-18 encoder (stem, layer1 to layer3)",
        expected="a ResNet-18 encoder state dict of at least 4 stages: stem, layer1, layer2, layer3",
    )


def _produce_cross_sensor(cfg) -> Path:
    """Produce the optical encoder with a small budget (``pretrain_if_missing``), by its declared producer."""
    from labkit.models.registry import produce_named_checkpoint

    torch_threads = torch.get_num_threads()
    try:
        return produce_named_checkpoint(
            CHECKPOINT_NAME,
            n_tiles=cfg["pretrain_tiles"],
            epochs=cfg["pretrain_epochs"],
            tile=cfg["pretrain_tile"],
            seed=0,
            progress=False,
        )
    finally:
        torch.set_num_threads(torch_threads)


def _checkpoint_meta(meta) -> dict:
    return {k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float, bool))}


def _source_state(arm: str, cfg) -> tuple[dict, dict]:
    """(state dict, provenance) of a pretrained arm's source weights, resolved by ``labkit.models.weights``;
    WeightsUnavailableError (its reason naming the parameter to set) if they cannot be had."""
    from labkit.core.checkpoints import load_checkpoint
    from labkit.models.weights import resolve_weights as resolve

    parameter = f"{arm}_weights"
    spec = cfg[parameter]
    resolved = resolve(parameter, spec, "resnet18")
    if arm == "cross_sensor" and not resolved.ok and spec == f"labkit:{CHECKPOINT_NAME}" and cfg["pretrain_if_missing"]:
        _produce_cross_sensor(cfg)
        resolved, produced = resolve(parameter, spec, "resnet18"), True
    else:
        produced = False
    if not resolved.ok:
        hint = "; or set parameter 'pretrain_if_missing' to produce it here with a small budget"
        raise WeightsUnavailableError(resolved.reason + (hint if spec.startswith("labkit:") and not produced else ""))
    provenance = {"weights": spec}
    if arm == "imagenet":
        model = create_model(weights="pretrained", weights_path=resolved.file)
        provenance["source"] = (
            "timm resnet18 ImageNet weights; first conv unchanged (co-pol, cross-pol, incidence angle into its "
            "RGB filters, as the authors feed it)"
        )
        if spec != "pretrained":
            provenance.update(file=resolved.file, sha256=resolved.digest)
        sidecar = Path(resolved.file).with_suffix(".json") if spec != "pretrained" else None
        meta = _read_sidecar(sidecar)
        _source_task_record(provenance, arm, spec, meta, str(sidecar) if sidecar and sidecar.is_file() else None)
        state = {f"model.{k}" if not k.startswith("model.") else k: v for k, v in model.encoder.state_dict().items()}
        return state, provenance
    state, meta = load_checkpoint(resolved.file)
    if spec.startswith("labkit:"):
        provenance["checkpoint"] = spec.split(":", 1)[1]
    provenance.update(file=resolved.file, sha256=resolved.digest)
    if spec.startswith("labkit:"):
        provenance["sidecar"] = str(Path(resolved.file).with_suffix(".json"))
    provenance.update(produced_here=produced, checkpoint_meta=_checkpoint_meta(meta))
    for key in ("bands", "classes"):
        if isinstance((meta or {}).get(key), (list, tuple)):
            provenance[f"sidecar_{key}"] = [str(v) for v in meta[key]]
    sidecar = Path(resolved.file).with_suffix(".json")
    _source_task_record(provenance, arm, spec, meta, str(sidecar) if sidecar.is_file() else None)
    return state, provenance


def _read_sidecar(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _source_task_record(provenance: dict, arm: str, spec: str, meta: Mapping | None, sidecar: str | None) -> None:
    """Put the weights' source-task "features learned" record (``source_features``) into ``provenance``, or why
    there is none (``features_learned_missing``, naming what to provide)."""
    producer = str((meta or {}).get("study") or "") or None
    record, why = source_features.record_for(arm, spec, meta, producer or "the weights' sidecar")
    if record is not None:
        provenance[source_features.KEY] = record
    else:
        provenance["features_learned_missing"] = source_features.missing_reason(arm, spec, why, sidecar, producer)


def resolve_weights(cfg) -> dict[str, dict]:
    """Per arm of ``cfg.inits``: ``status`` ("ok" / "not evaluated"), ``reason``, ``label``, ``provenance``, and
    for a pretrained arm the adapted encoder saved as a safetensors file (``path``, ``digest``) that every
    grid task loads. Unavailable weights are reported with what to do, never replaced by random ones."""
    from labkit.core.checkpoints import save_checkpoint
    from labkit.core.grid import file_digest
    from labkit.core.paths import cache_dir

    out: dict[str, dict] = {}
    for arm in cfg["inits"]:
        row = {"status": "ok", "reason": "", "label": ARM_LABELS[arm], "provenance": {}, "path": None, "digest": None}
        if arm != "random":
            try:
                state, provenance = _source_state(arm, cfg)
                encoder = create_model(weights="random").encoder
                where = f", file {provenance['file']}" if provenance.get("file") else ""
                loaded, info = adapt_encoder_state(
                    state,
                    encoder,
                    source=f"the {arm} weights (parameter '{arm}_weights': {cfg[arm + '_weights']}{where})",
                )
                provenance.update(info)
                folder = cache_dir(f"{NAME}/encoders")
                tmp = save_checkpoint(folder / f"{arm}-staging", loaded, {"arm": arm, **_flat(provenance)})
                digest = file_digest(tmp)
                path = folder / f"{arm}-{digest[:16]}.safetensors"
                tmp.replace(path)
                tmp.with_suffix(".json").replace(path.with_suffix(".json"))
                row.update(provenance=provenance, path=str(path), digest=digest)
                row["label"] = describe_weights(arm, provenance)
            except WeightsUnavailableError as exc:
                row.update(status="not evaluated", reason=str(exc))
        out[arm] = row
    return out


def describe_weights(arm: str, provenance: Mapping) -> str:
    """An arm's description, generated from the weights it loaded: for a labkit checkpoint its sidecar (the study
    that made it, the data, bands and classes it was trained on), for a plain file its name, always the source
    file's digest; never a fixed text, so a checkpoint made on other data is described as it is."""
    digest = str(provenance.get("sha256") or "")[:12]
    first = provenance.get("first_conv_bands", "")
    conv = f"; first convolution {first} bands" if first else ""
    if arm == "imagenet":
        where = f", file sha256 {digest}" if digest else ""
        return f"ImageNet-pretrained ResNet-18 (the paper's arm; {provenance.get('source', 'timm')}{where})"
    meta = dict(provenance.get("checkpoint_meta") or {})
    if provenance.get("checkpoint"):
        made = meta.get("study") or "another study"
        data = []
        if meta.get("n_tiles"):
            data.append(f"{meta['n_tiles']}")
        if meta.get("data_source"):
            data.append(str(meta["data_source"]))
        if meta.get("in_channels"):
            data.append(f"{meta['in_channels']}-band")
        data.append("tiles")
        bands = provenance.get("sidecar_bands")
        classes = provenance.get("sidecar_classes")
        trained = " ".join(data) + (f" ({', '.join(bands)})" if bands else "")
        if classes:
            trained += f", {len(classes)} classes ({', '.join(classes)})"
        if meta.get("noise_severity") is not None:
            trained += f", noisy labels (severity {meta['noise_severity']})"
        stages = f" ({meta['encoder_depth']} stages)" if meta.get("encoder_depth") else ""
        return (
            f"cross-sensor transfer: the {meta.get('encoder', 'ResNet-18')} encoder{stages} of labkit checkpoint "
            f"'{provenance['checkpoint']}' (made by {made}; trained on {trained}; file sha256 {digest}{conv})"
        )
    name = Path(str(provenance.get("file") or provenance.get("weights", ""))).name
    told = ", ".join(f"{k}={v}" for k, v in meta.items() if k in ("study", "source", "bands", "in_channels", "data"))
    return (
        f"cross-sensor transfer: ResNet-18 weights from file {name} (sha256 {digest}"
        f"{'; ' + told if told else '; no sidecar: what they were trained on is not recorded'}{conv})"
    )


def _flat(d: Mapping) -> dict:
    return {k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in d.items()}


def unavailable_arms(weights: Mapping[str, dict]) -> dict[str, str]:
    """``{arm: reason}`` for the arms that cannot run (context for ``claims.declare_claims``), each naming the
    parameter to set."""
    return {arm: row["reason"] for arm, row in weights.items() if row["status"] != "ok"}


def unjudged_features(weights: Mapping[str, dict]) -> dict[str, str]:
    """``{arm: reason}`` for the pretrained arms that ran but whose weights record no source-task "features
    learned" result (context for ``claims.declare_claims``: their claims are not evaluated with that reason)."""
    return {
        arm: row["provenance"]["features_learned_missing"]
        for arm, row in weights.items()
        if row["status"] == "ok" and (row.get("provenance") or {}).get("features_learned_missing")
    }


# ---- the grid -------------------------------------------------------------------------------------------


def train_settings(cfg) -> dict[str, Any]:
    """The JSON-able training parameters of a grid task (the device resolved here, once)."""
    return {
        "epochs": cfg["epochs"],
        "lr_patience": cfg["lr_patience"],
        "early_stopping": cfg["early_stopping"],
        "lr": cfg["lr"],
        "batch_size": cfg["batch_size"],
        "decoder_channels": cfg["decoder_channels"],
        "overlap": cfg["overlap"],
        "device": task_device(cfg),
    }


def build_grid(cfg, weights: Mapping[str, dict]):
    """The study's grid: every evaluated arm at the fewest tiles (the claims' regime) on every seed; random
    init and the pixel classifier at every tile count (the data-limited precondition and references); and
    every evaluated arm's frozen linear probe at the fewest tiles on every seed (the "features learned"
    precondition, ``tasks._probe_task``). A pretrained arm's tasks read its adapted encoder (``encoder``: the file
    and its digest); random init and the references read none."""
    grid = Grid(NAME, run_task, inputs=data_inputs(cfg))
    data, train = data_settings(cfg), train_settings(cfg)
    tiles = sorted(set(cfg["tiles"]))
    few = tiles[0]
    arms = [a for a in INITS if a in weights and weights[a]["status"] == "ok"]
    encoders = {a: {"path": weights[a]["path"], "digest": weights[a]["digest"]} for a in arms if a in PRETRAINED_ARMS}
    first = cfg["seeds"][0]
    for seed in cfg["seeds"]:
        for n_tiles in tiles:
            for arm in arms + list(REFERENCE_ARMS):
                if n_tiles != few and arm not in ("random", "gbm"):
                    continue
                grid.add(
                    arm=arm,
                    seed=int(seed),
                    n_tiles=int(n_tiles),
                    data=data,
                    train=train,
                    encoder=encoders.get(arm),
                    keep_maps=bool(seed == first and n_tiles == few),
                )
        for arm in arms:  # the "features learned" control: each arm's frozen probe at the fewest tiles
            grid.add(
                arm=arm,
                seed=int(seed),
                n_tiles=int(few),
                data=data,
                train=train,
                encoder=encoders.get(arm),
                keep_maps=False,
                probe={"steps": PROBE_STEPS, "lr": PROBE_LR},
            )
    return grid


def run_grid(cfg, weights: Mapping[str, dict], progress: bool | None = None, threads: int | None = None) -> GridRecords:
    """Run the study's grid with the config's grid options (``executor``, ``workers``, ``scheduler``); records are
    cached and resumed."""
    (result,) = run_grids(cfg, build_grid(cfg, weights), progress=progress, threads=threads)
    settings = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(cfg).items()}
    records = [r for r in result.records if r is not None]
    return GridRecords(
        records=[r for r in records if not r.get("probe")],
        probes=[r for r in records if r.get("probe")],
        weights=dict(weights),
        settings=settings,
    )


def gather(
    results: GridRecords,
    grids: Sequence[dict] = (),
    seconds: float = 0.0,
    checkpoints: Sequence[str] = (),
) -> Runs:
    """The grid's records as ``Runs``: every tidy table (``frames.all_tables``), the arms that could not run, the
    first seed's predicted maps at the fewest tiles (``examples``)."""
    unavailable = unavailable_arms(results.weights)
    descriptions = {arm: w["label"] for arm, w in results.weights.items()}
    seed = results.settings["seeds"][0]
    maps = {r["arm"]: r["maps"] for r in results.records if r["seed"] == seed and r["n_tiles"] == results.few}
    return Runs(
        tables=all_tables(results),
        unavailable=unavailable,
        context={
            "unavailable": unavailable,
            "unjudged_features": unjudged_features(results.weights),
            "weights_records": {
                arm: w["provenance"][source_features.KEY]
                for arm, w in results.weights.items()
                if source_features.KEY in (w.get("provenance") or {})
            },
            "descriptions": descriptions,
            "class_names": list(results.class_names),
            "band_names": list(results.band_names),
        },
        examples={"seed": seed, "maps": {arm: m for arm, m in maps.items() if m}},
        grids=list(grids),
        checkpoints=list(checkpoints),
        seconds=seconds,
    )


def run(
    cfg, data=None, *, weights: Mapping[str, dict] | None = None, progress: bool | None = None, threads=None
) -> Runs:
    """Resolve each arm's weights (unless given), run the grid, gather its records. ``data`` (``data(cfg)``, the
    first seed's scenes) has had its settings checked; without it they are checked here. Every task builds its
    own seed's scenes."""
    with Stopwatch() as clock:
        if data is None:
            check_settings(cfg)
        weights = dict(weights) if weights is not None else resolve_weights(cfg)
        results = run_grid(cfg, weights, progress=progress, threads=threads)
    warn_oversampling(results)
    written = [w["path"] for w in weights.values() if w.get("path")]
    written += [w["provenance"]["file"] for w in weights.values() if w["provenance"].get("produced_here")]
    return gather(results, grids=grid_runs(since=clock.started), seconds=clock.seconds, checkpoints=written)


def warn_oversampling(results: GridRecords) -> None:
    """A warning, with the oversampling factor, when the data-rich tiles draw each training pixel more than
    ``data.OVERSAMPLING_WARNING`` times on average: the training area is too small for the requested tiles."""
    import warnings

    from .data import OVERSAMPLING_WARNING
    from .frames import coverage_frame

    cov = coverage_frame(results)
    if cov.empty:
        return
    many = cov[cov.n_tiles == cov.n_tiles.max()]
    factor = float(many["oversampling"].mean())
    if factor > OVERSAMPLING_WARNING:
        n = int(many["n_tiles"].iloc[0])
        warnings.warn(
            f"the training area is small for {n} data-rich tiles (parameter 'tiles'): each labelled pixel is drawn "
            f"{factor:.1f} times on average ({int(many['distinct_pixels'].mean())} distinct pixels, "
            f"{int(many['area_pixels'].mean())} in the training area); see table tile_area",
            stacklevel=2,
        )


# ---- plan: the preset's real budget (labkit plan) ------------------------------------------------------------


def plan(cfg) -> list:
    """The grid's budget from :func:`build_grid`'s loops and ``tasks._network_task``'s epochs (every arm in
    ``inits`` assumed available; the references train no network)."""
    from labkit.core.plan import GridPlan, TaskBudget, measure

    tiles, batch, epochs = sorted(set(cfg["tiles"])), cfg["batch_size"], cfg["epochs"]
    arms = [a for a in INITS if a in cfg["inits"]]
    size, n_val = cfg["tile"], cfg["n_val_tiles"]
    build = lambda: create_model(weights="random", decoder_channels=cfg["decoder_channels"])  # noqa: E731
    flops, tr, tot = measure(("sar", size, cfg["decoder_channels"]), build, [(2, IN_CHANNELS, size, size)])
    stopping = (
        f"early stopping after {cfg['early_stopping']} epochs without a validation-mIoU gain (steps are an upper bound)"
        if cfg["early_stopping"]
        else "no early stopping"
    )
    lr_rule = f"lr x0.1 after {cfg['lr_patience']} epochs without a gain" if cfg["lr_patience"] else "constant lr"
    budgets = []
    for n_tiles in tiles:
        spe = math.ceil(n_tiles / batch)
        for arm in arms:
            if n_tiles != tiles[0] and arm != "random":
                continue
            budgets.append(
                TaskBudget(
                    f"{arm} n_tiles={n_tiles}",
                    len(cfg["seeds"]),
                    n_tiles,
                    f"{size} px x {IN_CHANNELS} ch",
                    min(batch, n_tiles),
                    epochs * spe,
                    epochs,
                    spe,
                    tr,
                    tot,
                    # a step's FLOPs plus its share of the validation after each epoch (forward only, ~1/3 a step)
                    flops * min(batch, n_tiles) + flops / 3 * n_val / spe,
                    params={"batch": "batch_size", "data_items": "tiles"},
                    notes=f"up to {epochs} epochs; {lr_rule}; {stopping}; validation: {n_val} tiles (n_val_tiles, a "
                    f"fixed subset) after every epoch, {n_val * epochs:,} tile forwards per run at most, counted in the "
                    "FLOPs; the last batch of an epoch is partial",
                    requested_batch=batch,
                )
            )
    # the frozen linear probes (_probe_task): one per arm and seed at the fewest tiles, only the 1x1 readout trains
    pflops, ptr, ptot = measure(
        ("sar-probe", size),
        lambda: FrozenProbe(
            create_model(weights="random", decoder_channels=cfg["decoder_channels"]).encoder, NUM_CLASSES
        ),
        [(2, IN_CHANNELS, size, size)],
    )
    for arm in arms:
        budgets.append(
            TaskBudget(
                f"{arm} frozen probe n_tiles={tiles[0]}",
                len(cfg["seeds"]),
                tiles[0],
                f"{size} px x {IN_CHANNELS} ch",
                min(batch, tiles[0]),
                PROBE_STEPS,
                trainable_params=ptr,
                total_params=ptot,
                flops_per_step=pflops * min(batch, tiles[0]),
                params={"batch": "batch_size", "data_items": "tiles"},
                notes="frozen encoder, linear 1x1 readout; the encoder forward is counted per step (an upper bound: "
                "its features are computed once)",
                requested_batch=batch,
            )
        )
    refs = len(REFERENCE_ARMS) * len(tiles) * len(cfg["seeds"])
    shape = (
        f"{len(arms)} inits x {len(cfg['seeds'])} seeds at {tiles[0]} tiles, random at every tile count, "
        f"and {len(arms)} frozen probes x {len(cfg['seeds'])} seeds"
    )
    note = f"plus {refs} reference tasks (gbm, majority) without a network"
    if cfg["pretrain_if_missing"]:
        note += "; the cross-sensor encoder is pretrained first when missing (not counted)"
    return [GridPlan(NAME, "grid", shape, budgets, notes=note)]
