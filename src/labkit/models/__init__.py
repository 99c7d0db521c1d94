"""Layer 2: backbones (timm), named labkit checkpoints, segmentation models, heads, LoRA."""
