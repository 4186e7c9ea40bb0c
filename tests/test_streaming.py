"""Streamed corpora: documents read lazily, blocks packed as the Trainer reads them."""

import itertools
import json

import pytest

from concept_encoder.cli import main
from concept_encoder.config import ConfigError, load_experiment
from concept_encoder.data.blocks import build_blocks, build_streaming_blocks
from concept_encoder.data.corpus import load_documents, stream_corpus
from concept_encoder.data.local import resolve_data_dir

from .test_pretrain import write_config

SOURCES = ["wikitext/wiki.valid.raw.gz", "corpus_public_domain/nltk_inaugural.jsonl.gz"]


def test_stream_reads_the_same_documents(tmp_path):
    data_dir = resolve_data_dir()
    streamed = [row["text"] for row in stream_corpus(SOURCES, data_dir)]
    assert streamed == load_documents(SOURCES, data_dir)


def test_streamed_blocks_equal_in_memory_blocks(tokenizer):
    data_dir = resolve_data_dir()
    settings = dict(block_size=64, packing="concat", validation_fraction=0.1, max_validation_blocks=32)
    streamed = build_streaming_blocks(stream_corpus(SOURCES, data_dir), tokenizer, **settings)
    in_memory = build_blocks(load_documents(SOURCES, data_dir), tokenizer, **settings)
    first = list(itertools.islice(iter(streamed.train), 100))
    assert [b["input_ids"] for b in first] == in_memory.train[:100]["input_ids"]
    assert [b["index"] for b in first] == list(range(100))
    assert streamed.validation["input_ids"] == in_memory.validation["input_ids"]


def test_streaming_needs_max_steps(tmp_path):
    path = write_config(tmp_path, data={"streaming": True}, training={"max_steps": -1, "num_train_epochs": 1.0})
    with pytest.raises(ConfigError, match="max_steps"):
        load_experiment(path)


def test_pretraining_on_a_stream(tmp_path):
    config = write_config(tmp_path, data={"streaming": True, "corpus": SOURCES},
                          training={"max_steps": 6, "save_steps": 6, "eval_steps": 6})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    summary = json.loads((tmp_path / "runs" / "micro" / "train_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["tokens_seen"] == 6 * 16 * 64 and summary["train_blocks"] is None
