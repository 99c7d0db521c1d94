"""Task-specific pretraining with noisy labels for remote-sensing segmentation.

Reproduces the design of Liu, Albrecht, Wang and Zhu (IGARSS 2024, arXiv 2402.16164) over labkit:

1. A U-Net with a ResNet-18 encoder (segmentation-models-pytorch over a timm encoder, through
   :func:`labkit.models.segmentation.create_segmenter`, so any band count and the kit's weight rules apply)
   is pretrained on many simulated multispectral tiles whose labels were corrupted by the composable noise
   models of :mod:`labkit.data.label_noise`; the same network from the same initial weights is also
   pretrained on the clean labels (an upper bound).
2. Each initialisation is fine-tuned on ``k`` clean tiles for ``k`` in a sweep, with the same seed, decoder
   initialisation, data order and number of optimisation steps, and scored on clean test tiles.
3. A second task with another class definition (low vegetation merged; artificial split into road and
   building) gets a fresh decoder on the pretrained encoder.
4. Layer by layer, the KL divergence between weight histograms compares models pretrained on clean vs noisy
   labels, and pretrained vs fine-tuned weights (:mod:`labkit.methods.weight_analysis`).
5. The pretraining noise severity is swept.

The module returns DataFrames, dicts and figures; the notebook hands them to the Report.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler

from labkit.core.errors import DataError, WeightsUnavailableError
from labkit.core.seeding import seed_everything
from labkit.core.metrics import aggregate_over_seeds
from labkit.core.stats import paired_by_index, paired_difference
from labkit.data import label_noise, landcover
from labkit.data.datasets import ArraySegmentationDataset, random_flip_rotate
from labkit.methods.training import evaluate, fit
from labkit.methods import weight_analysis

STUDY = "noisy_label_pretraining"
#: KL between the initial and the clean-pretrained weights: how far training moved each layer (reference).
MOVEMENT = "initial vs clean pretrained (reference: training movement)"
CHECKPOINT_NAME = "noisy-pretrained-unet-r18"
DEFAULT_NOISE = ("boundary", "misregistration", "flips", "omission", "coarse")
INITS = ("random", "noisy_encoder", "noisy_full", "clean_full", "imagenet")
INIT_LABELS = {
    "random": "random initialisation",
    "noisy_encoder": "noisy-pretrained encoder, new decoder",
    "noisy_full": "noisy-pretrained encoder + decoder",
    "clean_full": "clean-pretrained encoder + decoder (upper bound)",
    "clean_encoder": "clean-pretrained encoder, new decoder",
    "imagenet": "ImageNet encoder (timm weights)",
}
TASK_A, TASK_B = "lulc", "structure"
IGNORE_INDEX = landcover.IGNORE_INDEX


# ---------------------------------------------------------------------------------------------------
# Model and training helpers
# ---------------------------------------------------------------------------------------------------

def decoder_channels(width: int) -> tuple[int, ...]:
    """U-Net decoder widths from the deepest block: ``width, width/2, ...`` (at least 8)."""
    return tuple(max(8, int(width) // 2 ** i) for i in range(5))


def build_model(num_classes: int, encoder: str = "resnet18", in_channels: int = 4, decoder_width: int = 64,
                weights: str = "random", seed: int | None = None) -> torch.nn.Module:
    """U-Net over a timm ``encoder``; with ``seed`` the random initial weights are repeatable."""
    from labkit.models.segmentation import create_segmenter

    if seed is not None:
        seed_everything(seed)
    return create_segmenter("unet", encoder=encoder, weights=weights, in_channels=in_channels,
                            num_classes=num_classes, decoder_channels=decoder_channels(decoder_width))


def model_in_channels(model) -> int:
    """Input band count of a network (that of its first convolution)."""
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no convolution to take input bands")
    return int(first.in_channels)


def check_bands(model, images: np.ndarray, what: str = "tiles") -> None:
    """DataError naming ``what`` when ``images`` (N, C, H, W) have another band count than ``model`` takes."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"{what}: tiles must be (N, C, H, W), got shape {images.shape}")
    expected = model_in_channels(model)
    if images.shape[1] != expected:
        raise DataError(f"{what}: have {images.shape[1]} bands but the model takes {expected}")


#: Sentinel-2 bands that ImageNet's red, green and blue input filters belong to.
IMAGENET_RGB_BANDS = ("B04", "B03", "B02")


def imagenet_encoder_state(num_classes: int, encoder: str, bands: Sequence[str], decoder_width: int) -> dict:
    """Encoder state dict (``encoder.*`` keys) with ImageNet weights, its first convolution fitted to ``bands``.

    timm fits a 3-channel stem to other band counts by repeating the R, G, B filters in order, which would
    give the paper's NIR band the red filter and red the green one. Here each of B04, B03, B02 gets the
    filter of its own colour, any other band (NIR, red edge, SWIR) the mean of the three, and all are scaled
    by 3 / bands (timm's rule) so a pixel's response keeps its magnitude. Raises WeightsUnavailableError
    when the weights cannot be had: they are never replaced by random ones.
    """
    bands = list(bands)
    rgb = build_model(num_classes, encoder, 3, decoder_width, weights="pretrained", seed=0)
    state = {f"encoder.{k}": v.detach().clone() for k, v in rgb.encoder.state_dict().items()}
    stem = next(k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3)
    w = state[stem]
    mean = w.mean(dim=1, keepdim=True)
    columns = [w[:, IMAGENET_RGB_BANDS.index(b)][:, None] if b in IMAGENET_RGB_BANDS else mean for b in bands]
    state[stem] = torch.cat(columns, dim=1) * (3.0 / len(bands))
    return state


def _unavailable_reason(exc: Exception, encoder: str) -> str:
    """One line for tables and titles; the full message says how to provide the weights."""
    from labkit.models.backbones import timm_name

    text = str(exc).strip()
    if "are not available" in text:
        return (f"weights unavailable: no {timm_name(encoder)} ImageNet weights on this machine (no local file, "
                "no Hugging Face cache, hub offline); not replaced by random weights")
    return f"weights unavailable: {text.splitlines()[0] if text else type(exc).__name__}"


def band_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over a tile stack (N, C, H, W), ignoring NaN."""
    mean = np.nanmean(images, axis=(0, 2, 3))
    std = np.nanstd(images, axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    return ((images - np.asarray(mean)[None, :, None, None]) / np.asarray(std)[None, :, None, None]).astype(
        np.float32)


def _loader(images, labels, num_classes, batch_size, steps_per_epoch=None, seed=0, augment=True):
    transform = random_flip_rotate if augment else None
    dataset = ArraySegmentationDataset(images, labels, num_classes, ignore_index=IGNORE_INDEX, transform=transform)
    if steps_per_epoch is None:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(int(seed))
    # Sampling with replacement gives every training set, however small, the same number of steps.
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps_per_epoch * batch_size,
                            generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator)


def train(model, images, labels, num_classes: int, epochs: int, steps_per_epoch: int, batch_size: int = 8,
          lr: float = 1e-3, seed: int = 0, progress: bool = False, desc: str = ""):
    """Supervised training for ``epochs * steps_per_epoch`` AdamW steps (cosine schedule); returns FitResult.

    Tiles must be finite (NaN/no-data pixels filled and masked to 255 by :func:`landcover.prepare_tiles`, so they
    never enter the loss) and have the model's band count; a DataError names the set otherwise.
    """
    check_bands(model, images, desc or "training tiles")
    loader = _loader(images, labels, num_classes, batch_size, steps_per_epoch, seed)
    return fit(model, loader, None, task="segmentation", num_classes=num_classes, epochs=epochs, lr=lr,
               scheduler="cosine", ignore_index=IGNORE_INDEX, seed=seed, progress=progress, desc=desc)


def score(model, images, labels, num_classes: int, batch_size: int = 32) -> dict:
    check_bands(model, images, "test tiles")
    return evaluate(model, _loader(images, labels, num_classes, batch_size), "segmentation", num_classes,
                    IGNORE_INDEX)


def encoder_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}


def full_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

def simulate_noisy_pool(n_tiles: int, tile: int, seed: int, noise_models: Sequence[str], severity: float,
                        bands=landcover.NIRRGB, task: str = TASK_A, progress: bool = False):
    """Simulated tiles, their clean and noisy ``task`` labels, and the measured pixel noise rate."""
    tiles = landcover.LandscapeSimulator(tile, bands=bands).sample(n_tiles, seed=seed, progress=progress)
    clean = tiles.labels(task)
    num_classes = len(landcover.task_legend(task)[0])
    noisy = noisy_labels(tiles, clean, noise_models, severity, seed, num_classes)
    return tiles, clean, noisy, label_noise.noise_rate(clean, noisy)


def noisy_labels(tiles: landcover.LandcoverTiles, clean: np.ndarray, noise_models: Sequence[str], severity: float,
                 seed: int, num_classes: int) -> np.ndarray:
    if severity == 0:
        return clean.copy()
    model = label_noise.make_noise(list(noise_models), severity, num_classes)
    context = {}
    if "sensor_rule" in noise_models:
        context = {"height": tiles.height, "ndvi": tiles.ndvi()}
    return label_noise.apply_noise(model, clean, seed=seed, **context)


# ---------------------------------------------------------------------------------------------------
# The checkpoint another study uses
# ---------------------------------------------------------------------------------------------------

def checkpoint_meta(bands, classes, noise_models, severity, norm_mean, norm_std, encoder, extra=None) -> dict:
    return {"in_channels": len(bands), "bands": list(bands), "classes": list(classes), "encoder": encoder,
            "arch": "unet", "noise_models": list(noise_models), "noise_severity": float(severity),
            "norm_mean": [float(v) for v in norm_mean], "norm_std": [float(v) for v in norm_std],
            "producer": f"labkit.studies.{STUDY}", **(extra or {})}


def save_pretrained_encoder(model, meta: dict) -> Path:
    """Save ``model.encoder``'s state dict as the named checkpoint ``noisy-pretrained-unet-r18``."""
    from labkit.models.registry import save_named_checkpoint

    if meta.get("encoder") != "resnet18":
        raise ValueError(f"'{CHECKPOINT_NAME}' holds a ResNet-18 encoder; this model's encoder is "
                         f"{meta.get('encoder')!r}")
    return save_named_checkpoint(CHECKPOINT_NAME, encoder_state(model), meta)


def produce_pretrained_encoder(n_tiles: int = 64, epochs: int = 2, tile: int = 64, seed: int = 0,
                               encoder: str = "resnet18", progress: bool = True, severity: float = 0.6,
                               noise_models: Sequence[str] = DEFAULT_NOISE, batch_size: int = 8,
                               decoder_width: int = 32, lr: float = 1e-3) -> Path:
    """Simulate ``n_tiles`` noisy land-cover tiles, pretrain a U-Net on them, save its encoder, return the path.

    The checkpoint is ``noisy-pretrained-unet-r18`` (the keys of ``model.encoder.state_dict()``; meta: bands,
    in_channels, classes, noise settings, input normalisation). Only ResNet-18 encoders are saved under it.
    """
    if encoder != "resnet18":
        raise ValueError(f"'{CHECKPOINT_NAME}' is a ResNet-18 encoder; got encoder={encoder!r}")
    started = time.time()
    classes = landcover.task_legend(TASK_A)[0]
    tiles, clean, noisy, rate = simulate_noisy_pool(n_tiles, tile, seed, noise_models, severity)
    mean, std = band_statistics(tiles.images)
    model = build_model(len(classes), encoder, len(tiles.bands), decoder_width, seed=seed)
    steps = max(1, int(np.ceil(n_tiles / batch_size)))
    train(model, normalise(tiles.images, mean, std), noisy, len(classes), epochs, steps, batch_size, lr, seed,
          progress, desc="noisy-label pretraining")
    meta = checkpoint_meta(tiles.bands, classes, noise_models, severity, mean, std, encoder, {
        "n_tiles": n_tiles, "epochs": epochs, "tile": tile, "seed": seed, "pixel_noise_rate": rate,
        "decoder_width": decoder_width, "seconds": round(time.time() - started, 2),
        "produced_by": "produce_pretrained_encoder"})
    return save_pretrained_encoder(model, meta)


# ---------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Results:
    finetune: pd.DataFrame  # seed, task, init, k, severity, miou, pixel_accuracy, seconds
    pretrain: pd.DataFrame  # seed, severity, pixel_noise_rate, test_miou (no fine-tuning), seconds
    kl: pd.DataFrame  # seed, comparison, name, part, depth, relative_depth, n_params, kl
    cka: pd.DataFrame  # seed, stage, channels, cka (clean vs noisy encoders)
    unavailable: dict  # init -> reason
    settings: dict
    checkpoint_model: object = None  # noisy-pretrained model of the first seed (main severity)
    checkpoint_meta: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def _cfg(cfg, name, default=None):
    return getattr(cfg, name, default) if not isinstance(cfg, dict) else cfg.get(name, default)


def validate_settings(cfg) -> None:
    """ValueError naming the parameter when a combination cannot run (beyond the spec's type/range checks)."""
    tile = int(_cfg(cfg, "tile"))
    if tile % 32:
        raise ValueError(f"tile={tile}: the 5-stage U-Net needs a multiple of 32 (e.g. {32 * max(1, round(tile / 32))})")
    bands = list(_cfg(cfg, "bands", landcover.NIRRGB))
    unknown = [b for b in bands if b not in landcover.S2_BANDS]
    if unknown:
        raise ValueError(f"bands: unknown Sentinel-2 bands {unknown}; known: {landcover.S2_BANDS}")
    noise_models = list(_cfg(cfg, "noise_models"))
    unknown = [n for n in noise_models if n not in label_noise.NOISE_MODELS]
    if unknown or not noise_models:
        raise ValueError(f"noise_models: unknown or empty {unknown or noise_models}; "
                         f"known: {list(label_noise.NOISE_MODELS)}")
    if "sensor_rule" in noise_models and not {"B08", "B04"} <= set(bands):
        raise ValueError("noise_models: 'sensor_rule' thresholds NDVI, which needs bands B08 and B04")
    if float(_cfg(cfg, "noise_severity")) <= 0:
        raise ValueError("noise_severity must be > 0: it is the noisy pretraining (clean pretraining is always run)")
    levels = [float(v) for v in _cfg(cfg, "noise_levels")]
    if any(not 0 <= v <= 1 for v in levels):
        raise ValueError(f"noise_levels must lie in [0, 1], got {levels}")
    k_values = [int(k) for k in _cfg(cfg, "k_values")]
    if len(set(k_values)) != len(k_values) or min(k_values) < 1:
        raise ValueError(f"k_values must be distinct positive tile counts, got {k_values}")
    inits = list(_cfg(cfg, "inits"))
    unknown = [i for i in inits if i not in INITS]
    if unknown:
        raise ValueError(f"inits: unknown initialisations {unknown}; known: {INITS}")
    if "random" not in inits:
        raise ValueError("inits must include 'random': every gain is measured against it")
    if int(_cfg(cfg, "finetune_steps")) < int(_cfg(cfg, "finetune_epochs")):
        raise ValueError("finetune_steps must be >= finetune_epochs (the steps are split into the epochs)")


def run(cfg, progress: bool = True) -> Results:
    """Every experiment of the study for each seed of ``cfg`` (a labkit Config or a dict of parameters)."""
    validate_settings(cfg)
    started = time.time()
    seeds = list(_cfg(cfg, "seeds"))
    tile, encoder = int(_cfg(cfg, "tile")), _cfg(cfg, "encoder")
    bands = tuple(_cfg(cfg, "bands", landcover.NIRRGB))
    width, batch = int(_cfg(cfg, "decoder_width")), int(_cfg(cfg, "batch_size"))
    lr, ft_lr = float(_cfg(cfg, "lr")), float(_cfg(cfg, "finetune_lr"))
    n_pre, pre_epochs = int(_cfg(cfg, "n_pretrain_tiles")), int(_cfg(cfg, "pretrain_epochs"))
    ft_steps, ft_epochs = int(_cfg(cfg, "finetune_steps")), int(_cfg(cfg, "finetune_epochs"))
    k_values = sorted(int(k) for k in _cfg(cfg, "k_values"))
    n_test = int(_cfg(cfg, "n_test_tiles"))
    noise_models = list(_cfg(cfg, "noise_models"))
    severity = float(_cfg(cfg, "noise_severity"))
    levels = sorted(({float(v) for v in _cfg(cfg, "noise_levels")} | {severity}) - {0.0})  # 0 = clean, always run
    sweep_k = int(_cfg(cfg, "sweep_k") or k_values[0])
    task_b_k = int(_cfg(cfg, "task_b_k"))
    inits = list(_cfg(cfg, "inits"))
    bins = int(_cfg(cfg, "kl_bins", 64))
    classes_a, classes_b = landcover.task_legend(TASK_A)[0], landcover.task_legend(TASK_B)[0]
    ka, kb = len(classes_a), len(classes_b)
    steps_per_epoch = max(1, ft_steps // ft_epochs)
    pre_steps = max(1, int(np.ceil(n_pre / batch)))

    unavailable: dict[str, str] = {}
    imagenet_state = None
    if "imagenet" in inits:
        try:
            imagenet_state = imagenet_encoder_state(ka, encoder, bands, width)
        except WeightsUnavailableError as exc:
            unavailable["imagenet"] = _unavailable_reason(exc, encoder)

    ft_rows, pre_rows, kl_frames, cka_frames = [], [], [], []
    checkpoint_model, checkpoint_meta_ = None, {}
    total = len(seeds) * (len(levels) + 1 + len(k_values) * len(inits) + (len(levels) - 1) + 3)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="noisy-label study", disable=not progress)
    for seed in seeds:
        base = 1000 * int(seed)
        sim = landcover.LandscapeSimulator(tile, bands=bands)
        pre_tiles = sim.sample(n_pre, seed=base + 1)
        ft_tiles = sim.sample(max(k_values + [task_b_k]), seed=base + 2)
        test_tiles = sim.sample(n_test, seed=base + 3)
        mean, std = band_statistics(pre_tiles.images)
        x_pre, x_ft, x_test = (normalise(t.images, mean, std) for t in (pre_tiles, ft_tiles, test_tiles))
        clean_pre = pre_tiles.labels(TASK_A)
        y_test_a, y_test_b = test_tiles.labels(TASK_A), test_tiles.labels(TASK_B)
        y_ft_a, y_ft_b = ft_tiles.labels(TASK_A), ft_tiles.labels(TASK_B)

        # -- pretraining: clean labels (severity 0) and each noise level, all from the same initial weights
        init_model = build_model(ka, encoder, len(bands), width, seed=base + 11)
        init_state = full_state(init_model)
        # Same seed -> same decoder/head initial weights for every fine-tuned initialisation; deep copies of one
        # template are cheaper than building the network again for every run.
        templates = {n: build_model(n, encoder, len(bands), width, seed=base + 21) for n in (ka, kb)}
        pretrained: dict[float, dict] = {}
        for level in [0.0] + levels:
            t0 = time.time()
            y = noisy_labels(pre_tiles, clean_pre, noise_models, level, base + 5, ka)
            model = copy.deepcopy(init_model)
            train(model, x_pre, y, ka, pre_epochs, pre_steps, batch, lr, base + 12,
                  desc=f"pretrain severity {level:g}")
            pretrained[level] = full_state(model)
            s = score(model, x_test, y_test_a, ka)
            pre_rows.append({"seed": seed, "severity": level, "pixel_noise_rate": label_noise.noise_rate(clean_pre, y),
                             "test_miou": s["miou"], "test_pixel_accuracy": s["pixel_accuracy"],
                             "seconds": time.time() - t0})
            if level == severity and checkpoint_model is None:
                checkpoint_model = model
                checkpoint_meta_ = checkpoint_meta(bands, classes_a, noise_models, severity, mean, std, encoder, {
                    "n_tiles": n_pre, "epochs": pre_epochs, "tile": tile, "seed": seed,
                    "pixel_noise_rate": pre_rows[-1]["pixel_noise_rate"], "decoder_width": width,
                    "produced_by": f"{STUDY} notebook"})
            bar.update()

        def finetune(init, k, task, level=severity):
            """Fine-tune one initialisation on the first k clean tiles; returns (model, row)."""
            num_classes, x, y = (ka, x_ft, y_ft_a) if task == TASK_A else (kb, x_ft, y_ft_b)
            t0 = time.time()
            model = copy.deepcopy(templates[num_classes])
            if init in ("noisy_full", "clean_full"):
                source = pretrained[level if init == "noisy_full" else 0.0]
                model.load_state_dict(source)
            elif init in ("noisy_encoder", "clean_encoder"):
                source = pretrained[level if init == "noisy_encoder" else 0.0]
                model.encoder.load_state_dict({k_[len("encoder."):]: v for k_, v in source.items()
                                               if k_.startswith("encoder.")})
            elif init == "imagenet":
                model.encoder.load_state_dict({k_[len("encoder."):]: v for k_, v in imagenet_state.items()
                                               if k_.startswith("encoder.")})
            train(model, x[:k], y[:k], num_classes, ft_epochs, steps_per_epoch, batch, ft_lr, base + 22,
                  desc=f"{task} {init} k={k}")
            s = score(model, x_test, y_test_a if task == TASK_A else y_test_b, num_classes)
            return model, {"seed": seed, "task": task, "init": init, "k": k, "severity": level,
                           "miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"], "seconds": time.time() - t0}

        # -- label efficiency on the pretraining task
        finetuned_full = None
        for k in k_values:
            for init in inits:
                if init in unavailable:
                    bar.update()
                    continue
                model, row = finetune(init, k, TASK_A)
                ft_rows.append(row)
                if init == "noisy_full" and k == k_values[0]:
                    finetuned_full = full_state(model)
                bar.update()
        # -- noise sweep: the noisy-pretrained model at other severities, fine-tuned on sweep_k tiles
        for level in levels:
            done = any(r["seed"] == seed and r["init"] == "noisy_full" and r["k"] == sweep_k and
                       r["severity"] == level and r["task"] == TASK_A for r in ft_rows)
            if not done:
                ft_rows.append(finetune("noisy_full", sweep_k, TASK_A, level)[1])
                bar.update()
        for init in ("random", "noisy_full", "clean_full"):
            if not any(r["seed"] == seed and r["init"] == init and r["k"] == sweep_k and r["task"] == TASK_A
                       for r in ft_rows):
                ft_rows.append(finetune(init, sweep_k, TASK_A)[1])
        # -- second task: different class definition, fresh decoder
        for init in ("random", "noisy_encoder", "clean_encoder"):
            ft_rows.append(finetune(init, task_b_k, TASK_B)[1])
            bar.update()

        # -- layer-wise weight statistics
        comparisons = {"clean vs noisy pretrained": (pretrained[0.0], pretrained[severity]),
                       f"noisy pretrained vs fine-tuned (k={k_values[0]})": (pretrained[severity], finetuned_full),
                       MOVEMENT: (init_state, pretrained[0.0]),
                       "two random initialisations (reference)": (
                           init_state, full_state(build_model(ka, encoder, len(bands), width, seed=base + 99)))}
        for name, (a, b) in comparisons.items():
            if a is None or b is None:
                continue
            df = weight_analysis.layerwise_kl(a, b, bins=bins)
            df.insert(0, "comparison", name)
            df.insert(0, "seed", seed)
            kl_frames.append(df)
        enc_clean = copy.deepcopy(init_model)
        enc_clean.load_state_dict(pretrained[0.0])
        enc_noisy = copy.deepcopy(init_model)
        enc_noisy.load_state_dict(pretrained[severity])
        cka = weight_analysis.encoder_feature_cka(enc_clean.encoder, enc_noisy.encoder,
                                                  torch.as_tensor(x_test[: min(8, n_test)]), seed=seed)
        cka.insert(0, "seed", seed)
        cka_frames.append(cka)
    bar.close()
    settings = {"seeds": seeds, "tile": tile, "encoder": encoder, "bands": list(bands), "decoder_width": width,
                "batch_size": batch, "lr": lr, "finetune_lr": ft_lr, "n_pretrain_tiles": n_pre,
                "pretrain_epochs": pre_epochs, "pretrain_steps": pre_epochs * pre_steps,
                "finetune_steps": ft_epochs * steps_per_epoch, "k_values": k_values, "n_test_tiles": n_test,
                "noise_models": noise_models, "noise_severity": severity, "noise_levels": levels,
                "sweep_k": sweep_k, "task_b_k": task_b_k, "inits": inits}
    return Results(pd.DataFrame(ft_rows), pd.DataFrame(pre_rows), pd.concat(kl_frames, ignore_index=True),
                   pd.concat(cka_frames, ignore_index=True), unavailable, settings, checkpoint_model,
                   checkpoint_meta_, time.time() - started)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------

def label_efficiency_table(results: Results, task: str = TASK_A) -> pd.DataFrame:
    """mIoU per initialisation and k at the main noise severity: mean, std, 95 % t-interval over seeds."""
    df = results.finetune
    sev = results.settings["noise_severity"]
    df = df[(df.task == task) & ((df.severity == sev) | ~df.init.str.startswith("noisy"))
            & df.k.isin(results.settings["k_values"])]
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    for init, reason in results.unavailable.items():
        out = pd.concat([out, pd.DataFrame([{"init": init, "k": np.nan, "miou_mean": np.nan,
                                             "n_seeds": 0, "note": f"not evaluated: {reason}"}])], ignore_index=True)
    return out.sort_values(["init", "k"], kind="stable").reset_index(drop=True)


def gains_table(results: Results, init: str = "noisy_full", reference: str = "random",
                task: str = TASK_A) -> pd.DataFrame:
    """Paired (per seed) mIoU difference ``init - reference`` per k at the main severity."""
    df = results.finetune
    sev = results.settings["noise_severity"]
    df = df[(df.task == task) & ((df.severity == sev) | ~df.init.str.startswith("noisy"))
            & df.k.isin(results.settings["k_values"])]
    rows = []
    for k in sorted(df.k.unique()):
        diff = paired_by_index(df[(df.init == init) & (df.k == k)].set_index("seed").miou,
                               df[(df.init == reference) & (df.k == k)].set_index("seed").miou)
        if diff["n"] == 0:
            continue
        rows.append({"init": init, "reference": reference, "k": int(k), **diff})
    return pd.DataFrame(rows)


def noise_sweep_table(results: Results) -> pd.DataFrame:
    """Per pretraining severity: pixel noise rate, pretrained mIoU (no fine-tuning), and the fine-tuned
    mIoU at ``sweep_k`` clean tiles with its paired gain over random initialisation."""
    s = results.settings
    ft = results.finetune[(results.finetune.task == TASK_A) & (results.finetune.k == s["sweep_k"])]
    random_ = ft[ft.init == "random"].set_index("seed").miou
    rows = []
    for level, pre in results.pretrain.groupby("severity"):
        if level == 0:
            sub = ft[ft.init == "clean_full"].set_index("seed").miou
        else:
            sub = ft[(ft.init == "noisy_full") & (ft.severity == level)].set_index("seed").miou
        common = sorted(set(sub.index) & set(random_.index))
        gain = paired_by_index(sub, random_) if common else {}
        rows.append({"severity": level, "pixel_noise_rate": pre.pixel_noise_rate.mean(),
                     "pretrained_miou_no_finetune": pre.test_miou.mean(),
                     "finetuned_miou": sub.mean() if len(sub) else np.nan,
                     "gain_over_random": gain.get("mean_diff", np.nan),
                     "gain_ci95_low": gain.get("ci95_low", np.nan), "gain_ci95_high": gain.get("ci95_high", np.nan),
                     "gain_wins": gain.get("wins", np.nan), "n_seeds": len(common)})
    return pd.DataFrame(rows)


def task_b_table(results: Results) -> pd.DataFrame:
    df = results.finetune[results.finetune.task == TASK_B]
    out = aggregate_over_seeds(df, "miou", ["init", "k"]).rename(columns={"n": "n_seeds"})
    out["k"] = out["k"].astype(int)
    return out


def kl_summary_table(results: Results) -> pd.DataFrame:
    """Mean layer KL per comparison and part, averaged over seeds (with the per-seed range)."""
    per_seed = results.kl.groupby(["comparison", "seed", "part"]).kl.mean().reset_index()
    out = per_seed.groupby(["comparison", "part"]).kl.agg(["mean", "min", "max", "count"]).reset_index()
    return out.rename(columns={"mean": "mean_layer_kl", "min": "seed_min", "max": "seed_max", "count": "n_seeds"})


def settings_table(results: Results) -> pd.DataFrame:
    return pd.DataFrame([{"setting": k, "value": str(v)} for k, v in results.settings.items()])


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

def _few(results: Results) -> str:
    n_seeds = len(results.settings["seeds"])
    return "" if n_seeds >= 3 else f" (only {n_seeds} seed(s): indicative)"


#: The rule of every claim judged by a paired mIoU gain over seeds (claims 1, 2 and 4).
GAIN_RULE = ("a gain counts as shown when its paired (same seed) 95 % t-interval over seeds lies above 0; a positive "
             "mean, or a win in every seed, whose interval still includes 0 is not enough (3 wins of 3 happen by "
             "chance 1 time in 8)")


def _shown(diff) -> bool:
    """Whether a paired difference (dict or row of :func:`paired_difference`) is shown to be positive."""
    low = float(diff["ci95_low"])
    return bool(int(diff["n"]) >= 2 and np.isfinite(low) and low > 0)


def _ci(diff) -> str:
    return (f"{float(diff['mean_diff']):+.3f}, 95 % CI [{float(diff['ci95_low']):+.3f}, "
            f"{float(diff['ci95_high']):+.3f}], {int(diff['wins'])}/{int(diff['n'])} seeds positive")


def _one_seed(claim_id: str, statement: str, n: int) -> dict:
    return dict(id=claim_id, statement=statement, status="not evaluated", evidence={"seeds": n},
                reason=f"{n} seed(s): a 95 % interval over seeds needs at least 2 (the default preset runs 5)")


def claim_label_efficiency(results: Results) -> dict:
    """Claim 1: noisy-label pretraining beats random init; the gain is largest at the fewest clean labels.

    Held when (a) at the smallest k the paired gain of the noisy-pretrained encoder+decoder over random
    initialisation is shown (:data:`GAIN_RULE`) and (b) the mean gain is largest at the smallest k (a point
    comparison of means, stated as such in the evidence).
    """
    few = _few(results)
    claim_id = "noisy_pretraining_beats_random"
    gains = gains_table(results)
    statement = ("Pretraining on plentiful noisy labels then fine-tuning on few clean labels beats random "
                 "initialisation on the same clean labels; the gain is largest when clean labels are fewest.")
    if gains.empty or len(gains) < 2:
        return dict(id=claim_id, statement=statement, status="not evaluated",
                    evidence={}, reason="needs noisy_full and random rows at two or more k")
    if int(gains.n.min()) < 2:
        return _one_seed(claim_id, statement, int(gains.n.min()))
    first, last = gains.iloc[0], gains.iloc[-1]
    beats = _shown(first)
    largest = bool(first.mean_diff >= gains.mean_diff.max() - 1e-12 and first.mean_diff > last.mean_diff)
    reason = (f"k={int(first.k)}: gain {_ci(first)}, so the gain is "
              f"{'shown' if beats else 'not shown (its interval includes 0)'}; the mean gain is "
              f"{'' if largest else 'not '}largest at the fewest clean tiles{few}")
    return dict(
        id=claim_id, statement=statement, status="held" if beats and largest else "did not hold",
        evidence={"gain_by_k": {int(r.k): round(float(r.mean_diff), 4) for r in gains.itertuples()},
                  "ci95_by_k": {int(r.k): [round(float(r.ci95_low), 4), round(float(r.ci95_high), 4)]
                                for r in gains.itertuples()},
                  "wins_by_k": {int(r.k): f"{int(r.wins)}/{int(r.n)}" for r in gains.itertuples()},
                  "gain_shown_at_smallest_k": beats, "mean_gain_largest_at_smallest_k": largest,
                  "rule": "held = gain shown at the smallest k (" + GAIN_RULE + ") and the mean gain largest there "
                          "(a comparison of means)"},
        reason=reason)


def claim_encoder_transfer(results: Results) -> dict:
    """Claim 2: the noisy-pretrained encoder helps a task with other classes and a fresh decoder (GAIN_RULE)."""
    s, few = results.settings, _few(results)
    claim_id = "encoder_transfers_to_new_classes"
    statement = ("The benefit comes through the encoder: the noisy-pretrained encoder with a new decoder helps a "
                 "task with a different class definition (merged and split classes).")
    df = results.finetune[results.finetune.task == TASK_B]
    a = df[df.init == "noisy_encoder"].set_index("seed").miou
    b = df[df.init == "random"].set_index("seed").miou
    common = sorted(set(a.index) & set(b.index))
    if not common:
        return dict(id=claim_id, statement=statement, status="not evaluated",
                    evidence={}, reason="no task-B rows")
    if len(common) < 2:
        return _one_seed(claim_id, statement, len(common))
    diff = paired_by_index(a, b)
    held = _shown(diff)
    return dict(id=claim_id, statement=statement, status="held" if held else "did not hold",
                evidence={k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in diff.items()}
                | {"k": s["task_b_k"], "task": TASK_B, "rule": "held = " + GAIN_RULE},
                reason=f"task '{TASK_B}' with a fresh decoder, k={s['task_b_k']}: noisy-pretrained encoder vs random "
                       f"init {_ci(diff)}{'' if held else ': not shown'}{few}")


def claim_layerwise(results: Results) -> dict:
    """Claim 3: encoder layers diverge less than decoder layers (weight-histogram KL)."""
    few = _few(results)
    statement = ("Encoder layers are robust to label noise and the decoder is sensitive: per-layer KL divergence "
                 "of weight histograms (clean- vs noisy-pretrained; pretrained vs fine-tuned) is lower in the "
                 "encoder than in the decoder.")
    if results.kl.empty:
        return dict(id="encoder_robust_decoder_sensitive", statement=statement, status="not evaluated",
                    evidence={}, reason="no layer-wise comparison rows")
    per_seed = results.kl.groupby(["comparison", "seed", "part"]).kl.mean().unstack("part")
    checks, evidence = {}, {}
    for comparison in [c for c in results.kl.comparison.unique() if "reference" not in c]:
        sub = per_seed.loc[comparison]
        lower = sub["encoder"] < sub["decoder"]
        checks[f"raw KL, {comparison}"] = bool(lower.all())
        evidence[comparison] = {"encoder_mean_kl": round(float(sub["encoder"].mean()), 5),
                                "decoder_mean_kl": round(float(sub["decoder"].mean()), 5),
                                "seeds_encoder_lower": f"{int(lower.sum())}/{len(lower)}"}
    for ref in [c for c in results.kl.comparison.unique() if "reference" in c]:
        sub = per_seed.loc[ref]
        evidence[ref] = {"encoder_mean_kl": round(float(sub["encoder"].mean()), 5),
                         "decoder_mean_kl": round(float(sub["decoder"].mean()), 5)}
    # Small layers (most of the decoder) have coarser histograms, so raw KL favours the encoder whatever the
    # labels; dividing each layer's clean-vs-noisy KL by how far training moved it (same layer, same size)
    # removes most of that. The claim must hold on both the raw and the size-normalised numbers.
    noisy_key = "clean vs noisy pretrained"
    if MOVEMENT in set(results.kl.comparison) and noisy_key in set(results.kl.comparison):
        kl = results.kl.set_index(["seed", "name"])
        moved = kl[kl.comparison == MOVEMENT].kl
        noisy = kl[kl.comparison == noisy_key]
        ratio = (noisy.kl / moved.reindex(noisy.index).clip(lower=1e-12)).rename("ratio")
        per_part = pd.concat([noisy.part, ratio], axis=1).groupby(["seed", "part"]).ratio.median().unstack("part")
        lower = per_part["encoder"] < per_part["decoder"]
        checks["size-normalised KL, clean vs noisy"] = bool(lower.all())
        evidence["size-normalised: median per layer of KL(clean vs noisy) / KL(initial vs clean)"] = {
            "encoder": round(float(per_part["encoder"].mean()), 4), "decoder": round(float(per_part["decoder"].mean()), 4),
            "seeds_encoder_lower": f"{int(lower.sum())}/{len(lower)}"}
    failed = [name for name, ok in checks.items() if not ok]
    evidence["rule"] = ("held = encoder < decoder in every seed for the mean layer KL of each comparison and for the "
                        "size-normalised ratio; raw KL alone is confounded by layer size (small decoder layers have "
                        "coarse histograms: see the two-random-initialisations reference)")
    evidence["checks"] = checks
    held = bool(checks) and not failed
    return dict(id="encoder_robust_decoder_sensitive", statement=statement,
                status="held" if held else "did not hold", evidence=evidence,
                reason=("encoder < decoder in every seed on every check" if held else
                        "encoder not below decoder in every seed for: " + "; ".join(failed)) + few)


def _sweep_gains(results: Results) -> pd.DataFrame:
    """Per seed (rows) and pretraining severity (columns): fine-tuned mIoU gain over random init at sweep_k."""
    ft = results.finetune[(results.finetune.task == TASK_A) & (results.finetune.k == results.settings["sweep_k"])]
    random_ = ft[ft.init == "random"].set_index("seed").miou
    columns = {}
    for level in sorted(results.pretrain.severity.unique()):
        sub = (ft[ft.init == "clean_full"] if level == 0 else
               ft[(ft.init == "noisy_full") & (ft.severity == level)]).set_index("seed").miou
        columns[float(level)] = sub - random_
    return pd.DataFrame(columns).dropna()


def claim_noise_sweep(results: Results) -> dict:
    """Claim 4: the benefit shrinks as noise grows and holds over a range of noise levels.

    Held when (a) it shrinks: the mean gain falls with severity (Spearman rho < 0) and the per-seed drop in gain
    from the lowest severity (0 = clean-pretrained) to the highest is shown (:data:`GAIN_RULE`), and (b) it holds
    over a range: the gain is shown at the lowest noisy severity; the range reported is the run of swept
    severities, from the lowest up, at which it is shown.
    """
    s, few = results.settings, _few(results)
    claim_id = "benefit_shrinks_with_noise"
    statement = "The benefit of noisy-label pretraining shrinks as label noise grows and holds over a range of levels."
    sweep = noise_sweep_table(results)
    noisy_levels = sweep[sweep.severity > 0]
    if len(noisy_levels) < 2:
        return dict(id=claim_id, statement=statement, status="not evaluated",
                    evidence={"levels": noisy_levels.severity.tolist()},
                    reason="needs at least two noise levels in the sweep")
    if int(sweep.n_seeds.min()) < 2:
        return _one_seed(claim_id, statement, int(sweep.n_seeds.min()))
    from scipy.stats import spearmanr

    rho = float(spearmanr(sweep.severity, sweep.gain_over_random).statistic)
    per_seed = _sweep_gains(results)
    lowest, highest = per_seed.columns.min(), per_seed.columns.max()
    drop = paired_difference(per_seed[lowest].to_numpy(), per_seed[highest].to_numpy())
    shrinks = bool(rho < 0 and _shown(drop))
    shown_at = []
    for r in noisy_levels.sort_values("severity").itertuples():
        if not _shown({"ci95_low": r.gain_ci95_low, "n": r.n_seeds}):
            break
        shown_at.append(float(r.severity))
    holds = bool(shown_at)
    reason = (f"fine-tuned on {s['sweep_k']} clean tiles (severity 0 = clean-pretrained): the gain "
              f"{'shrinks' if shrinks else 'is not shown to shrink'} (drop from severity {lowest:g} to {highest:g}: "
              f"{_ci(drop)}; Spearman rho {rho:+.2f}); it is "
              + (f"shown at severities {shown_at[0]:g} to {shown_at[-1]:g}" if holds else
                 f"not shown at the lowest noisy severity {float(noisy_levels.severity.min()):g}") + few)
    return dict(
        id=claim_id, statement=statement, status="held" if shrinks and holds else "did not hold",
        evidence={"gain_by_severity": {float(r.severity): round(float(r.gain_over_random), 4)
                                       for r in sweep.itertuples()},
                  "ci95_by_severity": {float(r.severity): [round(float(r.gain_ci95_low), 4),
                                                           round(float(r.gain_ci95_high), 4)]
                                       for r in sweep.itertuples()},
                  "pixel_noise_rate": {float(r.severity): round(float(r.pixel_noise_rate), 3)
                                       for r in sweep.itertuples()},
                  "spearman_severity_gain": round(rho, 3),
                  "drop_lowest_to_highest": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in drop.items()},
                  "shrinks": shrinks, "gain_shown_at_severities": shown_at,
                  "positive_mean_at_every_noisy_level": bool((noisy_levels.gain_over_random > 0).all()),
                  "rule": "held = rho < 0 and the drop shown, and the gain shown at the lowest noisy severity (" +
                          GAIN_RULE + ")"},
        reason=reason)


def evaluate_claims(results: Results) -> list[dict]:
    """The paper's four claims with statuses computed from ``results`` (dicts for ``Report.claim``)."""
    return [claim_label_efficiency(results), claim_encoder_transfer(results), claim_layerwise(results),
            claim_noise_sweep(results)]


def headline_metrics(results: Results) -> dict:
    s = results.settings
    gains = gains_table(results)
    eff = label_efficiency_table(results)
    out = {"seconds": round(results.seconds, 1)}
    for r in eff.dropna(subset=["k"]).itertuples():
        out[f"miou_{r.init}_k{int(r.k)}"] = round(float(r.miou_mean), 4)
    for r in gains.itertuples():
        out[f"gain_noisy_full_vs_random_k{int(r.k)}"] = round(float(r.mean_diff), 4)
    out["gain_smallest_k"] = out.get(f"gain_noisy_full_vs_random_k{s['k_values'][0]}", float("nan"))
    for r in task_b_table(results).itertuples():
        out[f"task_b_miou_{r.init}"] = round(float(r.miou_mean), 4)
    for r in kl_summary_table(results).itertuples():
        out[f"kl_{r.part}_{r.comparison.split(' (')[0].replace(' ', '_')}"] = round(float(r.mean_layer_kl), 5)
    return out


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------

_CLASS_COLOURS = {"cultivated": "#e6c84f", "grassland": "#9ad16b", "shrubland": "#5f9e4f", "forest": "#1f5a2c",
                  "water": "#2b6fd6", "artificial": "#c0392b", "low vegetation": "#9ad16b", "road": "#555555",
                  "building": "#c0392b"}


def _cmap(task):
    from matplotlib.colors import ListedColormap

    names = landcover.task_legend(task)[0]
    return ListedColormap([_CLASS_COLOURS[n] for n in names]), names


def _show_labels(ax, labels, task, title=""):
    cmap, names = _cmap(task)
    shown = np.ma.masked_equal(labels, IGNORE_INDEX)
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def false_colour(image: np.ndarray, bands=landcover.NIRRGB) -> np.ndarray:
    """NIR-R-G false colour (vegetation red), stretched to the 2-98 % range per band."""
    bands = tuple(bands)
    pick = [bands.index(b) for b in ("B08", "B04", "B03") if b in bands][:3]
    rgb = np.nan_to_num(image[pick].transpose(1, 2, 0).astype(np.float64))
    lo, hi = np.percentile(rgb, 2, axis=(0, 1)), np.percentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def plot_tiles(tiles: landcover.LandcoverTiles, n: int = 4):
    """False-colour image, lulc labels, structure labels and height for ``n`` tiles."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = min(n, len(tiles))
    fig, axes = plt.subplots(4, n, figsize=(2.2 * n, 8.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(false_colour(tiles.images[i], tiles.bands))
        axes[0, i].set_title(f"tile {i}: NIR-R-G", fontsize=8)
        axes[0, i].axis("off")
        _show_labels(axes[1, i], tiles.labels(TASK_A)[i], TASK_A, "task A: lulc")
        _show_labels(axes[2, i], tiles.labels(TASK_B)[i], TASK_B, "task B: structure")
        im = axes[3, i].imshow(tiles.height[i], cmap="viridis")
        axes[3, i].set_title("height (nDSM, m)", fontsize=8)
        axes[3, i].axis("off")
    fig.colorbar(im, ax=axes[3, :].tolist(), fraction=0.02)
    for task, row in ((TASK_A, 1), (TASK_B, 2)):
        cmap, names = _cmap(task)
        axes[row, -1].legend(handles=[Patch(color=cmap(j), label=nm) for j, nm in enumerate(names)],
                             fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def plot_noise_models(tiles: landcover.LandcoverTiles, index: int = 0, severity: float = 0.6, seed: int = 0,
                      models: Sequence[str] | None = None, composite: Sequence[str] = DEFAULT_NOISE):
    """Clean labels of one tile next to each noise model's output and the composite, with pixel noise rates."""
    import matplotlib.pyplot as plt

    models = list(models or label_noise.NOISE_MODELS)
    clean = tiles.labels(TASK_A)[index]
    context = {"height": tiles.height[index], "ndvi": tiles.ndvi()[index]}
    ka = len(landcover.task_legend(TASK_A)[0])
    panels = [("clean", clean)]
    for name in models:
        noisy = label_noise.make_noise(name, severity, ka)(clean, np.random.default_rng(seed), **context)
        panels.append((name, noisy))
    noisy = label_noise.make_noise(list(composite), severity, ka)(clean, np.random.default_rng(seed), **context)
    panels.append(("composite: " + "+".join(composite), noisy))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.6))
    axes[0].imshow(false_colour(tiles.images[index], tiles.bands))
    axes[0].set_title("image (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    for ax, (name, labels) in zip(axes[1:], panels):
        rate = label_noise.noise_rate(clean, labels)
        title = name if name == "clean" else f"{name}\n{rate:.0%} px changed"
        _show_labels(ax, labels, TASK_A, title if len(title) < 40 else f"composite\n{rate:.0%} px changed")
    fig.suptitle(f"label-noise models at severity {severity:g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_label_efficiency(results: Results, task: str = TASK_A):
    """mIoU vs number of clean tiles, one line per initialisation, 95 % t-interval band over seeds."""
    import matplotlib.pyplot as plt

    table = label_efficiency_table(results, task).dropna(subset=["k"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (init, sub) in enumerate(table.groupby("init", sort=False)):
        sub = sub.sort_values("k")
        ax.plot(sub.k, sub.miou_mean, marker="o", color=f"C{i}", label=INIT_LABELS.get(init, init))
        if sub.miou_ci95_low.notna().any():
            ax.fill_between(sub.k, sub.miou_ci95_low, sub.miou_ci95_high, color=f"C{i}", alpha=0.15, lw=0)
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # log minor ticks would print 6x10^0 etc. over the k labels
    ax.set_xticks(results.settings["k_values"], [str(k) for k in results.settings["k_values"]])
    ax.set_xlabel("clean labelled tiles for fine-tuning (k)")
    ax.set_ylabel("test mIoU")
    title = f"label efficiency ({len(results.settings['seeds'])} seed(s), band = 95 % CI)"
    for init in results.unavailable:
        title += f"\n{INIT_LABELS.get(init, init)}: not evaluated (weights unavailable; see the table)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_noise_sweep(results: Results):
    """Pixel noise rate, pretrained mIoU and fine-tuned gain over random init vs pretraining noise severity."""
    import matplotlib.pyplot as plt

    sweep = noise_sweep_table(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(sweep.severity, sweep.pretrained_miou_no_finetune, marker="o", label="pretrained, no fine-tuning")
    axes[0].plot(sweep.severity, sweep.finetuned_miou, marker="s",
                 label=f"fine-tuned on {results.settings['sweep_k']} clean tiles")
    axes[0].set_xlabel("pretraining noise severity")
    axes[0].set_ylabel("test mIoU (clean labels)")
    axes[0].legend(fontsize=7)
    ax2 = axes[0].twiny()
    ax2.set_xlim(axes[0].get_xlim())
    ax2.set_xticks(sweep.severity)
    ax2.set_xticklabels([f"{r:.0%}" for r in sweep.pixel_noise_rate], fontsize=7)
    ax2.set_xlabel("pixels with a wrong label", fontsize=8)
    axes[1].errorbar(sweep.severity, sweep.gain_over_random,
                     yerr=[sweep.gain_over_random - sweep.gain_ci95_low.fillna(sweep.gain_over_random),
                           sweep.gain_ci95_high.fillna(sweep.gain_over_random) - sweep.gain_over_random],
                     marker="o", capsize=3)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_xlabel("pretraining noise severity")
    axes[1].set_ylabel("mIoU gain over random init")
    axes[1].set_title("benefit vs noise (95 % CI over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_layerwise_kl(results: Results):
    """Per-layer KL along depth for each comparison (mean over seeds, min-max band)."""
    import matplotlib.pyplot as plt

    comparisons = list(results.kl.comparison.unique())
    fig, axes = plt.subplots(len(comparisons), 1, figsize=(8, 2.8 * len(comparisons)), sharex=True, squeeze=False)
    for ax, comparison in zip(axes[:, 0], comparisons):
        weight_analysis.plot_layerwise_kl(results.kl[results.kl.comparison == comparison], ax=ax,
                                          title=comparison)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# Real data and the checkpoint, as the notebook uses them
# ---------------------------------------------------------------------------------------------------

def save_study_checkpoint(results: Results, enabled: bool = True) -> dict:
    """Save the first seed's noisy-pretrained encoder as ``noisy-pretrained-unet-r18`` when it is a ResNet-18.

    Returns ``{"saved": bool, "path" or "reason": str}`` for the report.
    """
    if not enabled:
        return {"saved": False, "reason": "save_checkpoint is false"}
    if results.checkpoint_model is None:
        return {"saved": False, "reason": "no noisy-pretrained model in the results"}
    encoder = results.checkpoint_meta.get("encoder")
    if encoder != "resnet18":
        return {"saved": False, "reason": f"encoder is {encoder}; '{CHECKPOINT_NAME}' holds ResNet-18 only "
                                          "(the SAR study produces its own with produce_pretrained_encoder)"}
    return {"saved": True, "path": str(save_pretrained_encoder(results.checkpoint_model, results.checkpoint_meta))}


def real_patch_figure(root: str | Path = "/work/shared/data/remote_sensing/eolearn_testeopatch_slovenia",
                      severity: float = 0.3, noise_models: Sequence[str] = DEFAULT_NOISE, seed: int = 0):
    """The real Sentinel-2 patch with its LULC label and a noisy copy; ``(None, reason)`` when it is absent.

    Returns ``(figure, summary dict)``; the summary counts no-data pixels (masked out of any loss).
    """
    import matplotlib.pyplot as plt

    try:
        image, mask, meta = landcover.load_eolearn_patch(root)
    except DataError as exc:  # shared/ is absent: the kit runs without it
        return None, {"available": False, "reason": str(exc)}
    ka = len(landcover.task_legend(TASK_A)[0])
    images, masks, counts = landcover.prepare_tiles(image[None], mask[None], len(meta["bands"]), ka,
                                                    names=[f"{root}/REFERENCE_SCENES.npy scene {meta['scene']}"])
    # The sensor rule thresholds a LiDAR surface height the patch does not have (its DEM is terrain, not nDSM).
    models = [m for m in noise_models if m != "sensor_rule"]
    skipped = [m for m in noise_models if m == "sensor_rule"]
    noisy = (label_noise.make_noise(models, severity, ka)(masks[0], np.random.default_rng(seed)) if models
             else masks[0].copy())
    fig, axes = plt.subplots(1, 3, figsize=(8, 2.9))
    axes[0].imshow(false_colour(images[0], meta["bands"]))
    axes[0].set_title("Sentinel-2 scene 2 (NIR-R-G)", fontsize=8)
    axes[0].axis("off")
    _show_labels(axes[1], masks[0], TASK_A, "LULC reference (white = no data)")
    _show_labels(axes[2], noisy, TASK_A, f"composite noise {severity:g}: {label_noise.noise_rate(masks[0], noisy):.0%}")
    fig.tight_layout()
    labelled = masks[0] != IGNORE_INDEX
    summary = {"available": True, "pixels": int(masks[0].size), "labelled_pixels": int(labelled.sum()),
               "nodata_label_pixels": int((~labelled).sum()), "nan_image_pixels": counts["nodata_pixels"],
               "class_pixels": {n: int((masks[0] == i).sum()) for i, n in enumerate(landcover.task_legend(TASK_A)[0])},
               "noisy_pixel_rate": label_noise.noise_rate(masks[0], noisy), "noise_models": models,
               "noise_models_skipped": {m: "needs a surface height (nDSM) the patch lacks" for m in skipped}}
    return fig, summary
