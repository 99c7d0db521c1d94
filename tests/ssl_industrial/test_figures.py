"""Study 3's figures: what a reader sees on their axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from labkit.studies.base import Runs  # noqa: E402
from labkit.studies.ssl_industrial.figures import label_efficiency_figure  # noqa: E402


def _runs(counts):
    rng = np.random.default_rng(0)
    rows = [
        {
            "init": init,
            "protocol": "-" if init == "all_good" else "full",
            "n_labels": n,
            "seed": s,
            "defect_ap": rng.uniform(),
            "defect_f1": rng.uniform(),
        }
        for init in ("scratch", "mae", "all_good")
        for n in counts
        for s in range(3)
    ]
    return Runs(tables={"runs": pd.DataFrame(rows)})


def test_label_efficiency_ticks_are_the_label_counts_as_plain_integers_without_minor_labels():
    counts = [4, 16, 64]
    fig = label_efficiency_figure(_runs(counts))
    fig.canvas.draw()
    for ax in fig.axes:
        major = [t.get_text() for t in ax.get_xticklabels() if t.get_visible()]
        assert major == ["4", "16", "64"]
        assert list(ax.get_xticks()) == counts
        minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        assert minor == [], minor  # a log axis labels 6x10^1 on top of 64 unless its minor labels are off
    plt.close(fig)
