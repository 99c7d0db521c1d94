"""Pretraining throughput of labkit's MAE and SimCLR vs a bare forward+backward of the same model.

For each method: (a) the full pretraining loop (``pretrain_mae`` / ``pretrain_simclr``: batching,
augmentation, forward, backward, optimiser and scheduler steps) and (b) the bare step on batches
prepared beforehand (same module, same batch size; for SimCLR the two augmented views are computed
before timing). The ratio a/b shows whether data handling and augmentation slow pretraining down
(target: >= 0.8). Also: a bare forward+backward of the encoder alone on all tokens, and the peak
resident memory of each measurement (each runs in its own process).

Both sides report their best timed repetition (as ``timeit`` does), not the median: on a shared
2-core machine a burst of load from another process during one epoch would otherwise decide the
ratio. ``--reps`` sets the repetitions (the first of each side is warm-up and is not counted).

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


def measure(
    kind: str,
    method: str,
    img_size: int,
    patch: int,
    batch: int,
    steps: int,
    reps: int = 4,
    depth: int = 4,
    width: int = 96,
) -> dict:
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
    if kind == "pipeline":
        common = dict(
            img_size=img_size,
            patch_size=patch,
            epochs=reps,
            batch_size=batch,
            progress=False,
            encoder_kwargs=encoder_kwargs,
        )
        if method == "mae":
            _, hist = pretrain_mae(images, **mae_kwargs, **common)
        else:
            _, hist = pretrain_simclr(images, **common)
        rate = float(hist["images_per_second"].iloc[1:].max())  # epoch 1 pays one-off warm-up
    else:
        torch.manual_seed(0)
        enc = create_backbone(
            "vit_tiny",
            weights="random",
            img_size=img_size,
            patch_size=patch,
            in_chans=1,
            num_classes=0,
            **encoder_kwargs,
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
        times = []
        for _rep in range(reps):
            t0 = time.perf_counter()
            for b in batches:
                loss = step(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            times.append(time.perf_counter() - t0)
        rate = steps * batch / float(np.min(times[1:]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        peak_mb = max(peak_mb, torch.cuda.max_memory_allocated() / 2**20)
    return {"images_per_second": rate, "peak_memory_mb": peak_mb, "threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--depth", type=int, default=4, help="transformer blocks (encoder_depth)")
    p.add_argument("--width", type=int, default=96, help="token width (encoder_width)")
    p.add_argument("--steps", type=int, default=6, help="batches per timed epoch")
    p.add_argument("--reps", type=int, default=4, help="timed repetitions per measurement (the first is warm-up)")
    p.add_argument("--one", nargs=2, metavar=("KIND", "METHOD"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        args = (a.img_size, a.patch_size, a.batch_size, a.steps, a.reps, a.depth, a.width)
        print(json.dumps(measure(a.one[0], a.one[1], *args)))
        return
    results = {}
    for kind, method in [
        ("pipeline", "mae"),
        ("bare", "mae"),
        ("pipeline", "simclr"),
        ("bare", "simclr"),
        ("bare", "encoder"),
    ]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                kind,
                method,
                "--img-size",
                str(a.img_size),
                "--patch-size",
                str(a.patch_size),
                "--batch-size",
                str(a.batch_size),
                "--steps",
                str(a.steps),
                "--reps",
                str(a.reps),
                "--depth",
                str(a.depth),
                "--width",
                str(a.width),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[(kind, method)] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"ViT ({a.depth} blocks, width {a.width}), {a.img_size} px, patch {a.patch_size}, batch {a.batch_size}, "
        f"{results[('bare', 'encoder')]['threads']} torch thread(s)\n"
    )
    print("| method | pretraining loop (img/s) | bare step (img/s) | loop / bare | peak memory loop / bare (MB) |")
    print("|---|---|---|---|---|")
    for method in ("mae", "simclr"):
        loop, bare = results[("pipeline", method)], results[("bare", method)]
        ratio = loop["images_per_second"] / bare["images_per_second"]
        flag = "" if ratio >= 0.8 else "  (below the 0.8 target)"
        print(
            f"| {method} | {loop['images_per_second']:.1f} | {bare['images_per_second']:.1f} | {ratio:.2f}{flag} | "
            f"{loop['peak_memory_mb']:.0f} / {bare['peak_memory_mb']:.0f} |"
        )
    enc = results[("bare", "encoder")]
    print(
        f"| encoder alone, all tokens (reference) | - | {enc['images_per_second']:.1f} | - | "
        f"- / {enc['peak_memory_mb']:.0f} |"
    )


if __name__ == "__main__":
    main()
