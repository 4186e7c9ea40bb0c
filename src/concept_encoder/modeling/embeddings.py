"""Token and concept embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration import ConceptEncoderConfig
from .dropout import Dropout


def sinusoidal_table(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed sin/cos table [length, dim] (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.to(dtype)


def default_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """[B, N] positions 0..N-1. Padding is expected on the right, so real tokens keep their positions."""
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


class TokenEmbeddings(nn.Module):
    """ids [B, N] -> tokens [B, N, Dt]: word (+ learned absolute position) embedding, LayerNorm, dropout."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.token_dim, padding_idx=config.pad_token_id)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.token_dim)
            if config.position_embedding_type == "absolute"
            else None  # rotary: positions enter inside attention
        )
        self.max_positions = config.max_position_embeddings
        self.norm = nn.LayerNorm(config.token_dim, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            if input_ids.shape[1] > self.max_positions:  # a shape check: no device sync
                raise ValueError(
                    f"Input has {input_ids.shape[1]} tokens but max_position_embeddings is "
                    f"{self.max_positions}; truncate the input or use position_embedding_type='rotary'."
                )
            x = x + self.position_embeddings(position_ids)
        return self.dropout(self.norm(x))


class ConceptEmbeddings(nn.Module):
    """The C learned concept vectors (+ optional concept positions), broadcast over the batch: [B, C, H]."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        C, H = config.num_concepts, config.hidden_size
        self.position_type = config.concept_position_type
        self.weight = nn.Parameter(torch.empty(C, H))
        self.position = nn.Parameter(torch.empty(C, H)) if self.position_type == "learned" else None

    def forward(self, batch_size: int) -> torch.Tensor:
        concepts = self.weight
        if self.position is not None:
            concepts = concepts + self.position
        elif self.position_type == "sinusoidal":
            concepts = concepts + sinusoidal_table(*self.weight.shape, self.weight.device, self.weight.dtype)
        return concepts.unsqueeze(0).expand(batch_size, -1, -1)
