"""Task heads on the concept encoder.

`ConceptEncoderForSequenceClassification` (the default head): weighted concept pooling, then a linear
classifier. s_k = w·c_k + b, α = softmax_k(s), z = LN(Σ_k α_k c_k), logits = W·dropout(z).
num_labels == 1 is regression (MSE on the raw score); otherwise cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration import ConceptEncoderConfig
from .modeling_concept_encoder import ConceptEncoderModel, ConceptEncoderPreTrainedModel


class WeightedConceptPooling(nn.Module):
    """[B, C, H] -> [B, H]: a learned, input-dependent softmax weighting of the concepts."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 1)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, concepts: torch.Tensor) -> torch.Tensor:
        weights = self.score(concepts).softmax(dim=1)  # [B, C, 1]
        return self.norm((weights * concepts).sum(dim=1))


@dataclass
class ConceptClassifierOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None  # [B, num_labels]
    pooled: torch.FloatTensor | None = None  # [B, H]


class ConceptEncoderForSequenceClassification(ConceptEncoderPreTrainedModel):
    # a pretraining checkpoint brings its decoder and head: the classifier drops them on purpose
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^lm_head\.", r"^loss_weighting\."]

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = ConceptEncoderModel(config)
        self.pooling = WeightedConceptPooling(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted from BERT-style tokenizers; unused
        return_dict: bool | None = None,
    ) -> ConceptClassifierOutput:
        concepts = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.pooling(concepts)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return ConceptClassifierOutput(loss=loss, logits=logits, pooled=pooled)
