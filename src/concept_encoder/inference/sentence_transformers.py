"""A concept encoder as a sentence-transformers model: `export` writes a folder that

    SentenceTransformer(DIR, trust_remote_code=True)

loads. Three modules, the pooling a module of its own as sentence-transformers composes models:
  0. `ConceptEncoderModule` (root): tokenizer + `ConceptEncoderModel` -> `concept_embeddings` [B, C, H];
  1. `ConceptPooling` (`1_ConceptPooling/`): mean | weighted | decoder, the same computation as `zero-shot`'s
     `--pooling` (the weighted pooling or the decoder and its norm are saved with it) -> `sentence_embedding`;
  2. sentence-transformers' own `Normalize`, as `zero-shot` compares L2-normalised vectors.
`trust_remote_code=True` is sentence-transformers' switch for module classes outside its own package; the classes
here come from the installed `concept_encoder` package, and the folder holds no code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule, Module, Normalize
from torch import nn
from transformers import AutoTokenizer

from ..modeling import ConceptEncoderConfig, ConceptEncoderModel
from ..modeling.decoder import ConceptDecoder
from ..modeling.heads import WeightedConceptPooling, decoder_pooling
from .encoder import POOLINGS, EncoderError, load_encoder, max_tokens

FORMATS = ("sentence-transformers",)


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
            raise EncoderError(f"pooling must be one of {POOLINGS}, got {mode!r}")
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
        raise EncoderError(f"{model_name_or_path}: no module folder {subfolder!r} (an incomplete export?)")
    return Path(folder)


def sentence_transformer(model_path: str | Path, pooling: str = "mean", max_length: int | None = None
                         ) -> SentenceTransformer:
    """The three modules around a trained concept encoder (a run folder or a checkpoint), in memory."""
    model, tokenizer = load_encoder(model_path, pooling)
    if not model.is_concept_encoder:
        raise EncoderError(f"{model_path}: not a concept encoder; a Hugging Face encoder loads in "
                           "sentence-transformers as it is")
    encoder = model.base_model
    concept_config = encoder.config.to_dict()
    if pooling == "weighted":
        pooling_module = ConceptPooling("weighted", concept_config, pooling=model.pooling)
    elif pooling == "decoder":
        pooling_module = ConceptPooling("decoder", concept_config, decoder=model.decoder,
                                        decoder_norm=model.decoder_norm)
    else:
        pooling_module = ConceptPooling("mean", concept_config)
    first = ConceptEncoderModule(encoder, tokenizer, max_tokens(model, max_length))
    return SentenceTransformer(modules=[first, pooling_module, Normalize()], device="cpu").eval()


def export(model_path: str | Path, to: str | Path, format: str = "sentence-transformers", pooling: str = "mean",
           max_length: int | None = None) -> Path:
    """Write the model in `format` to `to`; returns the folder."""
    if format not in FORMATS:
        raise EncoderError(f"export format must be one of {FORMATS}, got {format!r}")
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise EncoderError(f"{to}: exists and is not an empty folder; export into a new folder")
    model = sentence_transformer(model_path, pooling, max_length)  # a model that does not load fails before any write
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.partial_"))
    try:  # written beside, then renamed: an interrupted export leaves no half folder under the name
        model.save(str(staging), create_model_card=False)
        (staging / EXPORT_MARKER).write_text(json.dumps(
            {"source": str(model_path), "format": format, "pooling": pooling}, indent=2), encoding="utf-8")
        if to.exists():
            to.rmdir()  # the empty folder the user named
        os.replace(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return to


EXPORT_MARKER = "concept_encoder_export.json"
TRUSTED_NAMESPACES = ("concept_encoder.", "sentence_transformers.")


def is_own_export(folder: str | Path) -> bool:
    """Whether `folder` is this package's `export` and nothing else: its marker file is there, every module of
    its modules.json is a class of this package or of sentence-transformers, and it holds no Python file. Only
    such a folder is loaded with trust_remote_code without being asked (`mteb`): a forged marker beside a .py file
    or a foreign class is refused."""
    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (folder / EXPORT_MARKER).is_file() or not isinstance(modules, list):
        return False
    names = [m.get("type", "") if isinstance(m, dict) else "" for m in modules]
    return all(name.startswith(TRUSTED_NAMESPACES) for name in names) and not any(folder.rglob("*.py"))


def load_exported(folder: str | Path) -> SentenceTransformer:
    """An exported folder, loaded as a user would load it (offline: no Hub lookup for a local folder)."""
    return SentenceTransformer(str(folder), trust_remote_code=True, local_files_only=True, device="cpu")
