"""The TSDAE paper's decoder (Wang et al., 2021): rebuild the original text left to right from the concepts.

Teacher forcing: the input at position i is the original token i−1 ([CLS] at 0); each layer (pre-LN)
runs causal self-attention over those inputs (pads masked as keys), cross-attention to the concepts of
the damaged text, and an FFN; position i predicts original token i. The plan's TSDAE uses the
position-only decoder instead (`decoder_type: position_only`), a non-autoregressive reconstruction.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import Attention
from .configuration import ConceptEncoderConfig
from .decoding import Decoded, TextBatch
from .dropout import Dropout
from .layers import FeedForward


class AutoregressiveDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H, heads, d, p = config.hidden_size, config.num_attention_heads, config.head_dim, config.attention_probs_dropout_prob
        self.self_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.self_attn = Attention(H, H, heads, d, p)
        self.cross_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.cross_attn = Attention(H, H, heads, d, p)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.ffn = FeedForward(H, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x, concepts, key_mask=None):
        x = x + self.dropout(self.self_attn(self.self_norm(x), key_mask=key_mask, causal=True)[0])
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), concepts)[0])
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class AutoregressiveDecoder(nn.Module):
    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H = config.hidden_size
        self.start_id = config.cls_token_id if config.cls_token_id is not None else config.bos_token_id
        self.pad_id = config.pad_token_id
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_proj = nn.Linear(config.token_dim, H) if config.token_dim != H else None
        self.layers = nn.ModuleList(AutoregressiveDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.norm = nn.LayerNorm(H, eps=config.layer_norm_eps)

    def shift_right(self, targets: torch.Tensor) -> torch.Tensor:
        """Original ids [B, N] (-100 at pads) -> decoder inputs: [CLS], t_0 .. t_{N-2}, pads as pad id."""
        ids = targets.masked_fill(targets < 0, self.pad_id)
        start = torch.full_like(ids[:, :1], self.start_id)
        return torch.cat([start, ids[:, :-1]], dim=1)

    def forward(self, concepts, embed: nn.Embedding, targets: torch.Tensor, position_ids: torch.Tensor,
                inputs: torch.Tensor | None = None):
        """States [B, N, H]; position i has seen original tokens < i (`inputs`, default the shifted targets)
        and the concepts."""
        inputs = self.shift_right(targets) if inputs is None else inputs
        x = embed(inputs)
        x = (x if self.token_proj is None else self.token_proj(x)) + self.position_embeddings(position_ids)
        real = targets >= 0
        real[:, 0] = True  # the start token is always there
        key_mask = None if bool(real.all()) else real[:, None, None, :]
        for layer in self.layers:
            x = layer(x, concepts, key_mask)
        return self.norm(x)

    def decode_text(self, concepts: torch.Tensor, text: TextBatch, embed: nn.Embedding, sparse: bool = False,
                    need_weights: bool = False) -> Decoded:
        """The decoder protocol (decoding.py): teacher forcing on the original text, so the labels are needed.
        With `text.decoder_input_ids` (prefix -> suffix) the labels are another text than the encoder's, read
        from position 0."""
        if text.labels is None:
            raise ValueError("decoder_type='autoregressive' decodes by teacher forcing: pass labels (the text)")
        if text.decoder_input_ids is None:
            return Decoded(self(concepts, embed, text.labels, text.position_ids), text.labels)
        positions = torch.arange(text.labels.shape[1], device=text.labels.device).expand_as(text.labels)
        return Decoded(self(concepts, embed, text.labels, positions, text.decoder_input_ids), text.labels)
