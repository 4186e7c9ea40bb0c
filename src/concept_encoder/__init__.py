"""concept-encoder: build, train, evaluate and diagnose concept encoders.

Importing the package registers the model family with transformers' Auto classes.
"""

from .modeling import (
    ConceptEncoderConfig,
    ConceptEncoderForMaskedLM,
    ConceptEncoderForSequenceClassification,
    ConceptEncoderModel,
    ConceptEncoderOutput,
    ConceptEncoderPreTrainedModel,
    ConceptMaskedLMOutput,
)

__version__ = "0.1.0"

__all__ = [
    "ConceptEncoderConfig",
    "ConceptEncoderForMaskedLM",
    "ConceptEncoderForSequenceClassification",
    "ConceptEncoderModel",
    "ConceptEncoderOutput",
    "ConceptEncoderPreTrainedModel",
    "ConceptMaskedLMOutput",
    "__version__",
]
