"""Extract stage: one module per source kind, each yielding canonical raw frames (no cleaning)."""
