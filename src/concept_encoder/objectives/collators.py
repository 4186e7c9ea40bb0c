"""The collator each pretraining objective uses: its batches are what the objective's loss reads."""

from __future__ import annotations

from .deletion import DeletionCollator
from .masking import MaskingCollator, PaddingCollator
from .noising import DiffusionCollator
from .prefix_suffix import PrefixSuffixCollator

TASKLESS = ("simcse", "distill", "teacher")  # objectives that decode nothing: unmasked batches, no labels


def build_collator(objective, tokenizer, seed: int, model_config):
    """The collator of an `ObjectiveConfig` (all take a seed: the evaluation one is fixed); `model_config`
    gives diffusion its t_min."""
    if objective.name == "diffusion":
        return DiffusionCollator.for_tokenizer(tokenizer, t_min=model_config.diffusion_t_min, seed=seed)
    if objective.name == "tsdae":
        return DeletionCollator.for_tokenizer(tokenizer, rate=objective.deletion_rate, seed=seed)
    if objective.name == "prefix_suffix":
        return PrefixSuffixCollator.for_tokenizer(
            tokenizer, seed=seed, share_min=objective.prefix_share_min, share_max=objective.prefix_share_max,
            boundary_window=objective.boundary_window, word_dropout=objective.decoder_word_dropout,
            min_side_tokens=objective.min_side_tokens)
    if objective.name in TASKLESS:
        return PaddingCollator.for_tokenizer(tokenizer)
    return MaskingCollator.for_tokenizer(
        tokenizer, seed=seed, objective=objective.name, rate=objective.rate, span_min=objective.span_min,
        span_max=objective.span_max, mask_token_fraction=objective.mask_token_fraction,
        random_token_fraction=objective.random_token_fraction,
    )
