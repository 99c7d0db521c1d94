"""LoRA adapters (peft) on timm ViTs and ResNets, with rank, alpha and target modules as parameters."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

# Sensible target sets: names are the last component of a module's dotted name.
LORA_TARGETS = {
    "attention": ("qkv",),
    "attention+proj": ("qkv", "proj"),
    "all-linear": ("qkv", "proj", "fc1", "fc2"),  # the DINOv2 rocks paper: every linear layer of the ViT
    "resnet-convs": ("conv1", "conv2", "conv3"),  # 3x3/1x1 convolutions inside residual blocks
}


def lora_target_modules(model: nn.Module, targets: str | Iterable[str]) -> list[str]:
    """Full dotted names of the Linear/Conv2d modules of ``model`` whose last name component is
    in ``targets`` (a preset name from :data:`LORA_TARGETS` or a list of names). Classifier
    heads (``head``, ``fc``) and a ViT's patch embedding (``patch_embed.proj``, a Conv2d that
    shares the leaf name ``proj`` with the attention output projection) are never targeted."""
    names = LORA_TARGETS.get(targets, (targets,)) if isinstance(targets, str) else tuple(targets)
    found = []
    for full, module in model.named_modules():
        leaf = full.rsplit(".", 1)[-1]
        if leaf in names and isinstance(module, (nn.Linear, nn.Conv2d)) and not full.startswith(("head", "fc")):
            if full.count(".") == 0 and leaf == "conv1":  # a ResNet's stem is not an adapter target
                continue
            if "patch_embed" in full.split("."):  # the input projection is not a transformer linear layer
                continue
            found.append(full)
    if not found:
        raise ValueError(f"no Linear/Conv2d module named {sorted(names)} in {type(model).__name__}")
    return found


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16,
    targets: str | Iterable[str] = "attention",
    dropout: float = 0.0,
    modules_to_save: Iterable[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only the adapters (and ``modules_to_save``)
    are trainable. Returns the peft model, which forwards attribute access (e.g.
    ``forward_features``) to the wrapped timm model."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=lora_target_modules(model, targets),
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    return get_peft_model(model, config)
