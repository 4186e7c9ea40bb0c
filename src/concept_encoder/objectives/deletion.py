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

from dataclasses import dataclass

import numpy as np
import torch

from .masking import IGNORE_INDEX, CorruptionCollator

STREAM_DELETE = 11


@dataclass(kw_only=True)
class DeletionCollator(CorruptionCollator):
    rate: float = 0.6

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"deletion rate must be in (0, 1), got {self.rate}")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, real, deletable, index = self.pad(features)
        u = self.uniform(STREAM_DELETE, index, ids.shape[1])
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
