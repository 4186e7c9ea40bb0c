"""concept-encoder: build, train, evaluate and diagnose concept encoders.

Importing a model class (or `concept_encoder.modeling`) registers the model family with transformers' Auto classes.
"""

__version__ = "0.1.0"

_MODELING = ("ConceptEncoderConfig", "ConceptEncoderForMaskedLM", "ConceptEncoderForSequenceClassification",
             "ConceptEncoderModel", "ConceptEncoderOutput", "ConceptEncoderPreTrainedModel", "ConceptMaskedLMOutput")


def __getattr__(name: str):
    """The model classes on first use (PEP 562): `import concept_encoder.cli` then costs no torch import, and the
    Auto classes are registered as soon as any model class or `concept_encoder.modeling` is imported."""
    if name in _MODELING:
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
