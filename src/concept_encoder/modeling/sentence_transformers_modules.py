"""The sentence-transformers modules of an exported concept encoder.

This file ships inside every `export` folder beside the modelling files it imports (relative imports only), and
the folder's modules.json names its classes as `sentence_transformers_modules.ConceptEncoderModule` and
`sentence_transformers_modules.ConceptPooling`. So `SentenceTransformer(DIR, trust_remote_code=True)` loads the
folder where this package is not installed. Two modules, the pooling a module of its own as sentence-transformers
composes models (a third, sentence-transformers' own `Normalize`, follows them):
  0. `ConceptEncoderModule` (root): tokenizer + `ConceptEncoderModel` -> `concept_embeddings` [B, C, H];
  1. `ConceptPooling` (`1_ConceptPooling/`): mean | weighted | decoder -> `sentence_embedding` [B, H], the same
     computation as `zero-shot`'s `--pooling` (the weighted pooling or the decoder and its norm saved with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules import InputModule, Module
from torch import nn
from transformers import AutoTokenizer

from .configuration import ConceptEncoderConfig
from .decoder import ConceptDecoder
from .heads import POOLINGS, WeightedConceptPooling, decoder_pooling
from .modeling_concept_encoder import ConceptEncoderModel


class ConceptEncoderModule(InputModule):
    """Texts -> concepts [B, C, H]; the encoder and tokenizer are saved at the folder's root."""

    config_file_name = "concept_encoder_module.json"  # config.json is the encoder's own
    config_keys: ClassVar[list[str]] = ["max_seq_length"]

    def __init__(self, encoder: ConceptEncoderModel, tokenizer, max_seq_length: int):
        super().__init__()
        self.encoder, self.tokenizer, self.max_seq_length = encoder, tokenizer, max_seq_length

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        texts = self._prepend_prompt(list(inputs), prompt) if prompt else list(inputs)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        output = self.encoder(features["input_ids"], attention_mask=features["attention_mask"])
        return features | {"concept_embeddings": output.last_hidden_state}

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.encoder.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.save_tokenizer(output_path)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> ConceptEncoderModule:
        folder = _module_folder(cls, model_name_or_path, subfolder, kwargs)
        config = cls.load_config(str(folder))
        encoder = ConceptEncoderModel.from_pretrained(folder).eval()
        return cls(encoder, AutoTokenizer.from_pretrained(folder), **config)


class ConceptPooling(Module):
    """concepts [B, C, H] -> `sentence_embedding` [B, H], by the mean, the learned weighted pooling, or the
    pretrained decoder's masked mean over positions (position-only queries, no token bypass)."""

    config_keys: ClassVar[list[str]] = ["mode", "concept_config"]

    def __init__(self, mode: str, concept_config: dict, pooling: nn.Module | None = None,
                 decoder: ConceptDecoder | None = None, decoder_norm: nn.LayerNorm | None = None):
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode, self.concept_config = mode, concept_config
        config = ConceptEncoderConfig.from_dict(concept_config)
        if mode == "weighted":
            self.pooling = pooling or WeightedConceptPooling(config)
        elif mode == "decoder":
            self.decoder = decoder or ConceptDecoder(config)
            self.decoder_norm = decoder_norm or nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        concepts = features["concept_embeddings"]
        if self.mode == "weighted":
            pooled = self.pooling(concepts)
        elif self.mode == "decoder":
            pooled = decoder_pooling(self.decoder, self.decoder_norm, concepts, features["input_ids"],
                                     features["attention_mask"])
        else:
            pooled = concepts.mean(dim=1)
        return features | {"sentence_embedding": pooled}

    def get_embedding_dimension(self) -> int:
        return self.concept_config["hidden_size"]

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        if self.mode != "mean":
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(output_path) / "model.safetensors"))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> ConceptPooling:
        folder = _module_folder(cls, model_name_or_path, subfolder, kwargs)
        module = cls(**cls.load_config(str(folder)))
        if module.mode != "mean":
            module.load_state_dict(load_file(str(folder / "model.safetensors")))
        return module.eval()


def _module_folder(cls, model_name_or_path: str, subfolder: str, kwargs: dict) -> Path:
    """A module's local folder: the folder itself, or its Hub snapshot (an export pushed to the Hub)."""
    hub = {k: kwargs.get(k) for k in ("token", "cache_folder", "revision")}
    folder = cls.load_dir_path(model_name_or_path, subfolder, local_files_only=kwargs.get("local_files_only", False),
                               **hub)
    if folder is None:
        raise FileNotFoundError(f"{model_name_or_path}: no module folder {subfolder!r} (an incomplete export?)")
    return Path(folder)
