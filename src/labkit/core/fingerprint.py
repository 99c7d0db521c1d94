"""What a study's result depends on, hashed: its notebook's code, its parameters and labkit's source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from labkit.core.paths import package_dir


def notebook_source_digest(notebook: str | Path) -> str:
    """Digest of the notebook's cell sources only (outputs and metadata do not change a result)."""
    nb = json.loads(Path(notebook).read_text())
    digest = hashlib.sha256()
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        digest.update(cell.get("cell_type", "").encode())
        digest.update(("".join(source) if isinstance(source, list) else source).encode())
    return digest.hexdigest()


def package_digest(root: Path | None = None) -> str:
    """Digest of every ``.py`` and ``.yaml`` file of the labkit package (conservative: any change counts)."""
    root = root or package_dir()
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def study_fingerprint(notebook: str | Path, preset: str, values: dict) -> str:
    payload = json.dumps(
        {"preset": preset, "params": values, "notebook": notebook_source_digest(notebook), "labkit": package_digest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]
