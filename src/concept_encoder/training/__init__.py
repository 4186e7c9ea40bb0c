"""Training: the Trainer built from an experiment config, callbacks, run folders and resume."""

from .pretrain import prepare, pretrain

__all__ = ["prepare", "pretrain"]
