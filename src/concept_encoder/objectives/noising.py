"""Masked-diffusion noising (MDLM): per block a noise level t ~ U(t_min, 1); each real, non-special token
is replaced by [MASK] with probability t. Labels are the original ids at masked positions only; pads are
never masked, never visible (attention 0) and never counted. Counter-based randomness as in `masking.py`,
so validation noise is the same at every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .masking import IGNORE_INDEX, CorruptionCollator

STREAM_LEVEL, STREAM_NOISE = 21, 22


@dataclass(kw_only=True)
class DiffusionCollator(CorruptionCollator):
    t_min: float = 0.3

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {self.t_min}")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, real, noisable, index = self.pad(features)
        t = self.t_min + (1 - self.t_min) * self.uniform(STREAM_LEVEL, index, 1)  # [B, 1]
        masked = noisable & (self.uniform(STREAM_NOISE, index, ids.shape[1]) < t)
        return {
            "input_ids": torch.from_numpy(np.where(masked, self.mask_token_id, ids)),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
            "labels": torch.from_numpy(np.where(masked, ids, IGNORE_INDEX)),
            "noise_level": torch.from_numpy(t[:, 0].astype(np.float32)),
        }
