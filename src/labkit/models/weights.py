"""A backbone's weights, resolved once before a grid runs: whether they can be had, from which file, its digest
(part of the consuming tasks' fingerprint, so new weights rerun them) and, when they cannot, a short reason that
names the parameter to set. Every study resolves its weights parameters here; random weights are never
substituted for pretrained ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.core.errors import WeightsUnavailableError


@dataclass(frozen=True)
class ResolvedWeights:
    """``status`` is ``"ok"`` or ``"unavailable"`` (then ``reason`` says what to provide)."""

    parameter: str
    value: str
    status: str
    digest: str = ""
    file: str | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def unavailable_reason(parameter: str, backbone: str) -> str:
    """The short reason an arm is not evaluated for want of ``backbone``'s pretrained weights: what to set."""
    from labkit.models.backbones import timm_name

    full = timm_name(backbone)
    return (
        f"weights unavailable: pretrained {backbone} ({full}) is not on this machine. Set parameter '{parameter}' "
        f"to a .safetensors/.pth file, put {full}.safetensors in the folder named by LABKIT_WEIGHTS_DIR or in the "
        "Hugging Face cache, or go online; random weights are never substituted"
    )


def resolve_weights(parameter: str, value: str, backbone: str, fetch: bool = True) -> ResolvedWeights:
    """Resolve one weights parameter (``random``, ``pretrained``, ``labkit:<name>`` or a file) for ``backbone``.

    ``pretrained`` looks for a local file (LABKIT_WEIGHTS_DIR, the Hugging Face cache); with ``fetch`` and no
    local file, the hub is asked once, here, so that grid tasks only ever read a file."""
    from labkit.core.grid import file_digest

    value = str(value)
    if value == "random":
        return ResolvedWeights(parameter, value, "ok", digest="random", provenance={"source": "random init"})
    if value.startswith("labkit:"):
        from labkit.models.registry import declared_checkpoints, named_checkpoint_path

        name = value[len("labkit:") :]
        path = named_checkpoint_path(name)
        if not path.is_file():
            study = declared_checkpoints()[name]["study"]
            return ResolvedWeights(
                parameter,
                value,
                "unavailable",
                reason=f"weights unavailable: labkit checkpoint '{name}' has not been produced: run "
                f"`labkit reproduce {study}` first, or set parameter '{parameter}' to a weights file",
            )
        return ResolvedWeights(parameter, value, "ok", file_digest(path), str(path), provenance={"source": value})
    if value != "pretrained":
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            return ResolvedWeights(
                parameter, value, "unavailable", reason=f"parameter '{parameter}': no weights file {value}"
            )
        return ResolvedWeights(parameter, value, "ok", file_digest(path), str(path), provenance={"source": "file"})
    from labkit.models.backbones import create_backbone, resolve_pretrained_file

    file = resolve_pretrained_file(backbone)
    if file is None and fetch:
        try:
            create_backbone(backbone, weights="pretrained", num_classes=0)
        except WeightsUnavailableError:
            return ResolvedWeights(parameter, value, "unavailable", reason=unavailable_reason(parameter, backbone))
        file = resolve_pretrained_file(backbone)
    if file is None:
        return ResolvedWeights(parameter, value, "unavailable", reason=unavailable_reason(parameter, backbone))
    return ResolvedWeights(
        parameter, value, "ok", file_digest(file), str(file), provenance={"source": "pretrained", "backbone": backbone}
    )
