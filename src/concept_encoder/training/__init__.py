"""Training: the Trainer built from an experiment config, callbacks, run folders and resume."""

from .pretrain import pretrain, prepare

__all__ = ["pretrain", "prepare"]
