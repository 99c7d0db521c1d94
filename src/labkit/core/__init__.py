"""Layer 0: errors, parameters and presets, seeding, metrics, checkpoints, atomic files, paths."""
