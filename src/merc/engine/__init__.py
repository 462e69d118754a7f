"""Training, metrics, checkpoints and statistics (import submodules directly; Lightning is heavy)."""
