"""Layer 3: training, inference, probing, self-supervised and semi-supervised methods, baselines."""
