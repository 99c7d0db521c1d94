"""Layer 1: simulators, loaders for real formats, label noise, datasets."""
