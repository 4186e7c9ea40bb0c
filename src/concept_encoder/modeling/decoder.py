"""The token decoder shared by every head that reads concepts back out to token positions.

One module serves both pretraining decoder types (and, later, the ViaDecoder classification head):
- "perceiver_io": query = token embedding of the input id (+ position);
- "position_only": query = position alone, so everything about the token must come from the concepts.
Queries only cross-attend to the concepts, never to each other, so decoding any subset of positions
gives exactly the rows that decoding all positions would: the MLM head decodes only labelled positions.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import rotary_cos_sin
from .configuration import ConceptEncoderConfig
from .decoding import IGNORE_INDEX, Decoded, TextBatch, select_positions
from .layers import DecoderLayer


class ConceptDecoder(nn.Module):
    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H = config.hidden_size
        self.query_type = config.decoder_type
        self.head_dim = config.head_dim
        self.rotary_base = config.rotary_base if config.position_embedding_type == "rotary" else None
        if self.rotary_base is None:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
            self.query_seed = None
        else:  # rotary: positions enter by rotating the queries; a learned seed gives position-only queries content
            self.position_embeddings = None
            self.query_seed = nn.Parameter(torch.empty(H)) if self.query_type == "position_only" else None
        needs_proj = self.query_type == "perceiver_io" and config.token_dim != H
        self.token_proj = nn.Linear(config.token_dim, H) if needs_proj else None
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.norm = nn.LayerNorm(H, eps=config.layer_norm_eps)

    def forward(
        self,
        concepts: torch.Tensor,  # [B, C, H]
        position_ids: torch.Tensor,  # [B, M] positions of the queries
        token_embeds: torch.Tensor | None = None,  # [B, M, Dt] word embeddings; perceiver_io only
        need_weights: bool = False,
        use_tokens: bool = True,  # False: position-only queries even for perceiver_io (no token bypass)
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Returns decoded states [B, M, H] and, when asked, per-layer attention maps [B, h, M, C]."""
        B, M = position_ids.shape
        if self.query_type == "perceiver_io" and use_tokens:
            if token_embeds is None:
                raise ValueError("decoder_type='perceiver_io' needs the token embeddings of the query positions")
            queries = token_embeds if self.token_proj is None else self.token_proj(token_embeds)
        else:
            queries = concepts.new_zeros(B, M, concepts.shape[-1])
        if self.position_embeddings is not None:
            queries = queries + self.position_embeddings(position_ids)
        elif self.query_seed is not None:
            queries = queries + self.query_seed
        rotary = (
            rotary_cos_sin(position_ids, self.head_dim, self.rotary_base, queries.dtype)
            if self.rotary_base is not None
            else None
        )
        maps = []
        for layer in self.layers:
            queries, weights = layer(queries, concepts, query_rotary=rotary, need_weights=need_weights)
            maps.append(weights)
        return self.norm(queries), (tuple(maps) if need_weights else None)

    def decode_text(self, concepts: torch.Tensor, text: TextBatch, embed: nn.Embedding, sparse: bool = False,
                    need_weights: bool = False) -> Decoded:
        """The decoder protocol (decoding.py). Queries never see each other, so with `sparse` only the labelled
        positions are decoded: [B, M] of them, M the most labels in one row."""
        ids, positions, targets = text.input_ids, text.position_ids, text.labels
        if sparse and targets is not None:
            index, valid = select_positions(targets != IGNORE_INDEX)  # [B, M]
            ids, positions = ids.gather(1, index), positions.gather(1, index)
            targets = targets.gather(1, index).masked_fill(~valid, IGNORE_INDEX)
        token_embeds = embed(ids) if self.query_type == "perceiver_io" else None
        states, maps = self(concepts, positions, token_embeds, need_weights=need_weights)
        return Decoded(states, targets, maps=maps)
