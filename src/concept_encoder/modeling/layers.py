"""Building blocks: feed-forward, the token layer, the concept layers (stacked, BiXT) and the decoder layer.

All layers are pre-LN: x + f(LN(x)). Shapes: concepts [B, C, H], tokens [B, N, Dt],
key mask bool [B, 1, 1, N] (True = real token) or None when nothing is padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import Attention, BidirectionalCrossAttention
from .configuration import ConceptEncoderConfig
from .dropout import Dropout

Rotary = tuple[torch.Tensor, torch.Tensor] | None


class FeedForward(nn.Module):
    """GEGLU (default; Shazeer 2020) or plain GELU MLP: dim -> hidden -> dim."""

    def __init__(self, dim: int, hidden: int, ffn_type: str, dropout: float):
        super().__init__()
        self.gated = ffn_type == "geglu"
        self.proj_in = nn.Linear(dim, 2 * hidden if self.gated else hidden)
        self.dropout = Dropout(dropout)
        self.proj_out = nn.Linear(hidden, dim)
        self.proj_out.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        if self.gated:
            a, gate = h.chunk(2, dim=-1)
            h = F.gelu(a) * gate
        else:
            h = F.gelu(h)
        return self.proj_out(self.dropout(h))


def _layer_norm(config: ConceptEncoderConfig, dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


class TokenLayer(GradientCheckpointingLayer):
    """Contextualised tokens before compression (`model.token_layers`): a pre-LN block over the tokens [B, N, Dt],
    sliding-window self-attention (each token reads those at most `token_window` positions away), then an FFN.
    Without it a stacked encoder's concepts read token embeddings that never saw their neighbours."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        dim, heads = config.token_dim, config.num_attention_heads
        self.window = config.token_window
        self.attn_norm = _layer_norm(config, dim)
        self.attn = Attention(dim, dim, heads, dim // heads, config.attention_probs_dropout_prob)
        self.ffn_norm = _layer_norm(config, dim)
        self.ffn = FeedForward(dim, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None, rotary: Rotary = None):
        update, _ = self.attn(self.attn_norm(tokens), key_mask=key_mask, query_rotary=rotary, key_rotary=rotary,
                              window=self.window)
        tokens = tokens + self.dropout(update)
        return tokens + self.dropout(self.ffn(self.ffn_norm(tokens)))


class ConceptLayer(GradientCheckpointingLayer):
    """Stacked layer: concepts read the (static) tokens, then talk among themselves, then an FFN."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H, heads, d, p = config.hidden_size, config.num_attention_heads, config.head_dim, config.attention_probs_dropout_prob
        self.cross_norm = _layer_norm(config, H)
        self.cross_attn = Attention(H, config.token_dim, heads, d, p)
        self.self_norm = _layer_norm(config, H)
        self.self_attn = Attention(H, H, heads, d, p)
        self.ffn_norm = _layer_norm(config, H)
        self.ffn = FeedForward(H, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        concepts: torch.Tensor,  # [B, C, H]
        tokens: torch.Tensor,  # [B, N, Dt]
        key_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,  # unused: tokens are not updated
        token_rotary: Rotary = None,
        need_weights: bool = False,
        refine_tokens: bool = True,  # unused: tokens are static
        token_kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # precomputed cross_attn.project_context(tokens)
    ):
        update, cross_w = self.cross_attn(
            self.cross_norm(concepts), tokens, key_mask, key_rotary=token_rotary, need_weights=need_weights,
            context_kv=token_kv,
        )
        concepts = concepts + self.dropout(update)
        update, self_w = self.self_attn(self.self_norm(concepts), need_weights=need_weights)
        concepts = concepts + self.dropout(update)
        concepts = concepts + self.dropout(self.ffn(self.ffn_norm(concepts)))
        return concepts, tokens, cross_w, self_w


class BiXTLayer(GradientCheckpointingLayer):
    """BiXT layer: bidirectional concept<->token attention, concept self-attention, FFNs on both sides.

    Tokens are refined layer by layer; padded tokens (token_mask 0) never change and are never read.
    The last layer of a stack is built with `refine_tokens=False`: nothing reads its tokens, so it
    has no token-side parameters (a recursive encoder skips that work at its last iteration instead).
    """

    def __init__(self, config: ConceptEncoderConfig, refine_tokens: bool = True):
        super().__init__()
        H, Dt = config.hidden_size, config.token_dim
        heads, d, p = config.num_attention_heads, config.head_dim, config.attention_probs_dropout_prob
        self.concept_norm = _layer_norm(config, H)
        self.token_norm = _layer_norm(config, Dt)
        self.cross_attn = BidirectionalCrossAttention(H, Dt, heads, d, p, refine_tokens)
        self.self_norm = _layer_norm(config, H)
        self.self_attn = Attention(H, H, heads, d, p)
        self.ffn_norm = _layer_norm(config, H)
        self.ffn = FeedForward(H, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.refine_tokens = refine_tokens
        if refine_tokens:  # the token FFN keeps the concept FFN's expansion ratio at the token width
            token_hidden = max(1, config.intermediate_size * Dt // H)
            self.token_ffn_norm = _layer_norm(config, Dt)
            self.token_ffn = FeedForward(Dt, token_hidden, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        concepts: torch.Tensor,  # [B, C, H]
        tokens: torch.Tensor,  # [B, N, Dt]
        key_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,  # float [B, N, 1], 1 = real token; None = no padding
        token_rotary: Rotary = None,
        need_weights: bool = False,
        refine_tokens: bool = True,
    ):
        refine_tokens = refine_tokens and self.refine_tokens
        concept_update, token_update, cross_w = self.cross_attn(
            self.concept_norm(concepts), self.token_norm(tokens), key_mask, token_rotary, need_weights, refine_tokens
        )
        concepts = concepts + self.dropout(concept_update)
        if refine_tokens:
            tokens = self._add_to_real_tokens(tokens, token_update, token_mask)
            tokens = self._add_to_real_tokens(tokens, self.token_ffn(self.token_ffn_norm(tokens)), token_mask)
        update, self_w = self.self_attn(self.self_norm(concepts), need_weights=need_weights)
        concepts = concepts + self.dropout(update)
        concepts = concepts + self.dropout(self.ffn(self.ffn_norm(concepts)))
        return concepts, tokens, cross_w, self_w

    def _add_to_real_tokens(self, tokens, update, token_mask):
        update = self.dropout(update)
        return tokens + (update if token_mask is None else update * token_mask)


class DecoderLayer(GradientCheckpointingLayer):
    """Perceiver-IO output layer: each query reads the concepts, then an FFN. Queries never see each other."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H, heads, d, p = config.hidden_size, config.num_attention_heads, config.head_dim, config.attention_probs_dropout_prob
        self.cross_norm = _layer_norm(config, H)
        self.cross_attn = Attention(H, H, heads, d, p)
        self.ffn_norm = _layer_norm(config, H)
        self.ffn = FeedForward(H, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        queries: torch.Tensor,  # [B, M, H]
        concepts: torch.Tensor,  # [B, C, H]
        query_rotary: Rotary = None,
        need_weights: bool = False,
    ):
        update, weights = self.cross_attn(
            self.cross_norm(queries), concepts, query_rotary=query_rotary, need_weights=need_weights
        )
        queries = queries + self.dropout(update)
        queries = queries + self.dropout(self.ffn(self.ffn_norm(queries)))
        return queries, weights
