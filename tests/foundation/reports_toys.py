"""A toy published study folder (manifest, metrics, judge-format claims, a figure, a table, an executed notebook)."""

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
from PIL import Image

from labkit.core.claims import Claim, Compare, Precondition, judge

CODE_MARKER = "toy_code_marker = 41 + 1"
STDERR_TEXT = "UserWarning: toy warning from a library\n"


def toy_verdicts(seed_gain: float = 0.05) -> list[dict]:
    """Five verdicts from the kit's judge: held, did not hold, inconclusive, and two not evaluated with the same
    reason."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        noise = rng.normal(0, 0.005)
        rows += [
            {"arm": "ours", "fraction": 0.0625, "seed": seed, "miou": 0.50 + seed_gain + noise},
            {"arm": "base", "fraction": 0.0625, "seed": seed, "miou": 0.50},
            {"arm": "base", "fraction": 1.0, "seed": seed, "miou": 0.60 + noise},
            {"arm": "noisy", "fraction": 0.0625, "seed": seed, "miou": 0.51 + 0.1 * (-1) ** seed},
        ]
    runs = pd.DataFrame(rows)
    few = {"arm": "base", "fraction": 0.0625}
    limited = Precondition.label_limited("miou", full={"arm": "base", "fraction": 1.0}, few=few, margin=0.02)
    held = Claim(
        "ours_beats_base",
        "Ours beats the baseline at 1/16 labels",
        compare=[Compare("miou", a={"arm": "ours", "fraction": 0.0625}, b=few, effect=0.02, effect_source="toy")],
        preconditions=[limited],
    )
    flipped = Claim(
        "base_beats_ours",
        "The baseline beats ours (a claim that cannot hold here)",
        compare=[Compare("miou", a=few, b={"arm": "ours", "fraction": 0.0625}, effect=0.02, effect_source="toy")],
    )
    undecided = Claim(
        "noisy_beats_base",
        "A noisy arm beats the baseline (the seeds cannot tell)",
        compare=[Compare("miou", a={"arm": "noisy", "fraction": 0.0625}, b=few, effect=0.02, effect_source="toy")],
    )
    missing = "weights unavailable: put vit_small_patch14_dinov2.lvd142m.safetensors in LABKIT_WEIGHTS_DIR"
    out = [judge(held, runs), judge(flipped, runs), judge(undecided, runs)]
    out += [
        judge(Claim(f"needs_weights_{i}", f"Pretrained claim {i}", compare=[], unavailable=missing), runs)
        for i in (1, 2)
    ]
    return out


def write_png(path: Path, colour=(200, 30, 30)) -> None:
    Image.new("RGB", (8, 6), colour).save(path)


def executed_notebook(folder: Path, name: str = "01_alpha.ipynb") -> Path:
    """An executed notebook as papermill leaves it: code, stderr, a widget view, paths echoed, a figure."""
    png = (folder / "line.png").read_bytes() if (folder / "line.png").exists() else b""
    import base64

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# Toy study\n\nThe toy's **prose** explains the figure."))
    params = nbformat.v4.new_code_cell('preset = "default"\nseeds = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells.append(params)
    code = nbformat.v4.new_code_cell(CODE_MARKER + "\nprint(report.path)")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=STDERR_TEXT),
        nbformat.v4.new_output("stream", name="stdout", text=f"grid toy: 4 of 4 tasks done, files in {folder}/x.csv\n"),
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "  0%|          | 0/4 [00:00<?, ?task/s]",
            },
        ),
        nbformat.v4.new_output(
            "display_data",
            data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure size 640x480 with 1 Axes>"},
        ),
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": f"PosixPath('{folder}/line.png')"}, execution_count=3
        ),
    ]
    nb.cells.append(code)
    table = nbformat.v4.new_code_cell("report.table('numbers', df)")
    table.outputs = [
        nbformat.v4.new_output(
            "execute_result",
            execution_count=4,
            data={
                "text/html": "<table><tr><th>arm</th><th>miou</th></tr><tr><td>ours</td><td>0.550</td></tr></table>",
                "text/plain": "arm miou",
            },
        )
    ]
    nb.cells.append(table)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {"input_path": "/somewhere/notebooks/" + name, "output_path": str(folder / name)}
    path = folder / name
    nbformat.write(nb, path)
    return path


def toy_report(
    root: Path,
    study: str = "alpha",
    headline: float | None = 0.0512,
    figures=("line", "bars"),
    main_figure: str | None = None,
    verdicts: list[dict] | None = None,
) -> Path:
    folder = root / study
    folder.mkdir(parents=True)
    for i, name in enumerate(figures):
        write_png(folder / f"{name}.png", (50 * i, 100, 150))
    pd.DataFrame({"arm": ["ours"], "miou": [0.55]}).to_markdown(folder / "numbers.md", index=False)
    manifest = {
        "study": study,
        "title": f"Toy study {study}",
        "preset": "default",
        "seeds": [0, 1, 2, 3, 4],
        "params": {"seeds": [0, 1, 2, 3, 4], "n_steps": 10, "data_source": "geotiff", "data_root": str(root / "tiles")},
        "started_at": "2026-11-30T08:00:00+00:00",
        "wall_seconds": 120.0,
        "runner_wall_seconds": 126.0,
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "device": {"cpu_count": 2, "processor": "x86_64", "cuda": False},
        "figures": list(figures),
        "tables": ["numbers"],
        "headline_table": "numbers",
        "headline_metric": "toy_gain_at_fewest",
        "status": "ok",
    }
    if main_figure:
        manifest["main_figure"] = main_figure
    (folder / "manifest.json").write_text(json.dumps(manifest))
    metrics = {"toy_gain_at_fewest": headline} if headline is not None else {}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "claims.json").write_text(json.dumps(toy_verdicts() if verdicts is None else verdicts))
    return folder
