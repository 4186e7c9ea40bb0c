"""From a trained model to vectors: loading and pooling (`encoder`), a corpus to a vectors file (`corpus`), and
the sentence-transformers export (`sentence_transformers`)."""

from .encoder import POOLINGS, EncoderError, encode, load_encoder

__all__ = ["POOLINGS", "EncoderError", "encode", "load_encoder"]
