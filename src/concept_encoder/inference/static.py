"""The static student of a teacher: a model2vec model distilled offline from a sentence encoder (all-MiniLM-L6-v2
by default), the cheapest encoder users would pick instead (no attention at all: a text is the weighted mean of
its tokens' vectors). Every concept student of the same teacher must beat it to earn its attention cost.

`distill_static` builds it once (model2vec's `distill`: the teacher's output vectors of its vocabulary, PCA,
SIF weighting) into a folder; `load_encoder` recognises such a folder (`config.json` model_type `model2vec`) and
`encode` calls its own `encode`, so zero-shot STS, `long-context` and `encode` score it like any encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

STATIC_MODEL_TYPE = "model2vec"


def is_static_folder(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == STATIC_MODEL_TYPE
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


class StaticEncoder:
    """A loaded model2vec model with the attributes `inference.encoder` reads (not a torch module)."""

    is_concept_encoder = False
    pooling_mode = "mean"

    def __init__(self, path: str | Path):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(path))
        self.name_or_path = str(path)

    def encode(self, texts: list[str], batch_size: int = 1024, normalize: bool = True) -> torch.Tensor:
        vectors = torch.from_numpy(self.model.encode(texts, batch_size=batch_size, max_length=None)).float()
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


def distill_static(teacher: str, out_dir: str | Path, pca_dims: int = 256) -> Path:
    """Distil `teacher` (a folder or a Hub name) into a model2vec folder at `out_dir` (written whole or not at
    all); an existing static folder there is kept as it is."""
    from model2vec.distill import distill

    from ..offline import offline_folder

    out_dir = Path(out_dir)
    if is_static_folder(out_dir):
        return out_dir
    model = distill(model_name=offline_folder(teacher) or teacher, pca_dims=pca_dims)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial_"))
    try:
        model.save_pretrained(str(staging))
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
