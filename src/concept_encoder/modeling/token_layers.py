"""Contextualised tokens before compression: sliding-window self-attention blocks over the tokens.

Without them (stacked layers) the concepts read token embeddings that never see their neighbours; the upstream
line found that this matters (`upstream_findings.md`). `model.token_layers: k` puts k pre-LN transformer blocks
over the tokens before the first concept layer, each token attending to the tokens at most `token_window` (w)
positions away. Cost stays linear in N: the sequence is cut into chunks of w, and each chunk's queries read only
their own chunk and its two neighbours (3w keys), masked to the band |i - j| <= w.

Shapes: B batch, h heads, N tokens, d head dim, n = ceil(N / w) chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import apply_rotary, attend, merge_heads, split_heads
from .configuration import ConceptEncoderConfig
from .dropout import Dropout
from .layers import FeedForward, Rotary


def with_neighbours(x: torch.Tensor, chunk_dim: int) -> torch.Tensor:
    """Chunks along `chunk_dim` (their items along the next dim) -> each chunk with its previous and next chunk
    beside it: [..., n, w, ...] -> [..., n, 3w, ...], zeros (False) past either end."""
    n = x.shape[chunk_dim]
    edge = torch.zeros_like(x.narrow(chunk_dim, 0, 1))
    padded = torch.cat([edge, x, edge], dim=chunk_dim)
    return torch.cat([padded.narrow(chunk_dim, i, n) for i in range(3)], dim=chunk_dim + 1)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             real: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Attention of q [B, h, N, d] to k, v restricted to |i - j| <= window and to real keys (`real` bool [B, N]);
    every query also sees itself, so no row is empty. Memory O(N * window), never [N, N]."""
    b, h, length, d = q.shape
    w = window
    pad = (-length) % w
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = (length + pad) // w
    real = torch.ones(b, length, dtype=torch.bool, device=q.device) if real is None else real
    real = F.pad(real, (0, pad), value=False).view(b, n, w)
    q, k, v = (t.view(b, h, n, w, d) for t in (q, k, v))
    keys, values = with_neighbours(k, 2), with_neighbours(v, 2)  # [B, h, n, 3w, d]
    # query a of chunk c is position c*w + a; key slot s of its neighbourhood is position (c-1)*w + s
    offset = torch.arange(3 * w, device=q.device)[None, :] - w - torch.arange(w, device=q.device)[:, None]  # j - i
    band = offset.abs() <= w  # [w, 3w]
    mask = (band & with_neighbours(real, 1)[:, :, None, :]) | (offset == 0)  # [B, n, w, 3w]
    out, _ = attend(q, keys, values, mask[:, None], dropout_p)  # [B, h, n, w, d]
    return out.reshape(b, h, n * w, d)[:, :, :length]


class TokenLayer(GradientCheckpointingLayer):
    """Pre-LN block over the tokens [B, N, Dt]: sliding-window self-attention, then the feed-forward."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        dim, heads = config.token_dim, config.num_attention_heads
        self.num_heads, self.window = heads, config.token_window
        self.dropout_p = config.attention_probs_dropout_prob
        self.attn_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)
        self.to_out.is_residual_projection = True
        self.ffn_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.ffn = FeedForward(dim, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, tokens: torch.Tensor, real: torch.Tensor | None = None, rotary: Rotary = None) -> torch.Tensor:
        q, k, v = (split_heads(t, self.num_heads) for t in self.to_qkv(self.attn_norm(tokens)).chunk(3, dim=-1))
        q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        mixed = sliding_window_attention(q, k, v, self.window, real, self.dropout_p if self.training else 0.0)
        tokens = tokens + self.dropout(self.to_out(merge_heads(mixed)))
        return tokens + self.dropout(self.ffn(self.ffn_norm(tokens)))
