"""Objectives: collators that turn token blocks into model inputs and labels."""

from .masking import MaskingCollator, counter_uniform

__all__ = ["MaskingCollator", "counter_uniform"]
