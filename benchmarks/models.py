"""The benchmark shapes: the research plan's L6 MLM config, a same-size BERT, and synthetic MLM batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from _common import device
from transformers import BertConfig, BertForMaskedLM

from concept_encoder import ConceptEncoderConfig, ConceptEncoderForMaskedLM
from concept_encoder.objectives.masking import IGNORE_INDEX


@dataclass(frozen=True)
class Shape:
    hidden: int = 512
    layers: int = 6
    concepts: int = 128
    heads: int = 8
    ffn: int = 2048
    vocab: int = 50368
    batch: int = 8
    tokens: int = 512
    mask_rate: float = 0.15
    dropout: float = 0.1  # hidden and attention dropout of both models (the plan's value)


FULL = Shape()
QUICK = Shape(hidden=256, layers=2, concepts=64, heads=4, ffn=1024, vocab=30522, batch=4, tokens=256)


def concept_encoder(shape: Shape, **overrides) -> ConceptEncoderForMaskedLM:
    settings = {
        "vocab_size": shape.vocab, "hidden_size": shape.hidden, "num_hidden_layers": shape.layers, "num_concepts": shape.concepts,
        "num_attention_heads": shape.heads, "intermediate_size": shape.ffn, "max_position_embeddings": max(shape.tokens, 512),
        "pad_token_id": 0, "mask_token_id": 4, "hidden_dropout_prob": shape.dropout,
        "attention_probs_dropout_prob": shape.dropout}
    config = ConceptEncoderConfig(**{**settings, **overrides})
    return ConceptEncoderForMaskedLM(config).to(device()).train()


def bert(shape: Shape) -> BertForMaskedLM:
    config = BertConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                        num_attention_heads=shape.heads, intermediate_size=shape.ffn,
                        max_position_embeddings=max(shape.tokens, 512), hidden_dropout_prob=shape.dropout,
                        attention_probs_dropout_prob=shape.dropout, attn_implementation="sdpa")
    return BertForMaskedLM(config).to(device()).train()


def mlm_batch(shape: Shape, seed: int = 0) -> dict[str, torch.Tensor]:
    """Packed blocks (no padding): a mask_rate share of positions replaced by [MASK] and labelled."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, shape.vocab, (shape.batch, shape.tokens), generator=g)
    chosen = torch.rand(shape.batch, shape.tokens, generator=g) < shape.mask_rate
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    ids = torch.where(chosen, torch.full_like(ids, 4), ids)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device()) for k, v in batch.items()}


def training_step(model, batch: dict, optimizer=None, bf16: bool | None = None, backward: bool = True):
    """forward + backward (+ AdamW step when an optimizer is given); what one training step costs.
    bf16 autocast: None = on a GPU only (how training runs by default), True/False = forced."""
    bf16 = torch.cuda.is_available() if bf16 is None else bf16
    with torch.autocast(device().type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    if not backward:
        return loss
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    return loss


def optimizer(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as pretraining uses it (CPU and GPU)
