"""One call makes a run repeatable on the CPU."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True):
    """Seed Python, NumPy and torch; return a ``torch.Generator`` for data loaders."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic variant; the CPU ones all do.
        torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def regime_seeds(cfg) -> list[int]:
    """The seeds of a study's regime runs: ``seeds`` first, then the extra ``regime_seeds``, each once."""
    extra = (cfg.get("regime_seeds") if hasattr(cfg, "get") else getattr(cfg, "regime_seeds", None)) or []
    return list(dict.fromkeys([*cfg.seeds, *extra]))
