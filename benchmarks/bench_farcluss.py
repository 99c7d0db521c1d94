"""Time and memory per training iteration of each FARCLUSS-study method on the same batch.

Targets (issue 16): the prototype contrast adds at most ``cost_tolerance`` % of the teacher-student step
without it (paired over interleaved rounds), costs less than pairwise (ReCo-style) pixel contrast on the same
sampled pixels, and grows linearly in the pixel count where pairwise grows quadratically.

    .venv/bin/python benchmarks/bench_farcluss.py [--preset default] [--repeats N] [--pixels 256 1024 4096]
                                                  [--breakdown] [--device cuda]

The measurements come from ``labkit.studies.farcluss.measure_costs`` and the verdict from the study's
cost claim through the kit's judge, exactly as the notebook computes them (same preset data, ``threads``
and ``cost_repeats``, the contrast's extra taken within each measuring round against the same step without
it). ``--breakdown`` times the parts of the prototype contrast on one captured step.

Memory on the CPU is the activations saved for backward; on CUDA (``--device cuda``) also the allocator peak.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import labkit
from labkit.core.claims import judge
from labkit.methods import semisup as ss
from labkit.studies import farcluss as study


def _median_us(fn, repeats: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def contrast_breakdown(cfg, data) -> pd.DataFrame:
    """Microseconds of each part of the prototype contrast, on the arguments of one real step."""
    b = cfg.batch_size
    xl = torch.from_numpy(data.train.images[:b])
    yl = torch.from_numpy(data.train.masks[:b]).long()
    xu = torch.from_numpy(data.train.images[b : 2 * b])
    torch.manual_seed(0)
    trainer = ss.TeacherStudentTrainer(
        study.build_model(study.model_params(cfg, data)), data.num_classes, study.arm_config(cfg, "farcluss")
    )
    captured = {}
    contrast = trainer._contrast

    def capture(*args):
        captured["args"] = args
        return contrast(*args)

    trainer._contrast = capture
    for _ in range(3):
        trainer.step(xl, yl, xu)
    trainer._contrast = contrast
    emb, yl_aug, t_emb, probs, targets, weights, n_l = captured["args"][:7]
    emb = emb.detach()
    size, dim = emb.shape[-2:], emb.shape[1]
    with torch.no_grad():
        lab_l, lab_u, w_small, t_arg = trainer._contrast_labels(size, yl_aug, probs, targets, weights)
    flat = emb.permute(0, 2, 3, 1).reshape(-1, dim)
    labels = torch.cat([lab_l.reshape(-1), lab_u.reshape(-1)])
    pix_w = torch.cat([w_small.new_ones(lab_l.numel()), w_small.reshape(-1)])
    saved = trainer.prototypes.clone(), trainer.prototype_ready.clone()

    def update():
        trainer._update_prototypes_flat(
            (flat[: lab_l.numel()], lab_l.reshape(-1)), (t_emb.permute(0, 2, 3, 1).reshape(-1, dim), t_arg.reshape(-1))
        )
        trainer.prototypes, trainer.prototype_ready = saved

    def loss():
        e = flat.clone().requires_grad_(True)
        ss.prototype_contrast(e, labels.clamp_min(0), pix_w, trainer.prototypes, cfg.temperature).backward()

    decoded = torch.randn(2 * b, trainer.student.projection[0].in_channels, *size, requires_grad=True)

    def projection():
        ss.l2_normalize_channels(trainer.student.projection(decoded)).sum().backward()

    def whole():
        e = emb.clone().requires_grad_(True)
        trainer._contrast(e, yl_aug, t_emb, probs, targets, weights, n_l).backward()
        trainer.prototypes, trainer.prototype_ready = saved

    gen = torch.Generator().manual_seed(0)
    parts = {
        "labels at the embedding stride (pooling, teacher certainty)": lambda: trainer._contrast_labels(
            size, yl_aug, probs, targets, weights
        ),
        "prototype EMA update (labelled + teacher pixels)": update,
        "pixel sampling": lambda: ss.sample_pixels(labels, pix_w, cfg.contrast_pixels, gen),
        "InfoNCE loss vs prototypes, forward + backward": loss,
        "projection head (1x1 conv + L2 norm), forward + backward": projection,
        "whole contrast term (without the projection head), forward + backward": whole,
    }
    rows = [{"part": name, "us": _median_us(fn)} for name, fn in parts.items()]
    return pd.DataFrame(rows).round(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=["smoke", "default", "paper"])
    parser.add_argument(
        "--repeats", type=int, default=None, help="measuring rounds (default: the preset's cost_repeats)"
    )
    parser.add_argument(
        "--pixels",
        type=int,
        nargs="+",
        default=None,
        help="pixel counts of the contrast-only table (default: the notebook's)",
    )
    parser.add_argument("--breakdown", action="store_true", help="time the parts of the prototype contrast")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    overrides = {}
    if args.preset == "paper":
        # the step's cost structure at 128 px on simulated scenes (no VOC copy needed), a small pool
        overrides = {
            "n_train_images": 32,
            "n_val_images": 4,
            "image_size": 128,
            "data_source": "simulated",
            "splits": None,
            "encoder_weights": "random",
        }
    cfg = labkit.configure("farcluss", args.preset, overrides)
    data = study.data(cfg)
    pixels = tuple(args.pixels) if args.pixels else study.CONTRAST_SCALING_PIXELS
    costs = study.measure_costs(cfg, data, repeats=args.repeats, device=args.device, pixels=pixels)
    print(
        f"# FARCLUSS cost per iteration: {cfg.encoder} {cfg.arch}, batch {cfg.batch_size} labelled + "
        f"{cfg.batch_size} unlabeled, {cfg.image_size} px, {torch.get_num_threads()} thread(s), {args.device}\n"
    )
    print(costs.table.to_markdown(index=False))
    print("\n# per-round extra time of each contrast over the step without it (median, % of that step)\n")
    print(costs.rounds.groupby("contrast")[["extra_ms", "extra_pct"]].median().round(2).to_markdown())
    if args.breakdown and args.device == "cpu":
        print("\n# where the prototype contrast's time goes (median microseconds, one captured step)\n")
        print(contrast_breakdown(cfg, data).to_markdown(index=False))
    print("\n# contrast losses alone (forward + backward), same pixels\n")
    print(costs.scaling_table.to_markdown(index=False))
    print("\n# log-log slopes in the pixel count (1 = linear, 2 = quadratic)\n")
    print(costs.exponent_table.to_markdown(index=False))
    tables = costs.claim_tables()
    for claim in study.declare_claims(cfg):
        if claim.id.startswith("prototype_contrast"):
            verdict = judge(claim, tables)
            print(f"\n{claim.id}: {verdict['status']}: {verdict['reason']}")


if __name__ == "__main__":
    main()
