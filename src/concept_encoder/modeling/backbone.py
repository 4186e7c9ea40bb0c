"""A pretrained transformer's embeddings and first k layers as the token side of a concept encoder.

BERT family (all-MiniLM-L6-v2, bert-base) and Llama family (SmolLM2, Qwen-style decoders) alike: the
backbone is rebuilt from its HF config, stored in `ConceptEncoderConfig.backbone_config` with
`num_hidden_layers = k`, so a saved concept encoder loads offline with no reference to the original
checkpoint. `ConceptEncoderForMaskedLM.from_backbone` copies the pretrained weights in.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from .configuration import ConceptEncoderConfig


class TokenBackbone(nn.Module):
    """input_ids [B, N], attention_mask [B, N] -> token states [B, N, Dt] (Dt = the backbone's width)."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        settings = dict(config.backbone_config)
        hf_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        self.model = AutoModel.from_config(hf_config)
        if getattr(self.model, "pooler", None) is not None:  # BERT's [CLS] pooler: nothing reads it
            self.model.pooler = None
        self.freeze(config.backbone_freeze)

    def freeze(self, which: str) -> None:
        """none: all trained | embeddings: the input embeddings fixed | all: the whole backbone fixed."""
        embeddings = {id(p) for p in self.model.get_input_embeddings().parameters()}
        for param in self.model.parameters():
            param.requires_grad = not (which == "all" or (which == "embeddings" and id(param) in embeddings))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
