"""Progress bars: a widget in JupyterLab, a bar in a terminal, and nothing line by line in headless runs.

``labkit reproduce`` sets ``LABKIT_HEADLESS=1`` for its kernels, so papermill output and HTML exports carry one
summary line per grid (see :mod:`labkit.core.grid`) instead of hundreds of stderr updates from inner loops.
"""

from __future__ import annotations

import os


def headless() -> bool:
    return bool(os.environ.get("LABKIT_HEADLESS"))


def bar_enabled(progress: bool = True) -> bool:
    """Whether an inner loop (epochs, steps) should draw a live bar."""
    return bool(progress) and not headless()
