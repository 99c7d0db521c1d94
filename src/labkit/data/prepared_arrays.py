"""Content-addressed array files: a study's prepared arrays written once under their digest, read by grid tasks.

The main process writes the arrays a grid's tasks share (images, masks, a model's state) to one file named by a
digest of their content and passes the path and the digest to the grid: the digest is the grid's input (its tasks'
fingerprints and random draws follow the content, never the path), and a second run with the same arrays writes
nothing. A task reads the file back with :func:`load_prepared_arrays`, which keeps the last files read in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np


def array_digest(*arrays: np.ndarray) -> str:
    """Digest of the arrays' shapes, dtypes and bytes, in the order given (24 hex digits)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:24]


def write_prepared_arrays(
    folder: str | Path, arrays: Mapping[str, np.ndarray], digest_of: Sequence[str] | None = None
) -> tuple[str, str]:
    """``arrays`` as ``<folder>/<digest>.npz`` unless that file exists; returns its path and the digest.

    ``digest_of``: the names of the arrays the digest covers, in that order (default: every array, in the mapping's
    order); the others are stored alongside (labels of what the digest already fixes, such as class names)."""
    names = list(arrays) if digest_of is None else list(digest_of)
    digest = array_digest(*(arrays[n] for n in names))
    path = Path(folder) / f"{digest}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return str(path), digest


@lru_cache(maxsize=2)
def load_prepared_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of a file :func:`write_prepared_arrays` wrote (the last two files read are kept in memory)."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def write_state_file(folder: str | Path, state: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """A model's state (name -> array) as ``<folder>/<digest>.safetensors`` unless that file exists; returns its path
    and the digest of the arrays in name order (the content's name: what a task that loads it is keyed by)."""
    from safetensors.numpy import save_file

    digest = array_digest(*(state[k] for k in sorted(state)))
    path = Path(folder) / f"{digest}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return str(path), digest
