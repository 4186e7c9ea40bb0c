"""Objectives: collators that turn token blocks into model inputs and labels, and concept regularisers."""

from .deletion import DeletionCollator
from .masking import MaskingCollator, counter_uniform
from .regularisers import REGULARISERS, regulariser

__all__ = ["REGULARISERS", "DeletionCollator", "MaskingCollator", "counter_uniform", "regulariser"]
