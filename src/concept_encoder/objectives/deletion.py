"""TSDAE-style deletion: the encoder sees a random 40% of the tokens, the decoder rebuilds all of them.

This is the research plan's TSDAE: a *non-autoregressive* reconstruction in which one position query per
token (decoder_type "position_only") reads the concepts of the damaged text. The TSDAE paper (Wang et
al., 2021) decodes autoregressively instead; that decoder is not offered yet.

Deleted tokens are hidden by attention_mask = 0 rather than removed, so the surviving tokens keep their
original absolute positions (the encoder knows where the gaps are, as in the original research code).
Their ids are also replaced by [MASK], so nothing downstream can copy them. Labels are the original ids
at every real position (specials included) and -100 at pads: pads are never visible and never counted.
Randomness is counter-based, as in `masking.py`: a function of (seed, epoch, block index, position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .masking import IGNORE_INDEX, counter_uniform, pad_blocks

STREAM_DELETE = 11


@dataclass
class DeletionCollator:
    pad_token_id: int
    mask_token_id: int
    special_token_ids: list[int]
    rate: float = 0.6
    seed: int = 0
    epoch: int = 0
    pad_to_multiple_of: int = 8
    _special: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"deletion rate must be in (0, 1), got {self.rate}")
        self._special = np.array(sorted(set(self.special_token_ids) | {self.pad_token_id}), dtype=np.int64)

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings) -> "DeletionCollator":
        return cls(pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                   special_token_ids=list(tokenizer.all_special_ids), **settings)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, real, index = pad_blocks(features, self.pad_token_id, self.pad_to_multiple_of)
        deletable = real & ~np.isin(ids, self._special)
        u = counter_uniform(self.seed, self.epoch, STREAM_DELETE, index, ids.shape[1])
        deleted = deletable & (u < self.rate)
        # every row keeps at least one of its deletable tokens: the one with the largest draw
        emptied = deletable.any(axis=1) & ~(deletable & ~deleted).any(axis=1)
        keep = np.where(deletable, u, -1.0).argmax(axis=1)
        deleted[np.flatnonzero(emptied), keep[emptied]] = False
        return {
            "input_ids": torch.from_numpy(np.where(deleted, self.mask_token_id, ids)),
            "attention_mask": torch.from_numpy((real & ~deleted).astype(np.int64)),
            "labels": torch.from_numpy(np.where(real, ids, IGNORE_INDEX)),
        }
