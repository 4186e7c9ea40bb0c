"""Model layer: config, attention, concept layers, decoder, and the Hugging Face model classes."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from .configuration import ConceptEncoderConfig
from .heads import ConceptEncoderForSentencePairClassification, ConceptEncoderForSequenceClassification
from .modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    ConceptEncoderModel,
    ConceptEncoderOutput,
    ConceptEncoderPreTrainedModel,
    ConceptMaskedLMOutput,
)

AutoConfig.register(ConceptEncoderConfig.model_type, ConceptEncoderConfig, exist_ok=True)
AutoModel.register(ConceptEncoderConfig, ConceptEncoderModel, exist_ok=True)
AutoModelForMaskedLM.register(ConceptEncoderConfig, ConceptEncoderForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(ConceptEncoderConfig, ConceptEncoderForSequenceClassification, exist_ok=True)

__all__ = [
    "ConceptEncoderConfig",
    "ConceptEncoderForMaskedLM",
    "ConceptEncoderForSentencePairClassification",
    "ConceptEncoderForSequenceClassification",
    "ConceptEncoderModel",
    "ConceptEncoderOutput",
    "ConceptEncoderPreTrainedModel",
    "ConceptMaskedLMOutput",
]
