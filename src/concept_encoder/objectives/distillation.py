"""Distillation into the concepts: the mean concept regresses the mean of the token states it reads.

With a pretrained, frozen backbone (all-MiniLM-L6-v2) the mean of its token states is that model's own
sentence embedding, so this asks the C-concept bottleneck to keep what the uncompressed encoder says about
the whole text. The target is detached: the backbone is the teacher, never pulled towards the student.
Needs hidden_size == the token width (no projection between the two spaces to hide a mismatch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contrastive import pool_concepts


def mean_tokens(tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, N, D] -> [B, D]: the mean over real tokens (attention_mask 1)."""
    if attention_mask is None:
        return tokens.mean(dim=1)
    weights = attention_mask.to(tokens.dtype)[..., None]  # [B, N, 1]
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def distillation_loss(concepts: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of 1 - cos(mean concept [B, H], mean token [B, H]) in float32."""
    student = pool_concepts(concepts).float()
    teacher = mean_tokens(tokens.detach().float(), attention_mask)
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
