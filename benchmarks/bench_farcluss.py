"""Time and memory per training iteration of each FARCLUSS-study method on the same batch.

Targets (issue 7): the prototype contrast adds at most 10% of a supervised step, and costs far less
than pairwise (ReCo-style) pixel contrast on the same sampled pixels.

    .venv/bin/python benchmarks/bench_farcluss.py [--preset default] [--repeats 10] [--pixels 256 1024 4096]

Memory on the CPU is the activations saved for backward; on CUDA (``--device cuda``) the allocator peak.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

import labkit
from labkit.methods import semisup as ss
from labkit.studies import farcluss as study


def cuda_costs(cfg, data, repeats: int) -> pd.DataFrame:
    """Allocator peak and CUDA-synchronised time per step (only with a GPU)."""
    from dataclasses import replace

    b = cfg.batch_size
    xl = torch.from_numpy(data.train.images[:b]).cuda()
    yl = torch.from_numpy(data.train.masks[:b]).long().cuda()
    xu = torch.from_numpy(data.train.images[b:2 * b]).cuda()
    base = replace(ss.method_config("farcluss"), contrast_pixels=10**9)
    configs = {"supervised": ss.method_config("supervised"), "hard threshold": ss.method_config("fixmatch"),
               "FARCLUSS without contrast": replace(base, prototype=False), "FARCLUSS (prototype)": base,
               "FARCLUSS pairwise": replace(base, prototype=False, pairwise=True)}
    rows = []
    for name, config in configs.items():
        trainer = ss.TeacherStudentTrainer(study._build_model(cfg, data).cuda(), data.num_classes, config)
        for _ in range(2):
            trainer.step(xl, yl, xu)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(repeats):
            trainer.step(xl, yl, xu)
        torch.cuda.synchronize()
        rows.append({"method": name, "ms_per_iteration": 1000 * (time.perf_counter() - t0) / repeats,
                     "peak_mb": torch.cuda.max_memory_allocated() / 2**20})
    return pd.DataFrame(rows).round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=["smoke", "default", "paper"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pixels", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    overrides = {"n_train_images": 32, "n_val_images": 4}
    if args.preset == "paper":
        overrides["image_size"] = 128  # the step's cost structure, not the paper's 321 px (CPU-friendly)
    cfg = labkit.configure("farcluss", args.preset, overrides)
    data = study.load_data(cfg)
    print(f"# FARCLUSS cost per iteration: {cfg.encoder} DeepLabV3+, batch {cfg.batch_size} labelled + "
          f"{cfg.batch_size} unlabeled, {cfg.image_size} px, {torch.get_num_threads()} thread(s)\n")
    if args.device == "cuda":
        print(cuda_costs(cfg, data, args.repeats).to_markdown(index=False))
    else:
        costs = study.cost_table(cfg, data, repeats=args.repeats)
        print(costs.to_markdown(index=False))
        c = costs.set_index("method")
        sup = c.loc["supervised", "ms_per_iteration"]
        without = c.loc["FARCLUSS without contrast", "ms_per_iteration"]
        proto = c.loc["FARCLUSS (prototype contrast)", "ms_per_iteration"] - without
        pair = c.loc["FARCLUSS with pairwise contrast", "ms_per_iteration"] - without
        print(f"\nprototype contrast adds {proto:.1f} ms = {100 * proto / sup:.1f}% of a supervised step "
              f"(target <= 10%); pairwise adds {pair:.1f} ms = {100 * pair / sup:.1f}%")
    print("\n# contrast losses alone (forward + backward), same pixels\n")
    print(study.contrast_scaling_table(cfg, pixels=tuple(args.pixels)).to_markdown(index=False))


if __name__ == "__main__":
    main()
