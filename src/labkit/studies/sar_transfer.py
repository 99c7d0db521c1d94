"""SAR sea-ice segmentation: transfer learning versus randomly initialised weights.

Reproduces Karimzadeh and Pires de Lima (IGARSS 2023, arXiv 2310.17126) over labkit: a ResNet-18
truncated after its third residual stage (layer3, as in the group's public code) with a DeepLabV3 head
segments dual-polarisation SAR scenes into
open water, young ice, first-year ice and multi-year ice. The same network is trained from random
weights and from a pretrained encoder, with everything else identical (seed, decoder initialisation,
tiles, data order, schedule). Convergence is the validation mIoU per epoch; test scenes from the freeze
season (January) and the melt season (July) are predicted whole with a sliding window.

Pretrained encoders ("initialisations"):

* ``imagenet``: timm's ImageNet ResNet-18 via :func:`labkit.models.segmentation.create_segmenter`
  (first convolution adapted from RGB to 2 bands by timm). Offline it is "not evaluated".
* ``cross_sensor``: the labkit checkpoint ``noisy-pretrained-unet-r18``, a ResNet-18 U-Net encoder that
  the noisy-label study trained on 4-band optical land-cover tiles. Its first convolution is adapted
  from 4 optical bands to the 2 SAR bands (see :func:`adapt_input_conv_weight`). This is a cross-sensor
  transfer (optical land cover -> SAR sea ice), not the paper's ImageNet transfer, and is named so.
* ``random``: the reference.

The study module returns DataFrames, dicts and figures; the notebook hands them to the Report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from labkit.core.errors import CheckpointMismatchError, ParameterError, WeightsUnavailableError
from labkit.core.metrics import ConfusionMatrix, aggregate_over_seeds
from labkit.core.seeding import seed_everything
from labkit.core.stats import paired_difference
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES, IGNORE_INDEX

STUDY = "sar_transfer"
CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
NUM_CLASSES = len(CLASS_NAMES)
IN_CHANNELS = 2
INITS = ("random", "imagenet", "cross_sensor")
INIT_LABELS = {
    "random": "random initialisation",
    "imagenet": "ImageNet-pretrained encoder (optical RGB -> SAR)",
    "cross_sensor": "cross-sensor transfer: labkit encoder pretrained on 4-band optical land cover "
                    f"(noisy labels, checkpoint '{CHECKPOINT_NAME}')",
}
SEASON_MONTHS = {"freeze": 1, "melt": 7}  # the held-out test scenes, as in the paper (January, July)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SarData:
    """One simulated year: training and validation tiles, held-out test scenes, the band normaliser."""

    scenes: list[sar.SarScene]
    train_scenes: list[sar.SarScene]
    test_scenes: dict[str, sar.SarScene]
    normalizer: sar.BandNormalizer
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]


def make_data(seed: int, scene_size: int = 256, tile: int = 64, n_train_tiles: int = 256,
              val_fraction: float = 0.25, looks: float = sar.DEFAULT_LOOKS) -> SarData:
    """A scene per month; January and July held out for testing; the other ten scenes give training tiles
    from their upper rows and validation tiles from their lower ``val_fraction`` of rows (no overlap)."""
    check_sizes(scene_size, tile, val_fraction)
    scenes = sar.simulate_year(size=scene_size, seed=seed, looks=looks)
    test = {season: scenes[month - 1] for season, month in SEASON_MONTHS.items()}
    train_scenes = [s for s in scenes if s.month not in SEASON_MONTHS.values()]
    for scene in scenes:
        sar.validate_scene(scene)
    normalizer = sar.BandNormalizer().fit(train_scenes)
    split = 1.0 - max(val_fraction, tile / scene_size)  # at least one tile high
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    train = sar.sample_tiles(train_scenes, normalizer, tile, n_train_tiles, rng, rows=(0.0, split))
    val = sar.grid_tiles(train_scenes, normalizer, tile, rows=(split, 1.0))
    return SarData(scenes, train_scenes, test, normalizer, train, val)


# ---------------------------------------------------------------------------------------------------
# Models and pretrained encoders
# ---------------------------------------------------------------------------------------------------

ENCODER_DEPTH = 4  # smp stages kept: stem, layer1, layer2, layer3 (layer4 dropped)
OUTPUT_STRIDE = 16  # layer3's stride in an undilated ResNet-18: tiles must be a multiple of it


def create_model(num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS, weights: str = "random",
                 decoder_channels: int = 256):
    """ResNet-18 truncated after its third residual stage with a DeepLabV3 head, from the foundation's factory.

    As the group's public code (torchvision ``resnet18`` through ``IntermediateLayerGetter`` with
    ``return_layers={"layer3": "out"}`` and ``DeepLabHead(256, classes)``): the encoder keeps the stem,
    layer1, layer2 and layer3 (smp ``encoder_depth=4``, 256 channels at stride 16, no dilation); layer4 is
    dropped. The head is ASPP (rates 12, 24, 36 and image pooling; width ``decoder_channels``, 256 in
    torchvision's DeepLabHead), a 3x3 convolution and a 1x1 classifier, upsampled x16 to the input size.
    """
    from labkit.models.segmentation import create_segmenter

    return create_segmenter("deeplabv3", encoder="resnet18", encoder_depth=ENCODER_DEPTH, in_channels=in_channels,
                            num_classes=num_classes, weights=weights, decoder_channels=decoder_channels,
                            encoder_output_stride=OUTPUT_STRIDE)


def check_sizes(scene_size: int, tile: int, val_fraction: float = 0.25) -> None:
    """ParameterError unless a training and a validation tile fit in a scene and the tile suits the network."""
    if tile % OUTPUT_STRIDE:
        raise ParameterError(f"tile must be a multiple of {OUTPUT_STRIDE} (the truncated ResNet-18's output stride), "
                             f"got {tile}")
    if scene_size < 2 * tile or scene_size * (1.0 - val_fraction) < tile:
        raise ParameterError(
            f"scene_size {scene_size} is too small for tile {tile}: each training scene must hold a training tile "
            f"above and a validation tile below its lower {val_fraction:.0%} of rows (scene_size >= 2 x tile)")


def adapt_input_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-convolution filters (O, I, k, k) for ``in_chans`` inputs when the source had ``I`` bands.

    timm's ``adapt_input_conv`` only converts from 3 (RGB) inputs. SAR bands have no spectral counterpart
    among optical bands, so every new input channel gets the mean filter over the source bands, scaled
    by ``I / in_chans``: the spatial structure of each learned filter is kept and the response to an
    input that is constant over bands is preserved (the sum over input channels is unchanged, as timm
    does when it sums RGB filters into one grey channel).
    """
    if weight.ndim != 4:
        raise CheckpointMismatchError(f"first convolution must be (out, in, k, k), got shape {tuple(weight.shape)}")
    source = weight.shape[1]
    if source == in_chans:
        return weight.clone()
    if source == 3:  # the documented RGB case: use timm's own conversion
        from timm.models import adapt_input_conv

        return adapt_input_conv(in_chans, weight.clone())
    mean = weight.float().mean(dim=1, keepdim=True)
    return (mean.repeat(1, in_chans, 1, 1) * (source / in_chans)).to(weight.dtype)


def _encoder_key(key: str) -> str:
    """Checkpoint key -> smp ``TimmUniversalEncoder`` key (``model.<timm key>``)."""
    for prefix in ("encoder.",):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key if key.startswith("model.") else f"model.{key}"


def adapt_encoder_state(state: dict, encoder: nn.Module, in_chans: int = IN_CHANNELS,
                        source: str = f"labkit checkpoint '{CHECKPOINT_NAME}'") -> tuple[dict, dict]:
    """Fit a ResNet-18 encoder state dict (from a deeper, 4-band U-Net encoder) into the truncated encoder.

    Stages beyond the truncation (layer3, layer4) are dropped and listed; the first convolution is
    adapted to ``in_chans``; any key the truncated encoder needs and the checkpoint lacks, or any other
    shape mismatch, is a CheckpointMismatchError naming the keys.
    """
    own = encoder.state_dict()
    renamed = {_encoder_key(k): v for k, v in state.items()}
    conv_key = "model.conv1.weight"
    adapted = {}
    if conv_key in renamed:
        adapted[conv_key] = adapt_input_conv_weight(renamed[conv_key], in_chans)
    dropped = sorted(k for k in renamed if k not in own)
    missing = sorted(k for k in own if k not in renamed)
    if missing:
        raise CheckpointMismatchError(f"{source} lacks {len(missing)} key(s) of the truncated ResNet-18 encoder: "
                                      f"{missing[:8]} (is it a ResNet-18 encoder state dict?)")
    loaded = {k: adapted.get(k, renamed[k]) for k in own}
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in loaded.items()
              if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise CheckpointMismatchError(f"{source} does not fit the truncated ResNet-18 encoder: {shapes[:4]}")
    source_bands = int(renamed[conv_key].shape[1]) if conv_key in renamed else None
    info = {"dropped_keys": len(dropped), "dropped_stages": sorted({k.split(".")[1] for k in dropped}),
            "first_conv_bands": f"{source_bands} -> {in_chans}"}
    return loaded, info


def load_cross_sensor_state(encoder: nn.Module, in_chans: int = IN_CHANNELS, pretrain_if_missing: bool = False,
                            pretrain_kwargs: dict | None = None) -> tuple[dict, dict]:
    """The noisy-label study's optical encoder, adapted to ``encoder``; WeightsUnavailableError if it is missing.

    With ``pretrain_if_missing`` a missing checkpoint is produced with a small budget by
    ``labkit.studies.noisy_label_pretraining.produce_pretrained_encoder(**pretrain_kwargs)``.
    """
    from labkit.core.checkpoints import load_checkpoint
    from labkit.models.registry import load_named_checkpoint

    produced = False
    try:
        state, meta = load_named_checkpoint(CHECKPOINT_NAME)
    except WeightsUnavailableError as exc:
        if not pretrain_if_missing:
            raise WeightsUnavailableError(
                f"{exc} Run `labkit reproduce noisy_label_pretraining` first, or set pretrain_if_missing=True "
                "to produce it here with a small budget.") from exc
        try:
            from labkit.studies.noisy_label_pretraining import produce_pretrained_encoder
        except ImportError as imp:
            raise WeightsUnavailableError(
                f"{exc} It cannot be produced here either: labkit.studies.noisy_label_pretraining."
                f"produce_pretrained_encoder is not available ({imp}).") from imp
        path = produce_pretrained_encoder(**(pretrain_kwargs or {}))
        state, meta = load_checkpoint(path)
        produced = True
    loaded, info = adapt_encoder_state(state, encoder, in_chans)
    info.update({"checkpoint": CHECKPOINT_NAME, "produced_here": produced,
                 "checkpoint_meta": {k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float, bool))}})
    return loaded, info


def resolve_initialisations(inits: Sequence[str], pretrain_if_missing: bool = False,
                            pretrain_kwargs: dict | None = None) -> dict[str, dict]:
    """For each initialisation: ``status`` ("ok" / "not evaluated"), ``reason``, ``label`` and the encoder
    state (None for random). Unavailable weights are reported, never replaced by random ones."""
    out: dict[str, dict] = {}
    for init in inits:
        if init not in INITS:
            raise ValueError(f"unknown initialisation '{init}' (one of {INITS})")
        row = {"status": "ok", "reason": "", "label": INIT_LABELS[init], "state": None, "info": {}}
        try:
            if init == "imagenet":
                row["state"] = create_model(weights="pretrained").encoder.state_dict()
                row["info"] = {"source": "timm resnet18 ImageNet weights; first conv RGB -> 2 bands by timm"}
            elif init == "cross_sensor":
                encoder = create_model(weights="random").encoder
                row["state"], row["info"] = load_cross_sensor_state(
                    encoder, IN_CHANNELS, pretrain_if_missing, pretrain_kwargs)
        except WeightsUnavailableError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            row.update(status="not evaluated", reason=f"weights unavailable: {first_line}")
        out[init] = row
    return out


def build_model(init: str, seed: int, resolved: dict[str, dict], decoder_channels: int = 256) -> nn.Module:
    """The segmenter for one initialisation; the decoder and head start identical across initialisations
    because the model is built from the same seed before the encoder weights are replaced."""
    seed_everything(seed)
    model = create_model(weights="random", decoder_channels=decoder_channels)
    state = resolved.get(init, {}).get("state")
    if init != "random":
        if state is None:
            raise WeightsUnavailableError(f"initialisation '{init}' has no weights: {resolved[init]['reason']}")
        model.encoder.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------

def scene_scores(cm: ConfusionMatrix, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, float]:
    """Per-class IoU/F1 and mIoU over the classes present in the scene's chart (a class absent from the
    reference, e.g. young ice in July, would otherwise count as IoU 0 for any false alarm)."""
    scores = cm.scores(class_names)
    present = cm.matrix.sum(axis=1) > 0
    iou, f1 = cm.iou(), cm.f1()
    scores["miou"] = float(np.nanmean(iou[present])) if present.any() else float("nan")
    scores["mean_f1"] = float(np.nanmean(f1[present])) if present.any() else float("nan")
    scores["classes_present"] = int(present.sum())
    scores.update({f"present/{name}": bool(flag) for name, flag in zip(class_names, present)})
    return scores


def predict_scene(model: nn.Module, scene: sar.SarScene, normalizer: sar.BandNormalizer, tile: int,
                  overlap: float, batch_size: int = 8) -> np.ndarray:
    """Class map of a whole scene by sliding-window inference; no-data and land pixels -> IGNORE_INDEX."""
    from labkit.methods.inference import sliding_window_predict

    probs = sliding_window_predict(model, normalizer.transform(scene.sar), NUM_CLASSES, tile=tile,
                                   overlap=overlap, batch_size=batch_size)
    pred = probs.argmax(0).astype(np.int64)
    pred[~scene.valid] = IGNORE_INDEX
    return pred


# ---------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SarTransferResults:
    history: pd.DataFrame  # seed, init, epoch, train_loss, val_loss, val_miou, lr, seconds
    fits: pd.DataFrame  # seed, init, best_epoch, best_val_miou, epochs_to_95, epochs_run, seconds
    scores: pd.DataFrame  # seed, init, season, scene, miou, pixel_accuracy, mean_f1, iou/<c>, f1/<c>
    confusion: dict  # (init, season) -> confusion matrix summed over seeds
    predictions: dict  # (init, season) -> class map of the first seed
    example: SarData  # the first seed's data (figures)
    inits: dict  # init -> status, reason, label, info
    settings: dict

    @property
    def evaluated(self) -> list[str]:
        return [k for k, v in self.inits.items() if v["status"] == "ok"]

    @property
    def pretrained_init(self) -> str | None:
        """The pretrained arm the claims are judged on: ImageNet (the paper's) when evaluated, else the
        cross-sensor encoder (named so in every claim)."""
        for init in ("imagenet", "cross_sensor"):
            if init in self.evaluated:
                return init
        return None


def run_study(seeds: Sequence[int], inits: Sequence[str] = ("random", "cross_sensor", "imagenet"), *,
              n_epochs: int = 10, lr: float = 1e-3, batch_size: int = 16, patience: int | None = None,
              decoder_channels: int = 256,
              scheduler: str | None = "plateau", scene_size: int = 256, tile: int = 64, n_train_tiles: int = 256,
              val_fraction: float = 0.25, overlap: float = 0.25, looks: float = sar.DEFAULT_LOOKS,
              pretrain_if_missing: bool = False, pretrain_kwargs: dict | None = None,
              progress: bool = True) -> SarTransferResults:
    """Train every evaluated initialisation on every seed (same data, order, schedule) and test on the
    freeze and melt scenes. A seed draws its own simulated year and the training order."""
    from labkit.methods.training import epochs_to_fraction, fit
    from torch.utils.data import DataLoader, TensorDataset

    started = time.time()
    check_sizes(scene_size, tile, val_fraction)  # before any encoder is produced or loaded
    resolved = resolve_initialisations(inits, pretrain_if_missing, pretrain_kwargs)
    if "random" not in resolved:
        resolved = {"random": resolve_initialisations(["random"])["random"], **resolved}
    evaluated = [k for k, v in resolved.items() if v["status"] == "ok"]
    histories, fits, score_rows = [], [], []
    confusion: dict = {}
    predictions: dict = {}
    example = None
    for seed in seeds:
        data = make_data(seed, scene_size, tile, n_train_tiles, val_fraction, looks)
        example = example or data
        train_set = TensorDataset(torch.from_numpy(data.train[0]), torch.from_numpy(data.train[1]))
        val_set = TensorDataset(torch.from_numpy(data.val[0]), torch.from_numpy(data.val[1]))
        for init in evaluated:
            model = build_model(init, seed, resolved, decoder_channels)
            # The same generator seed gives both initialisations the same batches in the same order.
            order = torch.Generator().manual_seed(seed)
            train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=order)
            val_loader = DataLoader(val_set, batch_size=64)
            result = fit(model, train_loader, val_loader, task="segmentation", num_classes=NUM_CLASSES,
                         epochs=n_epochs, lr=lr, optimizer="adam", weight_decay=0.0, scheduler=scheduler,
                         ignore_index=IGNORE_INDEX, monitor="miou", patience=patience, seed=seed,
                         progress=progress, desc=f"seed {seed} {init}")
            hist = result.history.assign(seed=seed, init=init)
            histories.append(hist)
            fits.append({"seed": seed, "init": init, "best_epoch": result.best_epoch,
                         "best_val_miou": result.best_score,
                         "epochs_to_95": epochs_to_fraction(result.history, "val_miou", 0.95),
                         "epochs_run": len(result.history), "seconds": result.seconds})
            for season, scene in data.test_scenes.items():
                pred = predict_scene(result.model, scene, data.normalizer, tile, overlap)
                cm = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX).update(
                    np.where(pred == IGNORE_INDEX, 0, pred), scene.labels)
                score_rows.append({"seed": seed, "init": init, "season": season, "scene": scene.name,
                                   **scene_scores(cm)})
                key = (init, season)
                confusion[key] = confusion.get(key, 0) + cm.matrix
                if seed == seeds[0]:
                    predictions[key] = pred
    settings = dict(seeds=list(seeds), inits=list(inits), n_epochs=n_epochs, lr=lr, batch_size=batch_size,
                    decoder_channels=decoder_channels,
                    patience=patience, scheduler=scheduler, scene_size=scene_size, tile=tile,
                    n_train_tiles=n_train_tiles, val_fraction=val_fraction, overlap=overlap, looks=looks,
                    optimizer="adam", seconds=time.time() - started)
    inits_public = {k: {kk: vv for kk, vv in v.items() if kk != "state"} for k, v in resolved.items()}
    return SarTransferResults(
        history=pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(),
        fits=pd.DataFrame(fits), scores=pd.DataFrame(score_rows), confusion=confusion, predictions=predictions,
        example=example, inits=inits_public, settings=settings)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------

def initialisations_table(results: SarTransferResults) -> pd.DataFrame:
    rows = []
    for k, v in results.inits.items():
        info = dict(v.get("info") or {})
        meta = info.pop("checkpoint_meta", {})
        details = "; ".join(f"{key}: {val}" for key, val in info.items())
        if meta:
            details += "; checkpoint: " + ", ".join(f"{key}={meta[key]}" for key in
                                                     ("producer", "n_tiles", "epochs", "tile", "noise_severity")
                                                     if key in meta)
        rows.append({"initialisation": k, "description": v["label"], "status": v["status"],
                     "details": details, "reason": v["reason"][:300]})
    return pd.DataFrame(rows)


def convergence_table(results: SarTransferResults) -> pd.DataFrame:
    """Per initialisation, over seeds: epochs to 95 % of the run's best validation mIoU, best epoch, best mIoU."""
    fits = results.fits.copy()
    fits["epochs_to_95"] = fits["epochs_to_95"].astype(float)
    fits["best_epoch"] = fits["best_epoch"].astype(float)
    return aggregate_over_seeds(fits, ["epochs_to_95", "best_epoch", "best_val_miou", "seconds"], "init")


def season_table(results: SarTransferResults) -> pd.DataFrame:
    """Melt vs freeze test scenes: mIoU, mean F1 and pixel accuracy per initialisation (mean and 95 % CI)."""
    return aggregate_over_seeds(results.scores, ["miou", "mean_f1", "pixel_accuracy"], ["season", "init"])


def _in_chart(scores: pd.DataFrame, name: str) -> pd.Series:
    """Rows whose test scene's chart holds class ``name`` (all rows when presence was not recorded)."""
    column = f"present/{name}"
    if column not in scores:
        return pd.Series(True, index=scores.index)
    return scores[column].fillna(False).astype(bool)


def per_class_table(results: SarTransferResults) -> pd.DataFrame:
    """Per season, class and initialisation: IoU and F1 (mean over the seeds whose test chart holds the
    class; a class absent from the chart, e.g. young ice in July, has no IoU to average: NaN, n 0)."""
    rows = []
    for (season, init), g in results.scores.groupby(["season", "init"], sort=False):
        for name in CLASS_NAMES:
            h = g[_in_chart(g, name)]
            rows.append({"season": season, "init": init, "class": name,
                         "iou_mean": h[f"iou/{name}"].mean(), "iou_std": h[f"iou/{name}"].std(ddof=1),
                         "f1_mean": h[f"f1/{name}"].mean(), "n": len(h)})
    return pd.DataFrame(rows)


def _paired(results: SarTransferResults, season: str, column: str, a: str, b: str) -> tuple[dict, pd.DataFrame]:
    s = results.scores[results.scores.season == season]
    wide = s.pivot_table(index="seed", columns="init", values=column, dropna=False)
    wide = wide.dropna(subset=[a, b])
    return paired_difference(wide[a].to_numpy(), wide[b].to_numpy()), wide


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

CLAIMS = {
    "faster_convergence": "An encoder pretrained on optical images and fine-tuned converges in fewer epochs "
                          "than the same network from random weights.",
    "better_on_melt": "The pretrained encoder segments the melt-season scene better (mIoU) than random "
                      "initialisation.",
    "freeze_smaller_mixed": "On the freeze-season scene the difference is smaller than the melt-season gain and "
                            "mixed across classes.",
}
DECISION_RULE = ("paired over seeds (same data and order per seed); 'held' when the 95 % t-interval of the "
                 "paired difference lies on the claimed side of zero, 'did not hold' otherwise")


def _fmt(d: dict) -> str:
    return f"{d['mean_diff']:+.3f} (95% CI {d['ci95_low']:+.3f} .. {d['ci95_high']:+.3f}; wins {d['wins']}/{d['n']})"


def epochs_to_common_threshold(history: pd.DataFrame, reference: str = "random",
                               fraction: float = 0.95) -> pd.DataFrame:
    """Per seed and initialisation: the first epoch whose validation mIoU reaches ``fraction`` of the
    ``reference`` arm's best on that seed (NaN if never). Supplementary to "95 % of the run's own best",
    whose bar is higher for the arm that ends higher."""
    rows = []
    if history.empty or reference not in set(history.init):
        return pd.DataFrame(columns=["seed", "init", "epochs_to_common"])
    for seed, g in history.groupby("seed"):
        ref = g[g.init == reference]
        if ref.empty:
            continue
        bar = fraction * float(ref["val_miou"].max())
        for init, h in g.groupby("init", sort=False):
            hits = h.loc[h["val_miou"] >= bar, "epoch"]
            rows.append({"seed": seed, "init": init, "epochs_to_common": float(hits.min()) if len(hits) else np.nan})
    return pd.DataFrame(rows)


def judge_claims(results: SarTransferResults) -> list[dict[str, Any]]:
    """The paper's three claims with honest statuses, evidence and reasons (never hard-coded)."""
    pre = results.pretrained_init
    out = []
    if pre is None:
        reasons = "; ".join(f"{k}: {v['reason']}" for k, v in results.inits.items() if v["status"] != "ok")
        for cid, statement in CLAIMS.items():
            out.append(dict(id=cid, statement=statement, status="not evaluated", evidence={},
                            reason=f"no pretrained encoder could be evaluated ({reasons[:600]})"))
        return out
    arm = f"pretrained arm: {pre} ({INIT_LABELS[pre]})"
    n_seeds = results.scores.seed.nunique()
    if n_seeds < 2:
        for cid, statement in CLAIMS.items():
            out.append(dict(id=cid, statement=statement, status="not evaluated",
                            evidence={"pretrained_arm": pre, "seeds": n_seeds},
                            reason=f"only {n_seeds} seed: a paired interval needs at least 2 (use preset default)"))
        return out

    # 1. convergence: epochs to reach 95 % of the run's best validation mIoU (fewer is better)
    fits = results.fits.pivot_table(index="seed", columns="init", values="epochs_to_95")
    d1 = paired_difference(fits["random"].to_numpy(float), fits[pre].to_numpy(float))  # random - pretrained
    held1 = d1["ci95_low"] > 0
    common = epochs_to_common_threshold(results.history)
    common_evidence = {}
    if not common.empty:
        wide = common.pivot_table(index="seed", columns="init", values="epochs_to_common", dropna=False)
        if pre in wide:
            common_evidence = {"epochs_to_95_of_random_best_random": wide["random"].tolist(),
                               f"epochs_to_95_of_random_best_{pre}": wide[pre].tolist()}
    out.append(dict(
        id="faster_convergence", statement=CLAIMS["faster_convergence"],
        status="held" if held1 else "did not hold",
        evidence={"pretrained_arm": pre, "epochs_to_95_random": fits["random"].tolist(),
                  f"epochs_to_95_{pre}": fits[pre].tolist(), "random_minus_pretrained": d1,
                  "rule": DECISION_RULE, "supplementary (not judged)": common_evidence},
        reason=f"{arm}; epochs to 95 % of best val mIoU, random minus pretrained: {_fmt(d1)}"))

    # 2. melt-season mIoU
    d2, wide2 = _paired(results, "melt", "miou", pre, "random")
    held2 = d2["ci95_low"] > 0
    out.append(dict(
        id="better_on_melt", statement=CLAIMS["better_on_melt"], status="held" if held2 else "did not hold",
        evidence={"pretrained_arm": pre, "melt_miou_random": wide2["random"].tolist(),
                  f"melt_miou_{pre}": wide2[pre].tolist(), "pretrained_minus_random": d2, "rule": DECISION_RULE},
        reason=f"{arm}; melt-scene mIoU, pretrained minus random: {_fmt(d2)}"))

    # 3. the melt gain (signed: pretrained minus random) exceeds the size of the freeze difference, paired over
    # seeds; and the freeze differences are mixed in sign over the classes in the freeze chart. A pretrained
    # arm that loses on melt does not make the freeze difference "smaller" in the paper's sense.
    d3f, wide3 = _paired(results, "freeze", "miou", pre, "random")
    gains = pd.DataFrame({"melt": wide2[pre] - wide2["random"], "freeze": wide3[pre] - wide3["random"]}).dropna()
    d3 = paired_difference(gains["melt"].to_numpy(), gains["freeze"].abs().to_numpy())
    s = results.scores[results.scores.season == "freeze"]
    s = s.assign(**{f"iou/{n}": s[f"iou/{n}"].where(_in_chart(s, n)) for n in CLASS_NAMES})
    class_diff = {}
    for name in CLASS_NAMES:
        w = s.pivot_table(index="seed", columns="init", values=f"iou/{name}")
        if pre in w and "random" in w:
            diff = (w[pre] - w["random"]).dropna()
            if len(diff):
                class_diff[name] = float(diff.mean())
    mixed = any(v > 0 for v in class_diff.values()) and any(v < 0 for v in class_diff.values())
    smaller = d3["ci95_low"] > 0
    held3 = smaller and mixed
    out.append(dict(
        id="freeze_smaller_mixed", statement=CLAIMS["freeze_smaller_mixed"],
        status="held" if held3 else "did not hold",
        evidence={"pretrained_arm": pre, "freeze_pretrained_minus_random": d3f,
                  "melt_gain_minus_abs_freeze_gain": d3, "freeze_iou_diff_by_class": class_diff,
                  "mixed_sign_across_classes": mixed,
                  "rule": DECISION_RULE + "; smaller = melt gain (signed) minus |freeze gain|, paired; mixed = "
                                          "class-wise mean IoU differences of both signs over the classes in "
                                          "the freeze chart"},
        reason=(f"{arm}; melt gain - |freeze gain| in mIoU: {_fmt(d3)}; freeze gain {_fmt(d3f)}; "
                f"per-class freeze IoU differences {', '.join(f'{k} {v:+.3f}' for k, v in class_diff.items())}"
                f" ({'mixed' if mixed else 'one sign'})")))
    return out


def headline_metrics(results: SarTransferResults) -> dict[str, float]:
    """Numbers for metrics.json; ``melt_miou_pretrained`` is the headline (NaN when no pretrained arm ran)."""
    out: dict[str, Any] = {"pretrained_arm": results.pretrained_init or "none"}
    for (season, init), g in results.scores.groupby(["season", "init"]):
        out[f"{season}_miou_{init}"] = float(g["miou"].mean())
    for init, g in results.fits.groupby("init"):
        out[f"epochs_to_95_{init}"] = float(g["epochs_to_95"].astype(float).mean())
        out[f"best_val_miou_{init}"] = float(g["best_val_miou"].mean())
    pre = results.pretrained_init
    out["melt_miou_pretrained"] = out.get(f"melt_miou_{pre}", float("nan")) if pre else float("nan")
    out["freeze_miou_pretrained"] = out.get(f"freeze_miou_{pre}", float("nan")) if pre else float("nan")
    out["train_seconds"] = results.settings["seconds"]
    return out


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------

LAND_COLOUR = "#a6894f"  # tan: land (masked, never a label)
NO_DATA_COLOUR = "#6a3d9a"  # purple: outside the swath (NaN backscatter)


def _stretch(band: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
    a, b = np.nanpercentile(band, [lo, hi])
    return np.clip((band - a) / max(b - a, 1e-6), 0, 1)


def _rgb(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(colour), dtype=float)


def false_colour(scene: sar.SarScene) -> np.ndarray:
    """RGB composite: R = HH, G = HV, B = HH - HV (co/cross ratio), each percentile-stretched; no data purple."""
    hh, hv = scene.sar
    rgb = np.stack([_stretch(hh), _stretch(hv), _stretch(hh - hv)], axis=-1)
    nodata = ~np.isfinite(scene.sar).all(axis=0)
    rgb = np.nan_to_num(rgb, nan=0.0)
    rgb[nodata] = _rgb(NO_DATA_COLOUR)
    return rgb


def class_map_rgb(labels: np.ndarray, land: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """(H, W, 3) colours of a chart or a prediction: classes in ``CLASS_COLOURS``, land tan, no data purple;
    any other ignored pixel (e.g. a chart's unlabelled area) mid grey."""
    rgb = np.full(labels.shape + (3,), 0.5)
    for cls, colour in enumerate(sar.CLASS_COLOURS):
        rgb[labels == cls] = _rgb(colour)
    rgb[land] = _rgb(LAND_COLOUR)
    rgb[nodata] = _rgb(NO_DATA_COLOUR)
    return rgb


def _scene_masks(scene: sar.SarScene) -> tuple[np.ndarray, np.ndarray]:
    nodata = ~np.isfinite(scene.sar).all(axis=0)
    return scene.land & ~nodata, nodata


def _legend_handles():
    from matplotlib.patches import Patch

    return ([Patch(facecolor=c, edgecolor="#555555", label=n) for c, n in zip(sar.CLASS_COLOURS, CLASS_NAMES)]
            + [Patch(facecolor=LAND_COLOUR, label="land (masked)"),
               Patch(facecolor=NO_DATA_COLOUR, label="no data (outside swath)")])


def scenes_figure(scenes: dict[str, sar.SarScene]):
    """HH, HV, false colour and chart for each test scene (rows); no data purple in every panel, land tan
    in the chart (land is imaged in HH and HV)."""
    import matplotlib.pyplot as plt

    grey = plt.get_cmap("gray").copy()
    grey.set_bad(NO_DATA_COLOUR)
    fig, axes = plt.subplots(len(scenes), 4, figsize=(13, 3.7 * len(scenes)), squeeze=False)
    for row, (season, scene) in zip(axes, scenes.items()):
        land, nodata = _scene_masks(scene)
        row[0].imshow(np.ma.masked_invalid(scene.sar[0]), cmap=grey, vmin=-30, vmax=-5)
        row[1].imshow(np.ma.masked_invalid(scene.sar[1]), cmap=grey, vmin=-32, vmax=-15)
        row[2].imshow(false_colour(scene))
        row[3].imshow(class_map_rgb(scene.labels, land, nodata), interpolation="nearest")
        titles = ["HH (dB, -30..-5)", "HV (dB, -32..-15)", "false colour R=HH G=HV B=HH-HV", "ice chart"]
        for ax, t in zip(row, titles):
            ax.set_title(f"{season} ({scene.month:02d}/2018): {t}" if ax is row[0] else t, fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=NUM_CLASSES + 2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def backscatter_histograms_figure(table: pd.DataFrame):
    """Class histograms of HH and HV in dB, freeze vs melt season."""
    import matplotlib.pyplot as plt

    seasons = [s for s in ("freeze", "melt") if s in set(table.season)]
    fig, axes = plt.subplots(len(seasons), 2, figsize=(11, 3.2 * len(seasons)), squeeze=False)
    bins = np.linspace(-35, 0, 71)
    for row, season in zip(axes, seasons):
        for ax, band in zip(row, ("HH", "HV")):
            sel = table[(table.season == season) & (table.band == band)]
            for colour, name in zip(sar.CLASS_COLOURS, CLASS_NAMES):
                v = sel.loc[sel["class"] == name, "db"].to_numpy()
                if v.size:
                    ax.hist(v, bins=bins, density=True, histtype="step", lw=1.6,
                            color="#777777" if colour == "#f2f2f2" else colour, label=name)
            ax.set_title(f"{season} season, {band}", fontsize=10)
            ax.set_xlabel("sigma0 (dB)")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves_figure(results: SarTransferResults):
    """Validation mIoU per epoch: mean over seeds with a 95 % t-band, per initialisation."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"random": "#555555", "cross_sensor": "#d95f02", "imagenet": "#1b9e77"}
    for init, g in results.history.groupby("init", sort=False):
        agg = aggregate_over_seeds(g, "val_miou", "epoch").sort_values("epoch")
        ax.plot(agg["epoch"], agg["val_miou_mean"], color=colours.get(init), label=f"{init} (n={int(agg['n'].max())})")
        ax.fill_between(agg["epoch"], agg["val_miou_ci95_low"], agg["val_miou_ci95_high"], color=colours.get(init),
                        alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mIoU")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def predictions_figure(results: SarTransferResults):
    """Chart and predicted maps (first seed) per test scene and initialisation; land tan, no data purple."""
    import matplotlib.pyplot as plt

    inits = [i for i in results.evaluated]
    seasons = list(results.example.test_scenes)
    fig, axes = plt.subplots(len(seasons), 1 + len(inits), figsize=(3.3 * (1 + len(inits)), 3.7 * len(seasons) + 0.6),
                             squeeze=False)
    for row, season in zip(axes, seasons):
        scene = results.example.test_scenes[season]
        land, nodata = _scene_masks(scene)
        panels = [("chart", scene.labels)] + [(i, results.predictions[(i, season)]) for i in inits]
        for ax, (title, img) in zip(row, panels):
            ax.imshow(class_map_rgb(img, land, nodata), interpolation="nearest")
            if title != "chart":
                s = results.scores
                m = s[(s.seed == s.seed.min()) & (s.init == title) & (s.season == season)]["miou"].iloc[0]
                title = f"{title} (mIoU {m:.2f})"
            ax.set_title(f"{season}: {title}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def confusion_figure(results: SarTransferResults):
    """Row-normalised confusion matrices summed over seeds (rows: chart, columns: prediction)."""
    import matplotlib.pyplot as plt

    inits = results.evaluated
    seasons = list(results.example.test_scenes)
    fig, axes = plt.subplots(len(seasons), len(inits), figsize=(3.6 * len(inits), 3.5 * len(seasons)),
                             squeeze=False)
    short = ["water", "young", "FYI", "MYI"]
    for row, season in zip(axes, seasons):
        for ax, init in zip(row, inits):
            m = results.confusion[(init, season)].astype(float)
            with np.errstate(invalid="ignore"):
                norm = m / m.sum(axis=1, keepdims=True)
            ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
            for i in range(NUM_CLASSES):
                if not np.isfinite(norm[i]).any():
                    ax.text(NUM_CLASSES / 2 - 0.5, i, "not in chart", ha="center", va="center", fontsize=7,
                            color="#777777")
                for j in range(NUM_CLASSES):
                    if np.isfinite(norm[i, j]):
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.6 else "black")
            ax.set_xticks(range(NUM_CLASSES), short, fontsize=7)
            ax.set_yticks(range(NUM_CLASSES), short, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("chart", fontsize=8)
            ax.set_title(f"{season}: {init}", fontsize=9)
    fig.tight_layout()
    return fig


def run_from_config(cfg, progress: bool = True) -> SarTransferResults:
    """:func:`run_study` with a notebook's :class:`labkit.Config`."""
    return run_study(
        cfg.seeds, cfg.inits, n_epochs=cfg.n_epochs, lr=cfg.lr, batch_size=cfg.batch_size, patience=cfg.patience,
        decoder_channels=cfg.decoder_channels,
        scene_size=cfg.scene_size, tile=cfg.tile, n_train_tiles=cfg.n_train_tiles, val_fraction=cfg.val_fraction,
        overlap=cfg.overlap, looks=cfg.looks, pretrain_if_missing=cfg.pretrain_if_missing,
        pretrain_kwargs=dict(n_tiles=cfg.pretrain_tiles, epochs=cfg.pretrain_epochs, tile=cfg.pretrain_tile,
                             seed=0),
        progress=progress)


def data_from_config(cfg) -> SarData:
    """The first seed's simulated year (the scenes shown in the notebook's figures)."""
    return make_data(cfg.seeds[0], cfg.scene_size, cfg.tile, cfg.n_train_tiles, cfg.val_fraction, cfg.looks)
