"""Sliding-window inference over a large SAR scene: time and peak memory (prints a table).

The study's model (ResNet-18 truncated after layer3 + DeepLabV3 head, 2 bands, 4 classes) predicts a
square scene of each size with ``labkit.methods.inference.sliding_window_predict``. Memory is sampled
from the process RSS in a background thread. What must hold: the extra memory beyond the scene's own
arrays (input + class probabilities + weight map, which grow with the scene) stays about constant as the
scene grows, i.e. it is bounded by the tile batch, not the scene (no whole-scene feature tensors).

    .venv/bin/python benchmarks/bench_sar_transfer.py                # 1000, 2500 and 5000 pixels a side
    .venv/bin/python benchmarks/bench_sar_transfer.py --sizes 512 1024 --tile 128
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

import numpy as np
import psutil
import torch

from labkit.methods.inference import sliding_window_predict
from labkit.studies.sar_transfer import NUM_CLASSES, create_model


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __init__(self):
        self.proc = psutil.Process(os.getpid())
        self.peak = 0
        self._stop = threading.Event()

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decoder-channels", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(decoder_channels=args.decoder_channels).eval()
    # Warm-up: the first forward pass allocates torch's workspaces; do not charge them to the first scene.
    sliding_window_predict(
        model, np.zeros((2, args.tile, args.tile), np.float32), NUM_CLASSES, tile=args.tile, batch_size=args.batch_size
    )
    rows = []
    for size in args.sizes:
        # Inference cost does not depend on content: a normalised dual-pol scene of random values.
        scene = np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32)
        output_mb = (NUM_CLASSES + 1) * size * size * 4 / 2**20  # probabilities + blend weights
        gc.collect()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            probs = sliding_window_predict(
                model, scene, NUM_CLASSES, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size
            )
            seconds = time.perf_counter() - t0
        stride = max(int(args.tile * (1 - args.overlap)), 1)
        n_tiles = int(np.ceil(max(size - args.tile, 0) / stride) + 1) ** 2
        extra = (mem.peak - mem.start) / 2**20
        rows.append(
            (size, n_tiles, seconds, 1e3 * seconds / n_tiles, scene.nbytes / 2**20, output_mb, extra, extra - output_mb)
        )
        del probs, scene
    print(
        f"model: ResNet-18 up to layer3 (stride 16) + DeepLabV3 head ({args.decoder_channels} ch), tile {args.tile}, "
        f"overlap {args.overlap}, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(
        "| scene side | tiles | seconds | ms / tile | input MB | output MB | peak extra RSS MB | "
        "extra beyond output MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} | {r[7]:.0f} |")


if __name__ == "__main__":
    main()
