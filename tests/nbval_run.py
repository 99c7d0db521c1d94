"""Run one study notebook under nbval, as CI does, with papermill parameters injected: the one place the
notebook tests (tests/test_notebooks.py and each study's fixture-tree test) start nbval."""

import os
import subprocess
import sys
from pathlib import Path

from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[1]


def run_under_nbval(
    notebook: str | Path, params: dict, tmp_path: Path, what: str, env: dict | None = None, timeout: int = 900
) -> None:
    """Parameterize ``notebook`` (a path, or a name under notebooks/) with ``params``, run it under
    ``pytest --nbval-lax`` in ``tmp_path`` with ``env`` added to the environment, and fail naming ``what``."""
    path = Path(notebook) if Path(notebook).is_absolute() else ROOT / "notebooks" / notebook
    target = tmp_path / path.name
    write_ipynb(parameterize_notebook(load_notebook_node(str(path)), params), str(target))
    full_env = {**os.environ, "LABKIT_NOTEBOOKS": str(ROOT / "notebooks"), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: drop the variable
    # the plugin that puts nbval's kernels on Unix sockets lives beside this file
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), full_env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "nbval_unix_sockets"]
    proc = subprocess.run(
        [*cmd, "--rootdir", str(tmp_path), str(target)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"nbval failed {what}:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
