"""Speed targets of the noisy-label study (plain script; prints a table).

Targets (issue 13): label-noise models over 1,000 tiles of 256 x 256 in under 10 s each; the null-corrected
layer-wise analysis (the matched pairs: clean order 1 vs noisy order 0, clean order 1 vs clean order 0; per-layer excess) of a ResNet-18 U-Net in under
10 s, at the default preset's size (4 stages, decoder width 32) and at the paper's (5 stages, smp's 256-wide
decoder); produce_pretrained_encoder at its defaults well under 60 s.
Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_noisy_label_pretraining.py [--tiles 1000] [--skip-noise]
[--skip-produce]. Timings on a shared machine are inflated by whatever else runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def null_corrected_analysis(
    encoder_depth: int, decoder_width: int, sample: int = 512, bins: int = 32
) -> tuple[int, float]:
    """One seed's layer-wise analysis on three perturbed copies of one initial U-Net: (layers, seconds).

    Only the analysis is timed (the model build and the weight perturbation are not)."""
    from labkit.methods.weight_analysis import layerwise_divergence
    from labkit.studies.noisy_label_pretraining import build_model

    init = build_model(6, "resnet18", 4, decoder_width, seed=0, encoder_depth=encoder_depth).state_dict()
    gen = torch.Generator().manual_seed(1)

    def trained(scale):  # stand-ins for pretrained weights: the initial weights moved by noise
        return {
            k: v + scale * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.ndim > 1 else v
            for k, v in init.items()
        }

    reference, clean, noisy = trained(0.1), trained(0.1), trained(0.2)  # clean order 1, clean order 0, noisy order 0
    t0 = time.perf_counter()
    raw = layerwise_divergence(reference, noisy, init, sample=sample, bins=bins)
    ref = layerwise_divergence(reference, clean, init, sample=sample, bins=bins)
    excess = raw.set_index("name").value - ref.set_index("name").value
    assert np.isfinite(excess).all()
    return len(raw), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--skip-noise", action="store_true")
    parser.add_argument("--skip-produce", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LABKIT_CHECKPOINTS", tempfile.mkdtemp(prefix="bench-nlp-"))

    rows = []
    if not args.skip_noise:
        from labkit.data import label_noise
        from labkit.data.landcover import LandscapeSimulator

        base = LandscapeSimulator(256).sample(20, seed=0)
        # 1,000 tiles made of the 20 simulated ones (simulation is not what is timed)
        reps = int(np.ceil(args.tiles / 20))
        labels = np.concatenate([base.labels()] * reps)[: args.tiles]
        height = np.concatenate([base.height] * reps)[: args.tiles]
        ndvi = np.concatenate([base.ndvi()] * reps)[: args.tiles]
        for name in list(label_noise.NOISE_MODELS) + ["composite (5 geometric)"]:
            names = list(label_noise.NOISE_MODELS)[:5] if name.startswith("composite") else name
            model = label_noise.make_noise(names, 0.5, 6)
            context = {"height": height, "ndvi": ndvi} if name == "sensor_rule" else {}
            t0 = time.perf_counter()
            label_noise.apply_noise(model, labels, seed=0, **context)
            rows.append((f"noise: {name}, {args.tiles} x 256^2", time.perf_counter() - t0, 10.0))

    for depth, width, label in ((4, 32, "default: 4 stages, decoder 32"), (5, 256, "paper: 5 stages, decoder 256")):
        n, seconds = null_corrected_analysis(depth, width)
        rows.append((f"null-corrected layer analysis, {label} ({n} layers)", seconds, 10.0))

    if not args.skip_produce:
        from labkit.studies.noisy_label_pretraining import produce_pretrained_encoder

        t0 = time.perf_counter()
        produce_pretrained_encoder(progress=False)
        rows.append(("produce_pretrained_encoder() defaults", time.perf_counter() - t0, 60.0))

    width = max(len(r[0]) for r in rows)
    print(f"| {'benchmark':<{width}} | seconds | target | ok |")
    print(f"|{'-' * (width + 2)}|---------|--------|----|")
    for name, seconds, target in rows:
        print(f"| {name:<{width}} | {seconds:7.2f} | {target:6.1f} | {'yes' if seconds < target else 'NO'} |")


if __name__ == "__main__":
    main()
