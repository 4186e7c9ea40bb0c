"""Objectives: collators that turn token blocks into model inputs and labels, concept regularisers,
SimCSE, and the weighting that combines them into one loss."""

from .collators import TASKLESS, build_collator
from .composite import ObjectiveLoss
from .contrastive import pool_concepts, simcse_loss
from .deletion import DeletionCollator
from .masking import MaskingCollator, PaddingCollator, counter_uniform
from .noising import DiffusionCollator
from .regularisers import REGULARISERS, regulariser
from .weighting import LossWeighting

__all__ = [
    "REGULARISERS", "TASKLESS", "DeletionCollator", "DiffusionCollator", "LossWeighting", "MaskingCollator", "ObjectiveLoss", "PaddingCollator",
    "build_collator", "counter_uniform", "pool_concepts", "regulariser", "simcse_loss",
]
