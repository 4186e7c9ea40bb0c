"""Dropout with a cheap random mask on CPUs.

PyTorch's CPU dropout draws one Bernoulli sample per element in a serial Mersenne-Twister loop (it uses
MKL only on Intel CPUs): on the project's AMD machine that is ~45 ms per 4M elements, and the L6 training
step with dropout 0.1 draws ~65M of them. Here one 64-bit draw gives four 16-bit uniforms, which are
compared with the drop threshold in parallel: 4× fewer serial draws and a 1-byte mask kept for backward.

The keep probability is 1 − round(p·65536)/65536 (within 1e-5 of the configured 1 − p) and kept values
are scaled by its exact inverse, so the output's expectation equals the input. On other devices the native
(fused) dropout runs, and so does torch.compile, which generates its own parallel dropout masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # a 16-bit uniform has 65536 values


def _native(x: torch.Tensor, p: float) -> bool:
    """Use PyTorch's dropout: off the CPU, under torch.compile, or for p within 2^-17 of 1 (nothing kept)."""
    return x.device.type != "cpu" or torch.compiler.is_compiling() or round(p * _LEVELS) >= _LEVELS


def keep_mask(shape: torch.Size, p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """(bool mask of `shape`, True = keep; its exact keep probability)."""
    numel = torch.Size(shape).numel()
    dropped_levels = round(p * _LEVELS)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    uniforms = words.view(torch.int16)[:numel]  # uniform over [-32768, 32767]
    mask = uniforms >= dropped_levels - _LEVELS // 2
    return mask.view(shape), 1.0 - dropped_levels / _LEVELS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 − p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if _native(x, p):
        return F.dropout(x, p, training=True)
    mask, keep = keep_mask(x.shape, p, x.device)
    return torch.where(mask, x * (1.0 / keep), 0.0)


def dropout_matmul(weights: torch.Tensor, values: torch.Tensor, p: float) -> torch.Tensor:
    """dropout(weights) @ values, the 1 / (1 − p) scale applied to the (smaller) product: attention
    probabilities [.., Lq, Lk] times values [.., Lk, d] saves two passes over the Lq x Lk maps."""
    if p == 0.0 or _native(weights, p):
        return dropout(weights, p) @ values
    mask, keep = keep_mask(weights.shape, p, weights.device)
    return (torch.where(mask, weights, 0.0) @ values) * (1.0 / keep)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same constructor, no parameters) with the cheap CPU mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
