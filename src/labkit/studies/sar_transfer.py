"""SAR sea-ice segmentation: transfer learning versus randomly initialised weights.

Reproduces Karimzadeh and Pires de Lima (IGARSS 2023, arXiv 2310.17126) over labkit: a ResNet-18
truncated after its third residual stage (layer3, as in the group's public code) with a DeepLabV3 head
segments dual-polarisation SAR scenes into open water, young ice, first-year ice and multi-year ice. The
same network is trained from random weights and from a pretrained encoder, with everything else identical
(seed, decoder initialisation, tiles, batch order, schedule).

The study, in the kit's order:

1. **data** (:func:`make_data`): ``data_source`` ``simulated`` (a year of East Greenland scenes per seed,
   several freeze and melt test scenes, each with its own weather) or real scenes from ``data_root``
   (``ai4arctic``, ``geotiff``, ``extremeearth``), whose scene list decides the splits.
2. **the grid** (:func:`run_task`, :func:`run`): arm x seed x training-tile count, each task trains (or
   fits the pixel classifier) and scores every test scene; cached, resumable, on any executor.
3. **claims** (:func:`declare_claims`, :func:`claim_tables`): the paper's three claims for each pretrained
   arm, with the preconditions that make them testable (the pretrained encoder's frozen linear probe beats a
   random encoder's; both arms plateau; the baseline is data-limited).
4. **tables** and 5. **figures**.

Pretrained encoders ("arms"):

* ``imagenet``: timm's ImageNet ResNet-18 (``imagenet_weights``: ``pretrained`` or a file), first
  convolution adapted from RGB to 2 bands by timm. Offline and without a file it is *not evaluated*.
* ``cross_sensor``: ``cross_sensor_weights``, by default the labkit checkpoint ``noisy-pretrained-unet-r18``
  (a ResNet-18 U-Net encoder the noisy-label study trained on 4-band optical land-cover tiles; declared
  under ``consumes:`` so it is part of the run's fingerprint), or any ResNet-18 state dict file (e.g.
  Sentinel-1 pretrained weights). Its first convolution is adapted to the 2 SAR bands
  (:func:`adapt_input_conv_weight`). This is a cross-sensor transfer, not the paper's ImageNet transfer,
  and is named so in every claim.
* ``random``: the reference. ``gbm`` (gradient boosting on per-pixel HH/HV and local means) and
  ``majority`` (the training tiles' most common class) are reference rows, not claims.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from labkit.core.claims import BUDGET_KEYS, Claim, Compare, Precondition, budget_record
from labkit.core.errors import (
    CheckpointMismatchError,
    ParameterError,
    WeightsUnavailableError,
)
from labkit.core.grid import grid_task
from labkit.core.metrics import ConfusionMatrix, aggregate_over_seeds
from labkit.core.seeding import seed_everything
from labkit.data import sar
from labkit.data.sar import CLASS_NAMES, IGNORE_INDEX

STUDY = "sar_transfer"
CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
NUM_CLASSES = len(CLASS_NAMES)
IN_CHANNELS = 2
INITS = ("random", "imagenet", "cross_sensor")
PRETRAINED_ARMS = ("imagenet", "cross_sensor")  # the paper's arm first: it is the headline when evaluated
REFERENCE_ARMS = ("gbm", "majority")
ARM_LABELS = {
    "random": "random initialisation",
    "imagenet": "ImageNet-pretrained encoder (optical RGB -> SAR; the paper's arm)",
    "cross_sensor": "cross-sensor transfer: an encoder pretrained on another sensor (by default labkit's 4-band "
    f"optical land-cover encoder '{CHECKPOINT_NAME}')",
    "gbm": "gradient-boosting pixel classifier on HH/HV and their local means (reference)",
    "majority": "majority class of the training tiles (floor)",
}
TRAIN_MONTHS = (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)
TEST_MONTHS = {"freeze": 1, "melt": 7}  # the held-out test months of the paper (January, July)
SEASONS = ("freeze", "melt")
TASK = "labkit.studies.sar_transfer:run_task"
PAPER_DATASET = "extremeearth"


# ---------------------------------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------------------------------

ENCODER_DEPTH = 4  # smp stages kept: stem, layer1, layer2, layer3 (layer4 dropped)
OUTPUT_STRIDE = 16  # layer3's stride in an undilated ResNet-18: tiles must be a multiple of it


def check_sizes(scene_size: int, tile: int, val_fraction: float = 0.25) -> None:
    """ParameterError unless a training and a validation tile fit in a scene and the tile suits the network."""
    if tile % OUTPUT_STRIDE:
        raise ParameterError(
            f"tile must be a multiple of {OUTPUT_STRIDE} (the truncated ResNet-18's output stride), got {tile}"
        )
    if scene_size < 2 * tile or scene_size * (1.0 - val_fraction) < tile:
        raise ParameterError(
            f"scene_size {scene_size} is too small for tile {tile}: each training scene must hold a training tile "
            f"above and a validation tile below its lower {val_fraction:.0%} of rows (scene_size >= 2 x tile)"
        )


def _weights_file(value: str, name: str) -> Path | None:
    """The file a weights parameter names (None for 'pretrained' / 'labkit:<name>'); it must exist."""
    if value in ("pretrained", "random") or value.startswith("labkit:"):
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ParameterError(
            f"parameter '{name}': weights file {path} does not exist (give a .safetensors/.pth "
            "ResNet-18 state dict, or "
            + ("'pretrained'" if name == "imagenet_weights" else f"'labkit:{CHECKPOINT_NAME}'")
            + ")"
        )
    return path


def check_settings(cfg) -> None:
    """Every check that needs no work, before any: sizes, tiles, the data folder, weights files.

    At the ``paper`` preset without ``data_root`` this stops at once, naming the dataset, the folder layout
    and where it is published.
    """
    source = cfg["data_source"]
    root = cfg["data_root"]
    if source not in sar.DATA_SOURCES:
        raise ParameterError(f"parameter 'data_source' must be one of {sar.DATA_SOURCES}, got {source!r}")
    if source != "simulated" and not root:
        dataset = {"extremeearth": sar.EXTREMEEARTH_PUBLISHED, "ai4arctic": sar.AI4ARCTIC_PUBLISHED}.get(
            source, "your own dual-polarisation scenes"
        )
        preset = getattr(cfg, "preset", "")
        raise ParameterError(
            f"data_source '{source}'{' (the paper preset)' if preset == 'paper' else ''} needs data_root: a folder "
            f"laid out as\n{sar.describe_layout(source).format(data_root='<data_root>')}\nDataset: {dataset}. "
            f"Run: labkit reproduce {STUDY} -p preset {preset or 'default'} -p data_source {source} "
            "-p data_root /path/to/folder (see docs/data/sar_transfer.md)"
        )
    if root and not Path(root).expanduser().is_dir():
        raise ParameterError(f"parameter 'data_root': {root} is not a folder")
    if root and source == "simulated":
        raise ParameterError(
            "parameter 'data_root' is set but data_source is 'simulated': set data_source to "
            f"one of {sar.DATA_SOURCES[1:]}"
        )
    check_sizes(cfg["scene_size"], cfg["tile"], cfg["val_fraction"])
    tiles = list(cfg["tiles"])
    if len(set(tiles)) < 2 or min(tiles) < 1:
        raise ParameterError(
            f"parameter 'tiles' needs at least two distinct positive training-tile counts (the "
            f"fewest is the data-limited regime the claims are judged in), got {tiles}"
        )
    unknown = [i for i in cfg["inits"] if i not in INITS]
    if unknown or "random" not in cfg["inits"]:
        raise ParameterError(
            f"parameter 'inits': {unknown or cfg['inits']} must name arms of {INITS} and include random (the reference)"
        )
    if cfg["sar_bands"] is not None and source != "geotiff":
        raise ParameterError("parameter 'sar_bands' names the bands of GeoTIFF scenes (data_source geotiff)")
    _weights_file(cfg["imagenet_weights"], "imagenet_weights")
    _weights_file(cfg["cross_sensor_weights"], "cross_sensor_weights")
    if cfg["n_steps"] < 2 * math.ceil(min(tiles) / cfg["batch_size"]):
        raise ParameterError(
            f"parameter 'n_steps' {cfg['n_steps']} gives the fewest tiles ({min(tiles)}) less than "
            "2 epochs: convergence cannot be measured"
        )
    if source != "simulated":
        sar.read_scene_list(Path(root).expanduser(), source)  # the list and its files, before any work


def data_settings(cfg) -> dict[str, Any]:
    """The JSON-able data parameters a grid task needs to build its data."""
    root = cfg["data_root"]
    return {
        "data_source": cfg["data_source"],
        "data_root": str(Path(root).expanduser().resolve()) if root else None,
        "sar_bands": list(cfg["sar_bands"]) if cfg["sar_bands"] else None,
        "scene_size": cfg["scene_size"],
        "tile": cfg["tile"],
        "val_fraction": cfg["val_fraction"],
        "n_val_tiles": cfg["n_val_tiles"],
        "looks": cfg["looks"],
        "n_test_scenes": cfg["n_test_scenes"],
        "max_tiles": max(cfg["tiles"]),
    }


@dataclasses.dataclass
class SarData:
    """One seed's scenes: training (and validation) scenes, test scenes, the band normaliser."""

    train_scenes: list[sar.SarScene]
    val_scenes: list[sar.SarScene]
    test_scenes: list[sar.SarScene]
    normalizer: sar.BandNormalizer
    source: str

    @property
    def scenes(self) -> list[sar.SarScene]:
        return self.train_scenes + self.val_scenes + self.test_scenes


def _simulated(settings: Mapping, seed: int) -> SarData:
    size, looks = settings["scene_size"], settings["looks"]
    train = [sar.simulate_scene(m, size=size, seed=(seed,), looks=looks) for m in TRAIN_MONTHS]
    test = []
    for season, month in TEST_MONTHS.items():
        for k in range(settings["n_test_scenes"]):  # each its own wind and weather draw
            scene = sar.simulate_scene(month, size=size, seed=(seed, 1000 + k), looks=looks, name=f"{season}_{k + 1}")
            scene.meta["season"] = season
            test.append(scene)
    return SarData(train, [], test, sar.BandNormalizer().fit(train), "simulated")


def _real(settings: Mapping) -> SarData:
    source, root = settings["data_source"], Path(settings["data_root"])
    entries = sar.read_scene_list(root, source)
    scenes = {"train": [], "val": [], "test": []}
    for entry in entries:
        scene = sar.load_scene(entry, source, settings.get("sar_bands"))
        sar.check_tile_fits(scene, settings["tile"])
        scenes[entry.split].append(scene)
    test = [s for s in scenes["test"] if s.season in SEASONS]
    return SarData(scenes["train"], scenes["val"], test, sar.BandNormalizer().fit(scenes["train"]), source)


@functools.lru_cache(maxsize=2)
def _cached_data(key: str) -> SarData:
    settings = json.loads(key)
    seed = settings.pop("_seed")
    if settings["data_source"] == "simulated":
        return _simulated(settings, seed)
    return _real(settings)


def make_data(settings: Mapping, seed: int) -> SarData:
    """The scenes of ``seed`` (simulated: each seed its own year; real: the same scenes for every seed)."""
    key = dict(settings)
    key["_seed"] = int(seed) if settings["data_source"] == "simulated" else 0
    return _cached_data(json.dumps(key, sort_keys=True))


def _val_split(data: SarData, settings: Mapping) -> float:
    """Fraction of rows of each training scene used for training tiles (the rest: validation)."""
    if data.val_scenes:
        return 1.0
    tile = settings["tile"]
    return 1.0 - max(settings["val_fraction"], tile / min(s.shape[0] for s in data.train_scenes))


def training_tiles(data: SarData, settings: Mapping, seed: int, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_tiles`` of one seeded draw of ``max_tiles`` tiles: fewer tiles are a subset of more."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    images, masks = sar.sample_tiles(
        data.train_scenes,
        data.normalizer,
        settings["tile"],
        max(settings["max_tiles"], n_tiles),
        rng,
        rows=(0.0, _val_split(data, settings)),
    )
    return images[:n_tiles], masks[:n_tiles]


def validation_tiles(data: SarData, settings: Mapping, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation tiles: the val scenes, or the lower rows of the training scenes; at most ``n_val_tiles``."""
    if data.val_scenes:
        images, masks = sar.grid_tiles(data.val_scenes, data.normalizer, settings["tile"])
    else:
        images, masks = sar.grid_tiles(
            data.train_scenes, data.normalizer, settings["tile"], rows=(_val_split(data, settings), 1.0)
        )
    n = settings["n_val_tiles"]
    if len(images) > n:
        keep = np.sort(
            np.random.default_rng(np.random.SeedSequence([int(seed), 11])).choice(len(images), n, replace=False)
        )
        images, masks = images[keep], masks[keep]
    return images, masks


def data_from_config(cfg) -> SarData:
    """The first seed's scenes (the notebook's figures); checks every setting first."""
    check_settings(cfg)
    return make_data(data_settings(cfg), cfg["seeds"][0])


def data_inputs(cfg) -> dict[str, str]:
    """Digests of the real data a grid reads (part of every task's fingerprint)."""
    from labkit.core.grid import file_digest

    if cfg["data_source"] == "simulated":
        return {}
    return {"data_root": file_digest(Path(cfg["data_root"]).expanduser())}


# ---------------------------------------------------------------------------------------------------
# Models and pretrained encoders
# ---------------------------------------------------------------------------------------------------


def create_model(
    num_classes: int = NUM_CLASSES,
    in_channels: int = IN_CHANNELS,
    weights: str = "random",
    decoder_channels: int = 256,
    weights_path=None,
):
    """ResNet-18 truncated after its third residual stage with a DeepLabV3 head, from the foundation's factory.

    As the group's public code (torchvision ``resnet18`` through ``IntermediateLayerGetter`` with
    ``return_layers={"layer3": "out"}`` and ``DeepLabHead(256, classes)``): the encoder keeps the stem,
    layer1, layer2 and layer3 (smp ``encoder_depth=4``, 256 channels at stride 16, no dilation); layer4 is
    dropped. The head is ASPP (rates 12, 24, 36 and image pooling; width ``decoder_channels``, 256 in
    torchvision's DeepLabHead), a 3x3 convolution and a 1x1 classifier, upsampled x16 to the input size.
    """
    from labkit.models.segmentation import create_segmenter

    return create_segmenter(
        "deeplabv3",
        encoder="resnet18",
        encoder_depth=ENCODER_DEPTH,
        in_channels=in_channels,
        num_classes=num_classes,
        weights=weights,
        decoder_channels=decoder_channels,
        encoder_output_stride=OUTPUT_STRIDE,
        weights_path=weights_path,
    )


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
    for prefix in ("encoder.", "backbone.", "module."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key if key.startswith("model.") else f"model.{key}"


def adapt_encoder_state(
    state: dict, encoder: nn.Module, in_chans: int = IN_CHANNELS, source: str = f"labkit checkpoint '{CHECKPOINT_NAME}'"
) -> tuple[dict, dict]:
    """Fit a ResNet-18 encoder state dict (from a deeper encoder, any band count) into the truncated encoder.

    Stages beyond the truncation (layer4, a classifier) are dropped and listed; the first convolution is
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
        raise CheckpointMismatchError(
            f"{source} lacks {len(missing)} key(s) of the truncated ResNet-18 encoder: "
            f"{missing[:8]} (is it a ResNet-18 encoder state dict?)"
        )
    loaded = {k: adapted.get(k, renamed[k]) for k in own}
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in loaded.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        raise CheckpointMismatchError(f"{source} does not fit the truncated ResNet-18 encoder: {shapes[:4]}")
    source_bands = int(renamed[conv_key].shape[1]) if conv_key in renamed else None
    info = {
        "dropped_keys": len(dropped),
        "dropped_stages": sorted({k.split(".")[1] for k in dropped}),
        "first_conv_bands": f"{source_bands} -> {in_chans}",
    }
    return loaded, info


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


def _source_state(arm: str, cfg) -> tuple[dict, dict]:
    """(state dict, provenance) of a pretrained arm's source weights; WeightsUnavailableError if missing."""
    from labkit.core.checkpoints import load_checkpoint
    from labkit.core.grid import file_digest

    if arm == "imagenet":
        spec = cfg["imagenet_weights"]
        file = _weights_file(spec, "imagenet_weights")
        model = create_model(weights="pretrained", weights_path=file)
        provenance = {"weights": spec, "source": "timm resnet18 ImageNet weights; first conv RGB -> 2 bands by timm"}
        if file is not None:
            provenance.update(file=str(file), sha256=file_digest(file))
        return {
            f"model.{k}" if not k.startswith("model.") else k: v for k, v in model.encoder.state_dict().items()
        }, provenance
    spec = cfg["cross_sensor_weights"]
    if spec.startswith("labkit:"):
        from labkit.models.registry import load_named_checkpoint, named_checkpoint_path

        name = spec.split(":", 1)[1]
        produced = False
        try:
            state, meta = load_named_checkpoint(name)
        except WeightsUnavailableError as exc:
            if not cfg["pretrain_if_missing"] or name != CHECKPOINT_NAME:
                raise WeightsUnavailableError(
                    f"{str(exc).strip().splitlines()[0]} (or set pretrain_if_missing to "
                    "produce it here with a small budget)"
                ) from exc
            _produce_cross_sensor(cfg)
            state, meta = load_named_checkpoint(name)
            produced = True
        path = named_checkpoint_path(name)
        provenance = {
            "weights": spec,
            "checkpoint": name,
            "file": str(path),
            "sha256": file_digest(path),
            "sidecar": str(path.with_suffix(".json")),
            "produced_here": produced,
            "checkpoint_meta": {k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float, bool))},
        }
        return state, provenance
    file = _weights_file(spec, "cross_sensor_weights")
    state, meta = load_checkpoint(file)
    return state, {
        "weights": spec,
        "file": str(file),
        "sha256": file_digest(file),
        "produced_here": False,
        "checkpoint_meta": {k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float, bool))},
    }


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
                loaded, info = adapt_encoder_state(
                    state, encoder, IN_CHANNELS, source=f"{arm} weights ({cfg[arm + '_weights']})"
                )
                provenance.update(info)
                folder = cache_dir(f"{STUDY}/encoders")
                tmp = save_checkpoint(folder / f"{arm}-staging", loaded, {"arm": arm, **_flat(provenance)})
                digest = file_digest(tmp)
                path = folder / f"{arm}-{digest[:16]}.safetensors"
                tmp.replace(path)
                tmp.with_suffix(".json").replace(path.with_suffix(".json"))
                row.update(provenance=provenance, path=str(path), digest=digest)
            except WeightsUnavailableError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                row.update(status="not evaluated", reason=f"weights unavailable: {first}")
        out[arm] = row
    return out


def _flat(d: Mapping) -> dict:
    return {k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in d.items()}


def unavailable_arms(weights: Mapping[str, dict]) -> dict[str, str]:
    """``{arm: reason}`` for the arms that cannot run (context for :func:`declare_claims`)."""
    return {arm: row["reason"] for arm, row in weights.items() if row["status"] != "ok"}


def build_model(arm: str, seed: int, encoder_path: str | None = None, decoder_channels: int = 256) -> nn.Module:
    """The segmenter for one arm; the decoder and head start identical across arms because the model is
    built from the same seed before the encoder weights are replaced."""
    from labkit.core.checkpoints import load_checkpoint

    seed_everything(seed)
    model = create_model(weights="random", decoder_channels=decoder_channels)
    if arm != "random":
        if encoder_path is None:
            raise WeightsUnavailableError(f"arm '{arm}' has no encoder weights")
        state, _ = load_checkpoint(encoder_path)
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


def predict_scene(
    model: nn.Module,
    scene: sar.SarScene,
    normalizer: sar.BandNormalizer,
    tile: int,
    overlap: float,
    batch_size: int = 8,
) -> np.ndarray:
    """Class map of a whole scene by sliding-window inference; no-data and land pixels -> IGNORE_INDEX.
    Memory: one batch of tiles plus the scene's class probabilities (never whole-scene feature maps)."""
    from labkit.methods.inference import sliding_window_predict

    probs = sliding_window_predict(
        model, normalizer.transform(scene.sar), NUM_CLASSES, tile=tile, overlap=overlap, batch_size=batch_size
    )
    pred = probs.argmax(0).astype(np.int64)
    pred[~scene.valid] = IGNORE_INDEX
    return pred


def _score_scenes(data: SarData, predict, keep_maps: bool) -> dict[str, Any]:
    rows, confusion, maps = [], {}, {}
    for scene in data.test_scenes:
        pred = predict(scene)
        pred[~scene.valid] = IGNORE_INDEX
        cm = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX).update(np.where(pred == IGNORE_INDEX, 0, pred), scene.labels)
        rows.append(
            {
                "scene": scene.name,
                "season": scene.season,
                "month": scene.month,
                "wind_speed": float(scene.meta.get("wind_speed", float("nan"))),
                "air_temperature": float(scene.meta.get("air_temperature", float("nan"))),
                **scene_scores(cm),
            }
        )
        confusion[scene.name] = cm.matrix.astype(np.int64)
        if keep_maps:
            maps[scene.name] = pred.astype(np.uint8)
    return {"scenes": rows, "confusion": confusion, "maps": maps}


def pixel_features(image: np.ndarray) -> np.ndarray:
    """(H*W, 8) per-pixel features of a normalised (2, H, W) image: HH, HV, their 5x5 and 11x11 local means,
    HH - HV and its 5x5 local mean (an affine map of dB, so trees see the dB values)."""
    from scipy import ndimage

    hh, hv = image[0].astype(np.float32), image[1].astype(np.float32)
    feats = [hh, hv]
    for size in (5, 11):
        feats += [ndimage.uniform_filter(hh, size, mode="reflect"), ndimage.uniform_filter(hv, size, mode="reflect")]
    diff = hh - hv
    feats += [diff, ndimage.uniform_filter(diff, 5, mode="reflect")]
    return np.stack(feats, axis=-1).reshape(-1, len(feats))


# ---------------------------------------------------------------------------------------------------
# 2. The grid: one task per arm x seed x training-tile count
# ---------------------------------------------------------------------------------------------------


def late_gain(curve: Sequence[float]) -> float:
    """Best score in the last fifth of the epochs minus the best before it (plateau: small or negative)."""
    values = np.asarray(curve, dtype=float)
    if len(values) < 2:
        return float("nan")
    k = max(1, len(values) // 5)
    return float(np.nanmax(values[-k:]) - np.nanmax(values[:-k]))


@grid_task("sar_transfer/run")
def run_task(
    arm: str,
    seed: int,
    n_tiles: int,
    data: Mapping,
    train: Mapping,
    encoder: Mapping | None = None,
    keep_maps: bool = False,
    probe: Mapping | None = None,
) -> dict[str, Any]:
    """One grid task: train ``arm`` (or fit a reference classifier) on ``n_tiles`` tiles of ``seed``'s data,
    then score every test scene whole. Returns a record: the learning curve, per-scene scores, confusion
    matrices (and the predicted maps when ``keep_maps``). With ``probe`` (``{"steps", "lr"}``) the task is
    the arm's frozen linear probe instead (:func:`_probe_task`; its record has ``probe: True``)."""
    started, cpu = time.perf_counter(), time.process_time()
    d = make_data(data, seed)
    images, masks = training_tiles(d, data, seed, n_tiles)
    if probe is not None:
        out = _probe_task(arm, seed, d, data, train, images, masks, encoder, probe)
    elif arm in REFERENCE_ARMS:
        out = _reference_task(arm, seed, d, images, masks, keep_maps)
    else:
        out = _network_task(arm, seed, d, data, train, images, masks, encoder, keep_maps)
    out.update(
        arm=arm,
        seed=int(seed),
        n_tiles=int(n_tiles),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu,
    )
    return out


def _reference_task(arm, seed, d, images, masks, keep_maps):
    labelled = masks != IGNORE_INDEX
    if arm == "majority":
        majority = int(np.bincount(masks[labelled].ravel(), minlength=NUM_CLASSES).argmax())
        return _score_scenes(d, lambda scene: np.full(scene.shape, majority, np.int64), keep_maps) | {
            "majority_class": CLASS_NAMES[majority]
        }
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.concatenate([pixel_features(img)[lab.ravel()] for img, lab in zip(images, labelled)])
    y = np.concatenate([m[lab] for m, lab in zip(masks, labelled)])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    if len(y) > 40_000:
        keep = rng.choice(len(y), 40_000, replace=False)
        x, y = x[keep], y[keep]
    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=int(seed)).fit(x, y)

    def predict(scene):
        return clf.predict(pixel_features(d.normalizer.transform(scene.sar))).reshape(scene.shape).astype(np.int64)

    return _score_scenes(d, predict, keep_maps) | {"train_pixels": int(len(y))}


def _network_task(arm, seed, d, data, train, images, masks, encoder, keep_maps):
    from torch.utils.data import DataLoader, TensorDataset

    from labkit.core.device import resolve_device
    from labkit.methods.training import fit

    device = resolve_device(train["device"], announce=False)
    val_x, val_y = validation_tiles(d, data, seed)
    model = build_model(arm, seed, (encoder or {}).get("path"), train["decoder_channels"]).to(device)
    batch = train["batch_size"]
    steps_per_epoch = math.ceil(len(images) / batch)
    epochs = max(2, math.ceil(train["n_steps"] / steps_per_epoch))
    # The same generator seed gives every arm the same batches in the same order.
    order = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(
        TensorDataset(torch.from_numpy(images), torch.from_numpy(masks)),
        batch_size=batch,
        shuffle=True,
        generator=order,
    )
    val_loader = DataLoader(TensorDataset(torch.from_numpy(val_x), torch.from_numpy(val_y)), batch_size=64)
    result = fit(
        model,
        loader,
        val_loader,
        task="segmentation",
        num_classes=NUM_CLASSES,
        epochs=epochs,
        lr=train["lr"],
        optimizer="adam",
        weight_decay=0.0,
        scheduler=None,
        ignore_index=IGNORE_INDEX,
        monitor="miou",
        seed=int(seed),
        progress=False,
    )
    history = result.history
    curve = history["val_miou"].to_numpy(dtype=float)
    model = result.model.eval()
    steps = int(len(curve)) * steps_per_epoch  # optimiser steps actually taken (the last batch may be partial)
    budget = budget_record(
        steps,
        min(batch, len(images)),
        train["lr"],
        f"constant lr (Adam, no decay) over {steps} steps ({len(curve)} epochs x {steps_per_epoch}); "
        "best validation epoch kept",
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    out = _score_scenes(
        d, lambda scene: predict_scene(model, scene, d.normalizer, data["tile"], train["overlap"]), keep_maps
    )
    out.update(
        val_miou=curve,
        train_loss=history["train_loss"].to_numpy(dtype=float),
        epochs=int(len(curve)),
        steps_per_epoch=int(steps_per_epoch),
        best_val_miou=float(np.nanmax(curve)),
        late_gain=late_gain(curve),
        val_tiles=int(len(val_x)),
        device=str(device),
        budget=budget,
    )
    return out


# ---- the "features learned" control: a frozen linear probe per arm -----------------------------------

PROBE_STEPS = 60  # optimiser steps of every arm's probe (the same for all arms and presets)
PROBE_LR = 1e-2  # Adam on the readout alone (about a thousand weights): a linear probe's usual rate


class FrozenProbe(nn.Module):
    """An arm's network cut to its frozen encoder and a linear per-pixel readout.

    The encoder (ResNet-18 to layer3, 256 channels at stride 16, exactly as :func:`build_model` made it) is
    kept at its initial weights in eval mode (batch-norm statistics frozen too); its deepest feature map is
    standardised per channel with fixed statistics of the training tiles' features (as a linear probe's
    affine-free batch norm) and read out by one 1x1 convolution to the classes, whose logits are bilinearly
    upsampled x16 to the input size. Only the 1x1 convolution trains: the probe is linear in the features.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        channels = int(encoder.out_channels[-1])
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self.readout = nn.Conv2d(channels, num_classes, kernel_size=1)

    def train(self, mode: bool = True):  # the encoder stays in eval mode whatever the probe's mode
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's standardised deepest features (no gradient ever reaches the encoder)."""
        return (self.encoder(x)[-1] - self.mean) / self.std

    def head(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return nn.functional.interpolate(self.readout(features), size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), tuple(x.shape[-2:]))


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (parameters and buffers): equal digests, equal weights."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_probe(
    probe: FrozenProbe, images: np.ndarray, masks: np.ndarray, steps: int, lr: float, batch: int, seed: int
) -> list[float]:
    """Fit the probe's readout on the training tiles: the frozen features are computed once, then ``steps``
    Adam steps on shuffled batches (the same order for every arm of a seed). Returns the loss per step."""
    x = torch.from_numpy(images)
    y = torch.from_numpy(masks).long()
    device = probe.readout.weight.device
    with torch.no_grad():
        raw = torch.cat([probe.encoder(x[i : i + 64].to(device))[-1] for i in range(0, len(x), 64)])
        probe.mean.copy_(raw.mean(dim=(0, 2, 3), keepdim=True))
        probe.std.copy_(raw.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))
        feats = (raw - probe.mean) / probe.std
    optimiser = torch.optim.Adam(probe.readout.parameters(), lr=lr)
    order = torch.Generator().manual_seed(int(seed))
    size = tuple(x.shape[-2:])
    losses, queue = [], torch.empty(0, dtype=torch.long)
    probe.train()
    for _ in range(steps):
        if len(queue) < batch:  # a fresh shuffle each epoch; every batch is full
            queue = torch.cat([queue, torch.randperm(len(x), generator=order)])
        idx, queue = queue[:batch], queue[batch:]
        target = y[idx].to(device)
        logits = probe.head(feats[idx], size)
        loss = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss / (target != IGNORE_INDEX).sum().clamp_min(1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def _probe_task(arm, seed, d, data, train, images, masks, encoder, probe) -> dict[str, Any]:
    """The "features learned" control of one arm and seed: :func:`build_model`'s network for ``arm`` with its
    encoder frozen at its initial (pretrained or random) weights and only a linear per-pixel readout trained
    (:class:`FrozenProbe`: a 1x1 convolution on layer3's standardised features, logits upsampled x16) on the
    training tiles the arm's network trains on in :func:`run_task`, for ``probe["steps"]`` steps (equal for every arm), then
    scored on every test scene whole as the grid scores (mIoU per scene; the claim table averages them)."""
    from labkit.core.device import resolve_device

    device = resolve_device(train["device"], announce=False)
    network = build_model(arm, seed, (encoder or {}).get("path"), train["decoder_channels"])
    model = FrozenProbe(network.encoder).to(device)
    before = state_digest(model.encoder)
    batch = min(train["batch_size"], len(images))
    losses = train_probe(model, images, masks, probe["steps"], probe["lr"], batch, seed)
    model.eval()
    out = _score_scenes(
        d, lambda scene: predict_scene(model, scene, d.normalizer, data["tile"], train["overlap"]), False
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out.update(
        probe=True,
        train_loss=np.asarray(losses, float),
        encoder_digest_before=before,
        encoder_digest_after=state_digest(model.encoder),
        readout="1x1 conv on layer3's standardised features, logits bilinearly upsampled x16",
        budget=budget_record(
            len(losses),
            batch,
            probe["lr"],
            f"constant lr (Adam, no decay) over {len(losses)} steps on the frozen encoder's features; last step kept",
            trainable,
        ),
    )
    return out


def train_settings(cfg) -> dict[str, Any]:
    """The JSON-able training parameters of a grid task (the device resolved here, once)."""
    from labkit.core.device import resolve_device

    return {
        "n_steps": cfg["n_steps"],
        "lr": cfg["lr"],
        "batch_size": cfg["batch_size"],
        "decoder_channels": cfg["decoder_channels"],
        "overlap": cfg["overlap"],
        "device": str(resolve_device(cfg["device"], announce=False)),
    }


def build_grid(cfg, weights: Mapping[str, dict]):
    """The study's grid: every evaluated arm at the fewest tiles (the claims' regime) on every seed; random
    init and the pixel classifier at every tile count (the data-limited precondition and references); and
    every evaluated arm's frozen linear probe at the fewest tiles on every seed (the "features learned"
    precondition, :func:`_probe_task`)."""
    from labkit.core.grid import Grid

    grid = Grid(STUDY, TASK, inputs=data_inputs(cfg))
    data, train = data_settings(cfg), train_settings(cfg)
    tiles = sorted(set(cfg["tiles"]))
    few = tiles[0]
    arms = [a for a in INITS if a in weights and weights[a]["status"] == "ok"]
    first = cfg["seeds"][0]
    for seed in cfg["seeds"]:
        for n_tiles in tiles:
            for arm in arms + list(REFERENCE_ARMS):
                if n_tiles != few and arm not in ("random", "gbm"):
                    continue
                encoder = None
                if arm in PRETRAINED_ARMS:
                    encoder = {"path": weights[arm]["path"], "digest": weights[arm]["digest"]}
                grid.add(
                    arm=arm,
                    seed=int(seed),
                    n_tiles=int(n_tiles),
                    data=data,
                    train=train,
                    encoder=encoder,
                    keep_maps=bool(seed == first and n_tiles == few),
                )
        for arm in arms:  # the "features learned" control: each arm's frozen probe at the fewest tiles
            grid.add(
                arm=arm,
                seed=int(seed),
                n_tiles=int(few),
                data=data,
                train=train,
                encoder=None if arm == "random" else {"path": weights[arm]["path"], "digest": weights[arm]["digest"]},
                keep_maps=False,
                probe={"steps": PROBE_STEPS, "lr": PROBE_LR},
            )
    return grid


@dataclasses.dataclass
class SarTransferResults:
    """The grid's records (one per task; the frozen probes' records apart in ``probes``), the weights each arm
    used, and the settings."""

    records: list[dict]
    weights: dict
    settings: dict
    grid_seconds: float = 0.0
    cached: int = 0
    computed: int = 0
    probes: list[dict] = dataclasses.field(default_factory=list)  # the frozen-probe records (_probe_task)

    @property
    def evaluated(self) -> list[str]:
        return [a for a in INITS if a in self.weights and self.weights[a]["status"] == "ok"]

    @property
    def pretrained_arm(self) -> str | None:
        """The headline's pretrained arm: ImageNet (the paper's) when evaluated, else the cross-sensor one."""
        return next((a for a in PRETRAINED_ARMS if a in self.evaluated), None)

    @property
    def few(self) -> int:
        return min(self.settings["tiles"])

    @property
    def many(self) -> int:
        return max(self.settings["tiles"])

    def record(self, arm: str, seed: int, n_tiles: int) -> dict | None:
        return next(
            (r for r in self.records if r["arm"] == arm and r["seed"] == seed and r["n_tiles"] == n_tiles), None
        )


def run(cfg, weights: Mapping[str, dict] | None = None, progress: bool = True, **run_kwargs) -> SarTransferResults:
    """Run the study's grid with ``cfg.executor`` (``workers``, ``scheduler``); records are cached and resumed."""
    check_settings(cfg)
    weights = dict(weights) if weights is not None else resolve_weights(cfg)
    grid = build_grid(cfg, weights)
    options = {
        "executor": cfg["executor"],
        "workers": cfg["workers"],
        "scheduler": cfg["scheduler"],
        "progress": progress,
        **run_kwargs,
    }
    result = grid.run(**options)
    settings = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(cfg).items()}
    records = [r for r in result.records if r is not None]
    return SarTransferResults(
        records=[r for r in records if not r.get("probe")],
        probes=[r for r in records if r.get("probe")],
        weights=weights,
        settings=settings,
        grid_seconds=result.seconds,
        cached=result.cached,
        computed=result.computed,
    )


# ---------------------------------------------------------------------------------------------------
# Tidy tables
# ---------------------------------------------------------------------------------------------------


def scene_frame(results: SarTransferResults) -> pd.DataFrame:
    """One row per arm x seed x tile count x test scene: season, weather, mIoU, per-class IoU/F1."""
    rows = [
        {"arm": r["arm"], "seed": r["seed"], "n_tiles": r["n_tiles"], **s} for r in results.records for s in r["scenes"]
    ]
    return pd.DataFrame(rows)


def history_frame(results: SarTransferResults) -> pd.DataFrame:
    """Validation mIoU per epoch (and optimiser step) of every trained run."""
    rows = []
    for r in results.records:
        if "val_miou" not in r:
            continue
        for e, (v, loss) in enumerate(zip(r["val_miou"], r["train_loss"]), 1):
            rows.append(
                {
                    "arm": r["arm"],
                    "seed": r["seed"],
                    "n_tiles": r["n_tiles"],
                    "epoch": e,
                    "step": e * r["steps_per_epoch"],
                    "val_miou": float(v),
                    "train_loss": float(loss),
                }
            )
    return pd.DataFrame(rows, columns=["arm", "seed", "n_tiles", "epoch", "step", "val_miou", "train_loss"])


def season_frame(results: SarTransferResults) -> pd.DataFrame:
    """Per arm x seed x tile count: mean mIoU over the test scenes of each season, and over all (``all``)."""
    scenes = scene_frame(results)
    if scenes.empty:
        return pd.DataFrame(columns=["arm", "seed", "n_tiles", "season", "miou", "n_scenes"])
    by_season = scenes.groupby(["arm", "seed", "n_tiles", "season"], as_index=False).agg(
        miou=("miou", "mean"), n_scenes=("miou", "size")
    )
    overall = scenes.groupby(["arm", "seed", "n_tiles"], as_index=False).agg(
        miou=("miou", "mean"), n_scenes=("miou", "size")
    )
    return pd.concat([by_season, overall.assign(season="all")], ignore_index=True)


def curves_frame(results: SarTransferResults) -> pd.DataFrame:
    rows = [
        {
            "arm": r["arm"],
            "seed": r["seed"],
            "n_tiles": r["n_tiles"],
            "best_val_miou": r["best_val_miou"],
            "late_gain": r["late_gain"],
            "epochs": r["epochs"],
            "steps_per_epoch": r["steps_per_epoch"],
            "seconds": r["seconds"],
        }
        for r in results.records
        if "val_miou" in r
    ]
    return pd.DataFrame(
        rows, columns=["arm", "seed", "n_tiles", "best_val_miou", "late_gain", "epochs", "steps_per_epoch", "seconds"]
    )


def convergence_frame(results: SarTransferResults, fraction: float | None = None) -> pd.DataFrame:
    """Per pretrained arm (``pair``), seed and arm (the pretrained one and random), at the fewest tiles:
    epochs and optimiser steps to a **common** threshold, ``fraction`` of the lower of the two runs' best
    validation mIoU, so neither arm's bar depends on how high it ends."""
    fraction = results.settings["convergence_fraction"] if fraction is None else fraction
    rows = []
    for pre in [a for a in PRETRAINED_ARMS if a in results.evaluated]:
        for seed in results.settings["seeds"]:
            pair = {a: results.record(a, seed, results.few) for a in ("random", pre)}
            if any(v is None for v in pair.values()):
                continue
            bar = fraction * min(float(np.nanmax(v["val_miou"])) for v in pair.values())
            for arm, rec in pair.items():
                hits = np.flatnonzero(np.asarray(rec["val_miou"], float) >= bar)
                epoch = float(hits[0] + 1) if len(hits) else float("nan")
                rows.append(
                    {
                        "pair": pre,
                        "arm": arm,
                        "seed": seed,
                        "threshold": bar,
                        "epochs_to_common": epoch,
                        "steps_to_common": epoch * rec["steps_per_epoch"],
                        "best_val_miou": float(np.nanmax(rec["val_miou"])),
                    }
                )
    return pd.DataFrame(
        rows, columns=["pair", "arm", "seed", "threshold", "epochs_to_common", "steps_to_common", "best_val_miou"]
    )


def gains_frame(results: SarTransferResults) -> pd.DataFrame:
    """Per pretrained arm and seed, at the fewest tiles: melt and freeze gains over random (mean over each
    season's test scenes), melt gain minus |freeze gain|, and the largest and smallest class-wise freeze IoU
    gain (each class averaged over the freeze test scenes whose chart holds it)."""
    scenes = scene_frame(results)
    rows = []
    if scenes.empty:
        return pd.DataFrame(columns=["arm", "seed"])
    few = scenes[scenes.n_tiles == results.few]
    for pre in [a for a in PRETRAINED_ARMS if a in results.evaluated]:
        for seed in results.settings["seeds"]:
            s = few[few.seed == seed]
            a, r = s[s.arm == pre].set_index("scene"), s[s.arm == "random"].set_index("scene")
            if a.empty or r.empty:
                continue
            gain = {
                season: float(a.miou[a.season == season].mean() - r.miou[r.season == season].mean())
                for season in SEASONS
            }
            freeze = a.index[a.season == "freeze"]
            class_gain = {}
            for name in CLASS_NAMES:
                present = a.loc[freeze, f"present/{name}"].astype(bool)
                scenes_with = freeze[present.to_numpy()]
                if len(scenes_with):
                    class_gain[name] = float(
                        (a.loc[scenes_with, f"iou/{name}"] - r.loc[scenes_with, f"iou/{name}"]).mean()
                    )
            rows.append(
                {
                    "arm": pre,
                    "seed": seed,
                    "melt_gain": gain["melt"],
                    "freeze_gain": gain["freeze"],
                    "melt_gain_minus_abs_freeze_gain": gain["melt"] - abs(gain["freeze"]),
                    "max_class_gain": max(class_gain.values()) if class_gain else float("nan"),
                    "min_class_gain": min(class_gain.values()) if class_gain else float("nan"),
                    **{f"freeze_gain/{k}": v for k, v in class_gain.items()},
                }
            )
    return pd.DataFrame(rows)


BUDGET_TABLE_COLUMNS = ["arm", "n_tiles", *BUDGET_KEYS, "seeds"]


def budget_table(results: SarTransferResults) -> pd.DataFrame:
    """The training budget of every trained arm (the networks; ``gbm`` and ``majority`` train none): one row
    per arm, tile count and distinct budget, with the seeds that had it. The "same budget" precondition
    reads it; an arm whose seeds trained differently has several rows."""
    rows = [
        {"arm": r["arm"], "n_tiles": r["n_tiles"], "seed": r["seed"], **r["budget"]}
        for r in results.records
        if "budget" in r
    ]
    if not rows:
        return pd.DataFrame(columns=BUDGET_TABLE_COLUMNS)
    frame = pd.DataFrame(rows)
    keys = ["arm", "n_tiles", *BUDGET_KEYS]
    table = frame.groupby(keys, as_index=False, sort=False).agg(seeds=("seed", lambda s: len(set(s))))
    order = {a: i for i, a in enumerate(INITS)}
    table = table.sort_values(["n_tiles", "arm"], key=lambda c: c.map(order) if c.name == "arm" else c)
    return table[BUDGET_TABLE_COLUMNS].reset_index(drop=True)


PROBE_COLUMNS = ["arm", "seed", "n_tiles", "miou", "freeze_miou", "melt_miou", *BUDGET_KEYS]


def probe_frame(results: SarTransferResults) -> pd.DataFrame:
    """One row per arm and seed: its frozen linear probe's test mIoU (mean over the test scenes, as the study
    scores; and per season), with the probe's budget (the "features learned" precondition reads ``miou``)."""
    rows = []
    for r in results.probes:
        scenes = pd.DataFrame(r["scenes"])
        season = scenes.groupby("season")["miou"].mean()
        rows.append(
            {
                "arm": r["arm"],
                "seed": r["seed"],
                "n_tiles": r["n_tiles"],
                "miou": float(scenes["miou"].mean()),
                "freeze_miou": float(season.get("freeze", np.nan)),
                "melt_miou": float(season.get("melt", np.nan)),
                **r["budget"],
            }
        )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def probe_table(results: SarTransferResults) -> pd.DataFrame:
    """Per arm: its frozen linear probe's test mIoU (all scenes, freeze, melt), mean over seeds with 95 % CI."""
    probes = probe_frame(results)
    if probes.empty:
        return pd.DataFrame(columns=["arm", "n"])
    return aggregate_over_seeds(probes, ["miou", "freeze_miou", "melt_miou"], ["arm", "n_tiles"])


def claim_tables(results: SarTransferResults) -> dict[str, pd.DataFrame]:
    """The tidy tables the claims are judged on: ``runs`` (season mIoU per arm, seed, tile count; the
    ``majority`` floor included), ``curves`` (plateau per run), ``convergence`` (common-threshold epochs),
    ``gains``, ``budgets`` (each trained arm's steps, batch size, lr, schedule, trainable parameters) and
    ``probes`` (each arm's frozen linear probe: test mIoU per seed)."""
    return {
        "probes": probe_frame(results),
        "runs": season_frame(results),
        "curves": curves_frame(results),
        "convergence": convergence_frame(results),
        "gains": gains_frame(results),
        "budgets": budget_table(results),
    }


# ---------------------------------------------------------------------------------------------------
# 3. Claims
# ---------------------------------------------------------------------------------------------------

CLAIMS = {
    "faster_convergence": "An encoder pretrained on optical images and fine-tuned converges in fewer epochs "
    "than the same network from random weights.",
    "better_on_melt": "The pretrained encoder segments the melt-season scenes better (mIoU) than random "
    "initialisation.",
    "freeze_smaller_mixed": "On the freeze-season scenes the difference is smaller than the melt-season gain and "
    "mixed across classes.",
}


def claim_id(base: str, arm: str) -> str:
    """The paper's arm (ImageNet) keeps the paper's claim ids; another pretrained arm is suffixed."""
    return base if arm == "imagenet" else f"{base}_{arm}"


def _rename(pre: Precondition, name: str, why: str | None = None) -> Precondition:
    return dataclasses.replace(pre, name=name, why=why or pre.why)


# Effects of interest (labkit.core.claims): the paper reports no effect size for these comparisons.
PRACTICAL_MIOU = 0.02
PRACTICAL_SOURCE = "a stated practical size: 2 mIoU points (the paper reports no effect size)"
PRACTICAL_EPOCHS = 2.0
FLOOR_MARGIN = 0.02  # an arm the claims compare must beat the majority-class floor by this much test mIoU
EPOCHS_SOURCE = "a stated practical size: 2 epochs sooner to the common threshold (the paper reports no number)"


def declare_claims(cfg, unavailable: Mapping[str, str] | None = None, **context) -> list[Claim]:
    """The paper's three claims for each pretrained arm (ImageNet: the paper's ids; cross-sensor: suffixed),
    judged at the fewest training tiles, paired over seeds.

    Preconditions: both arms had the same budget (optimiser steps, batch size, schedule at the fewest tiles)
    and both score above the majority-class floor by :data:`FLOOR_MARGIN` test mIoU (over all test scenes
    for convergence, on the claim's season otherwise), for every claim; both arms plateau (the last fifth
    of training improves validation mIoU by less than ``plateau_gain``) for convergence; the baseline is
    data-limited (random init with the most tiles beats itself with the fewest by more than
    ``data_limited_margin`` test mIoU) for the season claims.

    Features learned, for every claim of a pretrained arm: that arm's frozen linear probe (:func:`_probe_task`)
    beats the random-init network's frozen probe in test mIoU, paired over seeds (table ``probes``); an encoder
    whose features a linear readout cannot use better than random ones gives its claims no footing.
    ``unavailable``: ``{arm: reason}`` for arms that cannot run (e.g. missing weights).
    """
    unavailable = dict(unavailable or {})
    tiles = sorted(set(cfg["tiles"]))
    few, many = tiles[0], tiles[-1]
    plateau, margin = cfg["plateau_gain"], cfg["data_limited_margin"]
    fraction = cfg["convergence_fraction"]
    data_limited = _rename(
        Precondition.label_limited(
            "miou",
            full={"arm": "random", "season": "all", "n_tiles": many},
            few={"arm": "random", "season": "all", "n_tiles": few},
            margin=margin,
        ),
        "data-limited",
        why=f"random init with {many} training tiles beats itself with {few} by more than "
        f"{margin:g} test mIoU (mean over the test scenes)",
    )
    claims = []
    for arm in PRETRAINED_ARMS:
        reason = unavailable.get(arm)
        if reason is None and arm not in cfg["inits"]:
            reason = f"arm '{arm}' was not run (add it to inits)"
        if reason is not None and arm == "imagenet" and "weights unavailable" in reason:
            reason += (
                "; put ImageNet ResNet-18 weights (resnet18.a1_in1k.safetensors) in LABKIT_WEIGHTS_DIR or "
                "pass -p imagenet_weights /path/to/file"
            )
        label = f"[{arm}] "
        plateaus = [
            _rename(Precondition.plateau("late_gain", {"arm": a, "n_tiles": few}, plateau), f"plateau ({a})")
            for a in ("random", arm)
        ]
        fast = Compare(
            "epochs_to_common",
            a={"pair": arm, "arm": "random"},
            b={"pair": arm, "arm": arm},
            table="convergence",
            label=f"{label}epochs to {fraction:.0%} of the lower arm's best val mIoU: random minus pretrained > 0",
            effect=PRACTICAL_EPOCHS,
            effect_source=EPOCHS_SOURCE,
        )
        melt = Compare(
            "miou",
            a={"arm": arm, "season": "melt", "n_tiles": few},
            b={"arm": "random", "season": "melt", "n_tiles": few},
            label=f"{label}melt-scene mIoU: pretrained minus random > 0",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        smaller = Compare(
            "melt_gain_minus_abs_freeze_gain",
            a={"arm": arm},
            b=0.0,
            table="gains",
            label=f"{label}melt gain minus |freeze gain| > 0",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        pos = Compare(
            "max_class_gain",
            a={"arm": arm},
            b=0.0,
            table="gains",
            label=f"{label}some freeze class gains (largest class-wise IoU gain > 0)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        neg = Compare(
            "min_class_gain",
            a={"arm": arm},
            b=0.0,
            greater=False,
            table="gains",
            label=f"{label}some freeze class loses (smallest class-wise IoU gain < 0)",
            effect=PRACTICAL_MIOU,
            effect_source=PRACTICAL_SOURCE,
        )
        same_budget = Precondition.same_budget(
            a={"arm": arm, "n_tiles": few},
            b={"arm": "random", "n_tiles": few},
            label=f"{arm} vs random at {few} tiles",
        )

        def floors(season: str, arm: str = arm) -> list[Precondition]:
            return [
                Precondition.above_floor(
                    "miou",
                    arm={"arm": a, "season": season, "n_tiles": few},
                    floor={"arm": "majority", "season": season, "n_tiles": few},
                    margin=FLOOR_MARGIN,
                    label=f"{a}, {season} scenes",
                )
                for a in (arm, "random")
            ]

        learned = Precondition.features_learned(
            "miou",
            pretrained={"arm": arm},
            random={"arm": "random"},
            table="probes",
            name=f"features learned ({arm})",
        )
        note = ARM_LABELS[arm]
        claims += [
            Claim(
                claim_id("faster_convergence", arm),
                CLAIMS["faster_convergence"],
                [fast],
                [learned, same_budget, *floors("all"), *plateaus],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
            Claim(
                claim_id("better_on_melt", arm),
                CLAIMS["better_on_melt"],
                [melt],
                [learned, same_budget, *floors("melt"), data_limited],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
            Claim(
                claim_id("freeze_smaller_mixed", arm),
                CLAIMS["freeze_smaller_mixed"],
                [smaller, pos, neg],
                [learned, same_budget, *floors("freeze"), data_limited],
                unavailable=reason,
                note=note + f"; judged at {few} training tiles",
            ),
        ]
    return claims


def headline_metrics(results: SarTransferResults) -> dict[str, Any]:
    """Numbers for metrics.json; ``melt_miou_pretrained`` (the headline) is the judged pretrained arm's melt
    mIoU at the fewest tiles (NaN when no pretrained arm ran)."""
    seasons = season_frame(results)
    out: dict[str, Any] = {
        "pretrained_arm": results.pretrained_arm or "none",
        "few_tiles": results.few,
        "many_tiles": results.many,
    }
    for (arm, n_tiles, season), g in seasons.groupby(["arm", "n_tiles", "season"]):
        out[f"{season}_miou_{arm}_{n_tiles}tiles"] = float(g["miou"].mean())
    conv = convergence_frame(results)
    for (pair, arm), g in conv.groupby(["pair", "arm"]):
        out[f"epochs_to_common_{arm}_vs_{pair}" if arm == "random" else f"epochs_to_common_{arm}"] = float(
            g["epochs_to_common"].mean()
        )
    pre = results.pretrained_arm
    few = seasons[seasons.n_tiles == results.few]
    for season in ("melt", "freeze"):
        sel = few[(few.arm == pre) & (few.season == season)] if pre else few.iloc[:0]
        out[f"{season}_miou_pretrained"] = float(sel["miou"].mean()) if len(sel) else float("nan")
    out["grid_seconds"] = results.grid_seconds
    out["grid_tasks_computed"] = results.computed
    out["grid_tasks_cached"] = results.cached
    for arm in PRETRAINED_ARMS:
        if arm in results.weights and results.weights[arm]["status"] == "ok":
            out[f"{arm}_weights_sha256"] = results.weights[arm]["provenance"].get("sha256", "")
    return out


# ---------------------------------------------------------------------------------------------------
# 4. Tables
# ---------------------------------------------------------------------------------------------------


def weights_table(weights: Mapping[str, dict]) -> pd.DataFrame:
    """Per arm: status, the weights it used (checkpoint, file, sha256, provenance from the sidecar), reason."""
    rows = []
    for arm, w in weights.items():
        prov = dict(w.get("provenance") or {})
        meta = prov.pop("checkpoint_meta", {})
        keep = (
            "weights",
            "checkpoint",
            "file",
            "sha256",
            "produced_here",
            "dropped_stages",
            "first_conv_bands",
            "source",
        )
        details = "; ".join(
            f"{k}: {str(prov[k])[:80] if k != 'sha256' else str(prov[k])[:16]}" for k in keep if k in prov
        )
        if meta:
            details += "; sidecar: " + ", ".join(
                f"{k}={meta[k]}"
                for k in ("study", "produced_by", "n_tiles", "epochs", "tile", "seed", "severity", "commit", "seconds")
                if k in meta
            )
        rows.append(
            {
                "arm": arm,
                "description": w["label"],
                "status": w["status"],
                "weights": details or "-",
                "reason": w["reason"][:300],
            }
        )
    return pd.DataFrame(rows, columns=["arm", "description", "status", "weights", "reason"])


def convergence_table(results: SarTransferResults) -> pd.DataFrame:
    """Per pretrained arm: epochs and optimiser steps of both arms to the common threshold, mean and 95 % CI."""
    conv = convergence_frame(results)
    if conv.empty:
        return pd.DataFrame()
    return aggregate_over_seeds(
        conv, ["epochs_to_common", "steps_to_common", "threshold", "best_val_miou"], ["pair", "arm"]
    )


def regime_table(results: SarTransferResults) -> pd.DataFrame:
    """The regime: test mIoU (all scenes) of random init and the references at each tile count, and the
    plateau measure (late gain) of each trained arm; floor (majority) and data-rich rows included."""
    seasons = season_frame(results)
    table = aggregate_over_seeds(seasons[seasons.season == "all"], "miou", ["arm", "n_tiles"])
    curves = curves_frame(results)
    if not curves.empty:
        late = aggregate_over_seeds(curves, ["late_gain", "best_val_miou", "seconds"], ["arm", "n_tiles"])
        table = table.merge(late.drop(columns="n"), on=["arm", "n_tiles"], how="left")
    role = {"majority": "floor", "gbm": "classical reference"}
    table.insert(
        2,
        "role",
        [
            role.get(a, "data-rich (ceiling)" if n == results.many else "claims' regime")
            for a, n in zip(table.arm, table.n_tiles)
        ],
    )
    return table.sort_values(["n_tiles", "arm"]).reset_index(drop=True)


def season_table(results: SarTransferResults) -> pd.DataFrame:
    """Per season, arm and tile count: mean over seeds of the season's mean scene mIoU, with its 95 % CI."""
    seasons = season_frame(results)
    return aggregate_over_seeds(seasons[seasons.season != "all"], "miou", ["season", "arm", "n_tiles"])


def scene_table(results: SarTransferResults) -> pd.DataFrame:
    """Per test scene (each its own weather), at the fewest tiles: mIoU per arm (mean over seeds), wind, air
    temperature (simulated scenes vary by seed: their weather is the mean over seeds)."""
    scenes = scene_frame(results)
    few = scenes[scenes.n_tiles == results.few]
    wide = few.pivot_table(index=["season", "scene"], columns="arm", values="miou", aggfunc="mean")
    weather = few.groupby(["season", "scene"])[["wind_speed", "air_temperature"]].mean()
    return weather.join(wide).reset_index()


def per_class_table(results: SarTransferResults) -> pd.DataFrame:
    """Per season, class and arm (fewest tiles): IoU over the scenes whose chart holds the class."""
    scenes = scene_frame(results)
    few = scenes[scenes.n_tiles == results.few]
    rows = []
    for (season, arm), g in few.groupby(["season", "arm"], sort=False):
        for name in CLASS_NAMES:
            h = g[g[f"present/{name}"].astype(bool)]
            rows.append(
                {
                    "season": season,
                    "arm": arm,
                    "class": name,
                    "iou_mean": h[f"iou/{name}"].mean(),
                    "iou_std": h[f"iou/{name}"].std(ddof=1),
                    "f1_mean": h[f"f1/{name}"].mean(),
                    "n_scene_runs": len(h),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# 5. Figures
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

    return [Patch(facecolor=c, edgecolor="#555555", label=n) for c, n in zip(sar.CLASS_COLOURS, CLASS_NAMES)] + [
        Patch(facecolor=LAND_COLOUR, label="land (masked)"),
        Patch(facecolor=NO_DATA_COLOUR, label="no data (outside swath)"),
    ]


ARM_COLOURS = {
    "random": "#555555",
    "cross_sensor": "#d95f02",
    "imagenet": "#1b9e77",
    "gbm": "#7570b3",
    "majority": "#bbbbbb",
}


def scenes_figure(scenes: Sequence[sar.SarScene]):
    """HH, HV, false colour and chart of each test scene (rows), with its season and weather; no data purple
    in every panel, land tan in the chart (land is imaged in HH and HV)."""
    import matplotlib.pyplot as plt

    grey = plt.get_cmap("gray").copy()
    grey.set_bad(NO_DATA_COLOUR)
    scenes = list(scenes)
    fig, axes = plt.subplots(len(scenes), 4, figsize=(11, 2.8 * len(scenes)), squeeze=False)
    for row, scene in zip(axes, scenes):
        land, nodata = _scene_masks(scene)
        row[0].imshow(np.ma.masked_invalid(scene.sar[0]), cmap=grey, vmin=-30, vmax=-5)
        row[1].imshow(np.ma.masked_invalid(scene.sar[1]), cmap=grey, vmin=-32, vmax=-15)
        row[2].imshow(false_colour(scene))
        row[3].imshow(class_map_rgb(scene.labels, land, nodata), interpolation="nearest")
        weather = ""
        if "wind_speed" in scene.meta:
            weather = f", wind {scene.meta['wind_speed']:.1f} m/s, {scene.meta['air_temperature']:+.1f} C"
        titles = [f"{scene.name} ({scene.season}{weather}): HH", "HV (dB, -32..-15)", "R=HH G=HV B=HH-HV", "ice chart"]
        for ax, t in zip(row, titles):
            ax.set_title(t, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=NUM_CLASSES + 2, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
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
                    ax.hist(
                        v,
                        bins=bins,
                        density=True,
                        histtype="step",
                        lw=1.6,
                        color="#777777" if colour == "#f2f2f2" else colour,
                        label=name,
                    )
            ax.set_title(f"{season} season, {band}", fontsize=10)
            ax.set_xlabel("sigma0 (dB)")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves_figure(results: SarTransferResults):
    """Validation mIoU against optimiser steps at the fewest tiles: mean over seeds with a 95 % t-band per
    arm, and the common threshold (mean over seeds) of each pretrained arm's comparison as a dashed line."""
    import matplotlib.pyplot as plt

    hist = history_frame(results)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    few = hist[hist.n_tiles == results.few]
    for arm, g in few.groupby("arm", sort=False):
        agg = aggregate_over_seeds(g, "val_miou", "step").sort_values("step")
        colour = ARM_COLOURS.get(arm)
        ax.plot(agg["step"], agg["val_miou_mean"], color=colour, label=f"{arm} (n={int(agg['n'].max())})")
        ax.fill_between(agg["step"], agg["val_miou_ci95_low"], agg["val_miou_ci95_high"], color=colour, alpha=0.2)
    conv = convergence_frame(results)
    for pair, g in conv.groupby("pair"):
        ax.axhline(
            g["threshold"].mean(),
            color=ARM_COLOURS.get(pair),
            ls="--",
            lw=1,
            label=f"common threshold vs {pair} (mean)",
        )
    ax.set_xlabel(f"optimiser steps ({results.few} training tiles, validated every epoch)")
    ax.set_ylabel("validation mIoU")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def scene_scores_figure(results: SarTransferResults):
    """Test-scene mIoU at the fewest tiles, one panel per season: each test scene's mean over seeds per arm
    (points) and the season mean (bar), so a season effect is not one scene's luck."""
    import matplotlib.pyplot as plt

    scenes = scene_frame(results)
    few = scenes[scenes.n_tiles == results.few]
    arms = [a for a in INITS + REFERENCE_ARMS if a in set(few.arm)]
    fig, axes = plt.subplots(1, len(SEASONS), figsize=(10, 3.8), sharey=True, squeeze=False)
    for ax, season in zip(axes[0], SEASONS):
        s = few[few.season == season]
        per_scene = s.groupby(["arm", "scene"], as_index=False)["miou"].mean()
        for i, arm in enumerate(arms):
            v = per_scene[per_scene.arm == arm]["miou"].to_numpy()
            ax.bar(i, v.mean() if len(v) else np.nan, color=ARM_COLOURS.get(arm), alpha=0.5)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, max(len(v), 1))[: len(v)], v, color="k", s=12)
        ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
        ax.set_title(f"{season} test scenes (n={s.scene.nunique()})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("scene mIoU (mean over seeds)")
    fig.tight_layout()
    return fig


def predictions_figure(results: SarTransferResults, data: SarData):
    """Chart and predicted maps (first seed, fewest tiles) of one freeze and one melt test scene per arm."""
    import matplotlib.pyplot as plt

    seed = results.settings["seeds"][0]
    arms = [a for a in INITS + ("gbm",) if results.record(a, seed, results.few) is not None]
    chosen = [next(s for s in data.test_scenes if s.season == season) for season in SEASONS]
    fig, axes = plt.subplots(
        len(chosen), 1 + len(arms), figsize=(3.0 * (1 + len(arms)), 3.3 * len(chosen) + 0.6), squeeze=False
    )
    for row, scene in zip(axes, chosen):
        land, nodata = _scene_masks(scene)
        panels = [("chart", scene.labels, None)]
        for arm in arms:
            rec = results.record(arm, seed, results.few)
            score = next(s["miou"] for s in rec["scenes"] if s["scene"] == scene.name)
            panels.append((f"{arm} (mIoU {score:.2f})", rec["maps"][scene.name].astype(np.int64), score))
        for ax, (title, img, _) in zip(row, panels):
            ax.imshow(class_map_rgb(img, land, nodata), interpolation="nearest")
            ax.set_title(f"{scene.name}: {title}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def confusion_figure(results: SarTransferResults):
    """Row-normalised confusion matrices at the fewest tiles, summed over seeds and each season's scenes."""
    import matplotlib.pyplot as plt

    arms = [a for a in INITS + ("gbm",) if any(r["arm"] == a for r in results.records)]
    fig, axes = plt.subplots(len(SEASONS), len(arms), figsize=(3.4 * len(arms), 3.3 * len(SEASONS)), squeeze=False)
    short = ["water", "young", "FYI", "MYI"]
    for row, season in zip(axes, SEASONS):
        for ax, arm in zip(row, arms):
            m = np.zeros((NUM_CLASSES, NUM_CLASSES))
            for r in results.records:
                if r["arm"] == arm and r["n_tiles"] == results.few:
                    for s in r["scenes"]:
                        if s["season"] == season:
                            m += np.asarray(r["confusion"][s["scene"]], float)
            with np.errstate(invalid="ignore"):
                norm = m / m.sum(axis=1, keepdims=True)
            ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
            for i in range(NUM_CLASSES):
                if not np.isfinite(norm[i]).any():
                    ax.text(
                        NUM_CLASSES / 2 - 0.5, i, "not in chart", ha="center", va="center", fontsize=7, color="#777777"
                    )
                for j in range(NUM_CLASSES):
                    if np.isfinite(norm[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{norm[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black",
                        )
            ax.set_xticks(range(NUM_CLASSES), short, fontsize=7)
            ax.set_yticks(range(NUM_CLASSES), short, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("chart", fontsize=8)
            ax.set_title(f"{season}: {arm}", fontsize=9)
    fig.tight_layout()
    return fig


# ---- plan: the preset's real budget (labkit plan)
def plan(cfg) -> list:
    """The grid's budget from :func:`build_grid`'s loops and :func:`_network_task`'s epochs (every arm in
    ``inits`` assumed available; the references train no network)."""
    from labkit.core.plan import GridPlan, TaskBudget, measure

    tiles, batch, steps = sorted(set(cfg["tiles"])), cfg["batch_size"], cfg["n_steps"]
    arms = [a for a in INITS if a in cfg["inits"]]
    size = cfg["tile"]
    build = lambda: create_model(weights="random", decoder_channels=cfg["decoder_channels"])  # noqa: E731
    flops, tr, tot = measure(("sar", size, cfg["decoder_channels"]), build, [(2, IN_CHANNELS, size, size)])
    budgets = []
    for n_tiles in tiles:
        spe = math.ceil(n_tiles / batch)
        epochs = max(2, math.ceil(steps / spe))
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
                    flops * min(batch, n_tiles),
                    params={"batch": "batch_size", "data_items": "tiles", "steps": "n_steps"},
                    notes="the last batch of an epoch is partial; validation each epoch not counted",
                    requested_batch=batch,
                )
            )
    # the frozen linear probes (_probe_task): one per arm and seed at the fewest tiles, only the 1x1 readout trains
    pflops, ptr, ptot = measure(
        ("sar-probe", size),
        lambda: FrozenProbe(create_model(weights="random", decoder_channels=cfg["decoder_channels"]).encoder),
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
    return [GridPlan(STUDY, "grid", shape, budgets, notes=note)]
