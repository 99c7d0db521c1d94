"""Segmentation networks from segmentation-models-pytorch over timm encoders, with labkit's weight rules.

The encoder comes from smp's ``tu-<timm name>`` wrapper; its weights come from
:func:`labkit.models.backbones.create_backbone`, so offline and named-checkpoint rules are the same
for every study. The smp split (``encoder`` / ``decoder`` / ``segmentation_head``) is kept.
"""

from __future__ import annotations

from labkit.models.backbones import create_backbone, timm_name

ARCHITECTURES = ("unet", "deeplabv3", "deeplabv3plus", "fpn")


def create_segmenter(
    arch: str = "unet",
    encoder: str = "resnet18",
    weights: str = "random",
    in_channels: int = 3,
    num_classes: int = 2,
    encoder_depth: int = 5,
    weights_path=None,
    **kwargs,
):
    """An smp model whose encoder is timm ``encoder`` with weights ``random``, ``pretrained``,
    ``labkit:<name>`` (an encoder state dict saved by another study) or a checkpoint path.
    """
    import segmentation_models_pytorch as smp

    classes = {"unet": smp.Unet, "deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus, "fpn": smp.FPN}
    if arch not in classes:
        raise ValueError(f"unknown architecture '{arch}' (one of {', '.join(ARCHITECTURES)})")
    if arch == "unet" and "decoder_channels" not in kwargs:
        kwargs["decoder_channels"] = (256, 128, 64, 32, 16)[:encoder_depth]
    model = classes[arch](
        encoder_name=f"tu-{timm_name(encoder).split('.')[0]}",
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        encoder_depth=encoder_depth,
        **kwargs,
    )
    if weights == "random":
        return model
    if isinstance(weights, str) and weights.startswith("labkit:"):
        from labkit.models.registry import load_named_into

        load_named_into(model.encoder, weights.split(":", 1)[1])
        return model
    source = create_backbone(
        encoder, weights=weights, weights_path=weights_path, in_chans=in_channels, features_only=True
    )
    from labkit.core.checkpoints import load_state_into

    # smp's TimmUniversalEncoder keeps the timm features model under ``.model``.
    # Unexpected keys are fine (a truncated encoder has fewer stages); missing ones are not.
    result = load_state_into(model.encoder.model, source.state_dict(), source=f"{encoder} ({weights})", strict=False)
    if result["missing"] or result["shape_mismatch"]:
        from labkit.core.errors import CheckpointMismatchError

        raise CheckpointMismatchError(
            f"{encoder} ({weights}) does not fill the {arch} encoder: missing "
            f"{result['missing'][:8]}, shape mismatches {result['shape_mismatch'][:4]}"
        )
    return model
