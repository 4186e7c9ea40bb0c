"""The one attention kernel of the package, and the modules built on it.

Shapes: B batch, h heads, d head dim, Lq queries, Lk keys. Masks are boolean and
*True means "may attend"*; a key mask has shape [B, 1, 1, Lk].

Every attention in the model (concept <- token cross-attention, concept self-attention,
the BiXT bidirectional attention, the decoder's query <- concept attention, the token layers' sliding-window
self-attention) calls `attend`,
which runs `torch.nn.functional.scaled_dot_product_attention`. It falls back to an explicit softmax,
which returns the same output, when attention maps are requested, and for attention dropout on a CPU
(eager): SDPA's fused CPU kernel has no dropout, so it would materialise the weights as well, and draw
its mask with PyTorch's serial Bernoulli sampler (see modeling/dropout.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import dropout_matmul


def attend(
    q: torch.Tensor,  # [B, h, Lq, d]
    k: torch.Tensor,  # [B, h, Lk, d]
    v: torch.Tensor,  # [B, h, Lk, d]
    mask: torch.Tensor | None = None,  # bool, broadcastable to [B, h, Lq, Lk]; True = attend
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention. Returns (output [B, h, Lq, d], weights [B, h, Lq, Lk] or None)."""
    cheap_dropout = dropout_p > 0 and q.device.type == "cpu" and not torch.compiler.is_compiling()
    if not (need_weights or cheap_dropout):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [B, h, Lq, Lk]; scaling q is Lk/d times cheaper
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if mask is not None:  # a query that may attend to nothing reads nothing (as SDPA does), not NaN
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    out = dropout_matmul(weights, v, dropout_p)
    return out, (weights if need_weights else None)  # maps before dropout


# ---------------------------------------------------------------------- sliding-window self-attention
def with_neighbours(x: torch.Tensor, chunk_dim: int) -> torch.Tensor:
    """Chunks along `chunk_dim` (their items along the next dim) -> each chunk with its previous and next chunk
    beside it: [..., n, w, ...] -> [..., n, 3w, ...], zeros (False) past either end."""
    n = x.shape[chunk_dim]
    edge = torch.zeros_like(x.narrow(chunk_dim, 0, 1))
    padded = torch.cat([edge, x, edge], dim=chunk_dim)
    return torch.cat([padded.narrow(chunk_dim, i, n) for i in range(3)], dim=chunk_dim + 1)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             real: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Self-attention of q [B, h, N, d] to k, v restricted to |i - j| <= window and to real keys (`real` bool
    [B, N]); every query also sees itself, so no row is empty. The sequence is cut into chunks of `window`, each
    chunk's queries read their chunk and its two neighbours (3w keys): memory O(N * window), never [N, N]."""
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
    mask = ((offset.abs() <= w) & with_neighbours(real, 1)[:, :, None, :]) | (offset == 0)  # [B, n, w, 3w]
    out, _ = attend(q, keys, values, mask[:, None], dropout_p)  # [B, h, n, w, d]
    return out.reshape(b, h, n * w, d)[:, :, :length]


# ---------------------------------------------------------------------- rotary positions
def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, N, d] for integer positions [B, N] (rotate-half convention)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions[..., None].float() * inv_freq  # [B, N, d/2]
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, N, d]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Rotate [B, h, N, d] by its positions; identity when cos_sin is None."""
    if cos_sin is None:
        return x
    cos, sin = cos_sin
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# ---------------------------------------------------------------------- modules
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, h*d] -> [B, h, L, d]"""
    b, length, inner = x.shape
    return x.view(b, length, num_heads, inner // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, L, d] -> [B, L, h*d]"""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


class Attention(nn.Module):
    """Multi-head attention from `query_dim` inputs to `context_dim` inputs (self-attention when no context).

    Rotary rotations, when given, are applied to queries and/or keys by their own positions;
    a side without positions (the concepts) is left unrotated.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.to_q = nn.Linear(query_dim, inner)
        self.to_kv = nn.Linear(context_dim, 2 * inner)  # K and V in one matmul
        self.to_out = nn.Linear(inner, query_dim)
        self.to_out.is_residual_projection = True

    def forward(
        self,
        x: torch.Tensor,  # [B, Lq, query_dim]
        context: torch.Tensor | None = None,  # [B, Lk, context_dim]; None = self-attention
        key_mask: torch.Tensor | None = None,  # bool [B, 1, 1, Lk]
        query_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
        causal: bool = False,  # self-attention only: query i sees keys j <= i
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # from project_context, reused across calls
        window: int | None = None,  # self-attention only: query i sees keys |i - j| <= window (O(N * window))
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if window is not None:
            q = apply_rotary(split_heads(self.to_q(x), self.num_heads), query_rotary)
            k, v = self.project_context(x, key_rotary)
            real = None if key_mask is None else key_mask[:, 0, 0, :]
            out = sliding_window_attention(q, k, v, window, real, self.dropout if self.training else 0.0)
            return self.to_out(merge_heads(out)), None
        context = x if context is None else context
        if causal:
            n = x.shape[1]
            lower = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()  # [N, N]
            key_mask = lower if key_mask is None else key_mask & lower
        q = apply_rotary(split_heads(self.to_q(x), self.num_heads), query_rotary)  # [B, h, Lq, d]
        k, v = context_kv if context_kv is not None else self.project_context(context, key_rotary)
        out, weights = attend(q, k, v, key_mask, self.dropout if self.training else 0.0, need_weights)
        return self.to_out(merge_heads(out)), weights


    def project_context(
        self, context: torch.Tensor, key_rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, h, Lk, d] of a context. A weight-shared layer reading the same static tokens
        at every iteration computes them once (`context_kv`) instead of K times."""
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return apply_rotary(split_heads(k, self.num_heads), key_rotary), split_heads(v, self.num_heads)


class BidirectionalCrossAttention(nn.Module):
    """BiXT attention (Hiller et al., 2024): one concept-token similarity, two softmaxes.

    Concepts and tokens each get a shared query/key projection `r` and a value projection.
    The similarity A = r_c r_tᵀ / sqrt(d) [B, h, C, N] is normalised over tokens to update the
    concepts and over concepts (Aᵀ) to update the tokens. We run the two directions as two
    SDPA calls on the same projections, which gives exactly A and Aᵀ without materialising the
    C x N matrix in memory; padded tokens are masked as keys and never receive an update.
    """

    def __init__(
        self, concept_dim: int, token_dim: int, num_heads: int, head_dim: int, dropout: float, refine_tokens: bool = True
    ):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.refine_tokens = refine_tokens  # False: concepts-only (last layer), no token-side parameters
        self.concept_rv = nn.Linear(concept_dim, (2 if refine_tokens else 1) * inner)  # r_c (and v_c)
        self.token_rv = nn.Linear(token_dim, 2 * inner)  # shared query/key r_t and value v_t
        self.concept_out = nn.Linear(inner, concept_dim)
        self.concept_out.is_residual_projection = True
        if refine_tokens:
            self.token_out = nn.Linear(inner, token_dim)
            self.token_out.is_residual_projection = True

    def forward(
        self,
        concepts: torch.Tensor,  # [B, C, concept_dim]
        tokens: torch.Tensor,  # [B, N, token_dim]
        key_mask: torch.Tensor | None = None,  # bool [B, 1, 1, N]
        token_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
        refine_tokens: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (concept update [B, C, H], token update [B, N, Dt] or None, concept<-token weights or None)."""
        refine_tokens = refine_tokens and self.refine_tokens
        concept_side = [split_heads(t, self.num_heads) for t in self.concept_rv(concepts).chunk(2 if self.refine_tokens else 1, dim=-1)]
        r_t, v_t = (split_heads(t, self.num_heads) for t in self.token_rv(tokens).chunk(2, dim=-1))
        r_t = apply_rotary(r_t, token_rotary)  # [B, h, N, d]
        p = self.dropout if self.training else 0.0
        concept_update, weights = attend(concept_side[0], r_t, v_t, key_mask, p, need_weights)  # softmax over tokens
        token_update = None
        if refine_tokens:  # softmax over concepts of the same similarity (Aᵀ)
            token_update = self.token_out(merge_heads(attend(r_t, concept_side[0], concept_side[1], None, p)[0]))
        return self.concept_out(merge_heads(concept_update)), token_update, weights
