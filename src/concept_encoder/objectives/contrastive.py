"""Unsupervised SimCSE on pooled concepts (Gao et al., 2021).

The same input is encoded twice with different dropout masks; each text's two pooled vectors are a
positive pair, the other texts of the batch are negatives: InfoNCE over cosine similarities / temperature.
Dropout is the only augmentation, so the model needs hidden or attention dropout > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_concepts(concepts: torch.Tensor) -> torch.Tensor:
    """[B, C, H] -> [B, H]: the mean concept."""
    return concepts.mean(dim=1)


def simcse_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE between two views [B, H]: row i of `first` must pick row i of `second` among all B rows."""
    similarity = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).T / temperature  # [B, B]
    return F.cross_entropy(similarity, torch.arange(first.shape[0], device=first.device))
