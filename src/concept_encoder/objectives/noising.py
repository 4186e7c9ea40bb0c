"""Masked-diffusion noising (MDLM): per block a noise level t ~ U(t_min, 1); each real, non-special token
is replaced by [MASK] with probability t. Labels are the original ids at masked positions only; pads are
never masked, never visible (attention 0) and never counted. Counter-based randomness as in `masking.py`,
so validation noise is the same at every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .masking import IGNORE_INDEX, counter_uniform, pad_blocks

STREAM_LEVEL, STREAM_NOISE = 21, 22


@dataclass
class DiffusionCollator:
    pad_token_id: int
    mask_token_id: int
    special_token_ids: list[int]
    t_min: float = 0.3
    seed: int = 0
    epoch: int = 0
    pad_to_multiple_of: int = 8
    _special: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {self.t_min}")
        self._special = np.array(sorted(set(self.special_token_ids) | {self.pad_token_id}), dtype=np.int64)

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings) -> "DiffusionCollator":
        return cls(pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                   special_token_ids=list(tokenizer.all_special_ids), **settings)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, real, index = pad_blocks(features, self.pad_token_id, self.pad_to_multiple_of)
        t = self.t_min + (1 - self.t_min) * counter_uniform(self.seed, self.epoch, STREAM_LEVEL, index, 1)  # [B, 1]
        noisable = real & ~np.isin(ids, self._special)
        masked = noisable & (counter_uniform(self.seed, self.epoch, STREAM_NOISE, index, ids.shape[1]) < t)
        return {
            "input_ids": torch.from_numpy(np.where(masked, self.mask_token_id, ids)),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
            "labels": torch.from_numpy(np.where(masked, ids, IGNORE_INDEX)),
            "noise_level": torch.from_numpy(t[:, 0].astype(np.float32)),
        }
