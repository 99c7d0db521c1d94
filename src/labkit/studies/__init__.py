"""Layer 4: one small module per study; each returns tables, numbers and figures for its notebook."""
