"""Speed targets of the noisy-label study (plain script; prints a table).

Targets (issue 4): label-noise models over 1,000 tiles of 256 x 256 in under 10 s; the layer-wise weight
analysis of a ResNet-18 U-Net in under 5 s; produce_pretrained_encoder at its defaults well under 60 s.
Run: .venv/bin/python benchmarks/bench_noisy_label_pretraining.py [--tiles 1000] [--skip-produce]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--skip-produce", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LABKIT_CHECKPOINTS", tempfile.mkdtemp(prefix="bench-nlp-"))

    from labkit.data import label_noise
    from labkit.data.landcover import LandscapeSimulator
    from labkit.methods.weight_analysis import layerwise_kl
    from labkit.models.segmentation import create_segmenter

    rows = []
    base = LandscapeSimulator(256).sample(20, seed=0)
    # 1,000 tiles made of the 20 simulated ones (simulation is not what is timed)
    labels = np.concatenate([base.labels()] * int(np.ceil(args.tiles / 20)))[: args.tiles]
    height = np.concatenate([base.height] * int(np.ceil(args.tiles / 20)))[: args.tiles]
    ndvi = np.concatenate([base.ndvi()] * int(np.ceil(args.tiles / 20)))[: args.tiles]
    for name in list(label_noise.NOISE_MODELS) + ["composite (5 geometric)"]:
        names = list(label_noise.NOISE_MODELS)[:5] if name.startswith("composite") else name
        model = label_noise.make_noise(names, 0.5, 6)
        context = {"height": height, "ndvi": ndvi} if name == "sensor_rule" else {}
        t0 = time.perf_counter()
        label_noise.apply_noise(model, labels, seed=0, **context)
        seconds = time.perf_counter() - t0
        rows.append((f"noise: {name}, {args.tiles} x 256^2", seconds, 10.0))

    a = create_segmenter("unet", encoder="resnet18", in_channels=4, num_classes=6)
    b = create_segmenter("unet", encoder="resnet18", in_channels=4, num_classes=6)
    t0 = time.perf_counter()
    layerwise_kl(a, b)
    rows.append(("layer-wise KL, ResNet-18 U-Net (smp default decoder)", time.perf_counter() - t0, 5.0))

    if not args.skip_produce:
        from labkit.studies.noisy_label_pretraining import produce_pretrained_encoder

        t0 = time.perf_counter()
        produce_pretrained_encoder(progress=False)
        rows.append(("produce_pretrained_encoder() defaults", time.perf_counter() - t0, 60.0))

    print(f"| {'benchmark':<52} | seconds | target | ok |")
    print(f"|{'-' * 54}|---------|--------|----|")
    for name, seconds, target in rows:
        print(f"| {name:<52} | {seconds:7.2f} | {target:6.1f} | {'yes' if seconds < target else 'NO'} |")


if __name__ == "__main__":
    main()
