"""Task heads on the concept encoder.

`ConceptEncoderForSequenceClassification`, pooling by `config.classifier_pooling`:
- "weighted" (default): s_k = w·c_k + b, α = softmax_k(s), z = LN(Σ_k α_k c_k);
- "via_decoder": the pretraining decoder module itself (`ConceptDecoder`, same parameter names, so a
  pretraining checkpoint loads into it) decodes every real position from the concepts; z = LN(masked
  mean of the decoded states). With perceiver_io queries the token embeddings enter the queries and
  would reach z without passing through the concepts (the original's bypass): by default
  (`classifier_token_bypass: false`) the queries are position-only, so only the concepts feed the head;
  `classifier_token_bypass: true` restores the bypass, as an explicit option.
logits = W·dropout(z); num_labels == 1 is regression (MSE on the raw score), otherwise cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration import ConceptEncoderConfig
from .decoder import ConceptDecoder
from .dropout import Dropout
from .embeddings import default_positions
from .modeling_concept_encoder import ConceptEncoderModel, ConceptEncoderPreTrainedModel

POOLINGS = ("mean", "weighted", "decoder")  # how a concept encoder's concepts become one vector


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
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^lm_head\.", r"^loss_weighting\.", r"^teacher_projection\."]

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = ConceptEncoderModel(config)
        if config.classifier_pooling == "via_decoder":
            self.decoder = ConceptDecoder(config)
            self.decoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.pooling = WeightedConceptPooling(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
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
        if self.config.classifier_pooling == "via_decoder":
            pooled = self._via_decoder(concepts, input_ids, attention_mask)
        else:
            pooled = self.pooling(concepts)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return ConceptClassifierOutput(loss=loss, logits=logits, pooled=pooled)

    def _via_decoder(self, concepts, input_ids, attention_mask):
        bypass = self.config.decoder_type == "perceiver_io" and self.config.classifier_token_bypass
        embeds = self.encoder.embeddings.word_embeddings(input_ids) if bypass else None
        return decoder_pooling(self.decoder, self.decoder_norm, concepts, input_ids, attention_mask, embeds)


def decoder_pooling(decoder: ConceptDecoder, norm: nn.LayerNorm, concepts: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None, token_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder reads the concepts at every position (with the tokens only when `token_embeds` is given);
    the masked mean of its states, normalised [B, H]. The classifier head and the exported pooling share it."""
    positions = default_positions(input_ids)
    states, _ = decoder(concepts, positions, token_embeds, use_tokens=token_embeds is not None)  # [B, N, H]
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    real = real[..., None].to(states.dtype)
    return norm((states * real).sum(1) / real.sum(1).clamp(min=1))


class ConceptEncoderForSentencePairClassification(ConceptEncoderPreTrainedModel):
    """Each sentence encoded on its own by the shared encoder and pooled by the shared weighted pooling into
    u and v; logits = W·dropout([u, v, |u − v|, u ⊙ v]). With `cosine_only` the output is cos(u, v) [B, 1],
    trained by MSE against scores the caller scales to [0, 1] (the evaluation protocol divides STS labels by
    their maximum; the original regressed cosines on raw 0–5 scores)."""

    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^lm_head\.", r"^loss_weighting\.", r"^teacher_projection\."]

    def __init__(self, config: ConceptEncoderConfig, cosine_only: bool = False):
        super().__init__(config)
        self.cosine_only = cosine_only
        self.encoder = ConceptEncoderModel(config)
        self.pooling = WeightedConceptPooling(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = None if cosine_only else nn.Linear(4 * config.hidden_size, config.num_labels)
        self.post_init()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooling(self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state)  # [B, H]

    def forward(
        self,
        input_ids: torch.Tensor,
        input_ids_b: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> ConceptClassifierOutput:
        u, v = self.embed(input_ids, attention_mask), self.embed(input_ids_b, attention_mask_b)
        if self.cosine_only:
            logits = F.cosine_similarity(u, v, dim=-1)[:, None]
        else:
            logits = self.classifier(self.dropout(torch.cat([u, v, (u - v).abs(), u * v], dim=-1)))
        loss = None
        if labels is not None:
            if logits.shape[-1] == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return ConceptClassifierOutput(loss=loss, logits=logits, pooled=u)
