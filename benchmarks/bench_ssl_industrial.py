"""Pretraining throughput of labkit's MAE and SimCLR vs a bare forward+backward of the same model.

For each method: (a) the full pretraining loop (``pretrain_mae`` / ``pretrain_simclr``: batching,
augmentation, forward, backward, optimiser and scheduler steps) and (b) the bare step on batches
prepared beforehand (same module, same batch size; for SimCLR the two augmented views are computed
before timing). The ratio a/b shows whether data handling and augmentation slow pretraining down
(target: >= 0.8). Also: a bare forward+backward of the encoder alone on all tokens, and the peak
resident memory of each method's process.

The two sides are interleaved in one process per method (one epoch of the loop, then one pass of the
bare step, ``--reps`` rounds), and each reports its best round after the first (as ``timeit`` does):
on a shared 2-core machine a change of load between two separate measurements would otherwise decide
the ratio. One torch thread by default (``--threads``), which is steadier under shared load.

The defaults are the ``default`` preset's: 64 px, 8 px patches (an 8 x 8 token grid), a 4-block, 96-wide ViT,
batch 32, the study's MAE decoder (96 wide, 1 block) on standardised pixels.

    .venv/bin/python benchmarks/bench_ssl_industrial.py [--img-size 64] [--patch-size 8] [--batch-size 32]
        [--depth 4] [--width 96]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(method: str, img_size: int, patch: int, batch: int, steps: int, reps: int, depth: int, width: int) -> dict:
    """One process per method: ``reps`` rounds, each one epoch of the pretraining loop then one pass of the bare
    step over the same number of batches (interleaved, so a change of load on a shared machine hits both
    sides alike); the best round of each side after the first (warm-up)."""
    import numpy as np
    import torch

    from labkit.data.surfaces import simulate_surfaces
    from labkit.methods.ssl import (
        MaskedAutoencoder,
        SimCLR,
        nt_xent_loss,
        pooled_features,
        pretrain_mae,
        pretrain_simclr,
        standardise,
    )
    from labkit.models.backbones import create_backbone

    images = simulate_surfaces(batch * steps, size=img_size, seed=0).images
    encoder_kwargs = dict(depth=depth, embed_dim=width, num_heads=max(1, width // 32))
    mae_kwargs = dict(decoder_dim=96, decoder_depth=1, norm_pix_loss=False)  # the study's (pretrain_task)
    common = dict(
        img_size=img_size, patch_size=patch, epochs=1, batch_size=batch, progress=False, encoder_kwargs=encoder_kwargs
    )

    def loop_rate() -> float:
        if method == "mae":
            _, hist = pretrain_mae(images, **mae_kwargs, **common)
        else:
            _, hist = pretrain_simclr(images, **common)
        return float(hist["images_per_second"].iloc[0])

    torch.manual_seed(0)
    enc = create_backbone(
        "vit_tiny", weights="random", img_size=img_size, patch_size=patch, in_chans=1, num_classes=0, **encoder_kwargs
    )
    x = standardise(torch.from_numpy(images), [0.5], [0.15])
    batches = [x[i * batch : (i + 1) * batch] for i in range(steps)]
    if method == "mae":
        module = MaskedAutoencoder(enc, **mae_kwargs)
        step = lambda b: module(b)[0]  # noqa: E731
    elif method == "simclr":
        module = SimCLR(enc)
        views = [(module.augment(b), module.augment(b)) for b in batches]
        batches = list(range(steps))
        step = lambda i: nt_xent_loss(  # noqa: E731
            *module.projector(pooled_features(enc, torch.cat(views[i]))).chunk(2), temperature=module.temperature
        )
    else:  # encoder alone, all tokens, the mean output as a stand-in loss
        module = enc
        step = lambda b: enc.forward_features(b).mean()  # noqa: E731
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def bare_rate() -> float:
        t0 = time.perf_counter()
        for b in batches:
            loss = step(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch / (time.perf_counter() - t0)

    loops, bares = [], []
    for _rep in range(reps):
        if method != "encoder":
            loops.append(loop_rate())
        bares.append(bare_rate())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        peak_mb = max(peak_mb, torch.cuda.max_memory_allocated() / 2**20)
    return {
        "loop_images_per_second": float(np.max(loops[1:])) if loops else float("nan"),
        "bare_images_per_second": float(np.max(bares[1:])),
        "peak_memory_mb": peak_mb,
        "threads": torch.get_num_threads(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--depth", type=int, default=4, help="transformer blocks (encoder_depth)")
    p.add_argument("--width", type=int, default=96, help="token width (encoder_width)")
    p.add_argument("--steps", type=int, default=6, help="batches per timed epoch")
    p.add_argument("--reps", type=int, default=6, help="interleaved rounds per method (the first is warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--one", metavar="METHOD", help=argparse.SUPPRESS)
    a = p.parse_args()
    args = (a.img_size, a.patch_size, a.batch_size, a.steps, a.reps, a.depth, a.width)
    if a.one:
        import torch

        torch.set_num_threads(a.threads)
        print(json.dumps(measure(a.one, *args)))
        return
    flags = ["--img-size", a.img_size, "--patch-size", a.patch_size, "--batch-size", a.batch_size]
    flags += ["--steps", a.steps, "--reps", a.reps, "--depth", a.depth, "--width", a.width, "--threads", a.threads]
    results = {}
    for method in ("mae", "simclr", "encoder"):
        out = subprocess.run(
            [sys.executable, __file__, "--one", method, *map(str, flags)], capture_output=True, text=True, check=True
        )
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"ViT ({a.depth} blocks, width {a.width}), {a.img_size} px, patch {a.patch_size}, batch {a.batch_size}, "
        f"{results['encoder']['threads']} torch thread(s), {a.reps - 1} interleaved rounds (best of each side)\n"
    )
    print("| method | pretraining loop (img/s) | bare step (img/s) | loop / bare | peak memory (MB) |")
    print("|---|---|---|---|---|")
    for method in ("mae", "simclr"):
        r = results[method]
        ratio = r["loop_images_per_second"] / r["bare_images_per_second"]
        flag = "" if ratio >= 0.8 else "  (below the 0.8 target)"
        print(
            f"| {method} | {r['loop_images_per_second']:.1f} | {r['bare_images_per_second']:.1f} | {ratio:.2f}{flag} "
            f"| {r['peak_memory_mb']:.0f} |"
        )
    enc = results["encoder"]
    print(
        f"| encoder alone, all tokens (reference) | - | {enc['bare_images_per_second']:.1f} | - | "
        f"{enc['peak_memory_mb']:.0f} |"
    )


if __name__ == "__main__":
    main()
