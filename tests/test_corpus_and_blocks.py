"""Corpora from the local data folder, the document split and block packing, on the real WikiText files."""

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from concept_encoder.data.blocks import build_blocks, pack_concat, pack_documents, split_documents
from concept_encoder.data.corpus import CorpusError, load_documents, read_local_file
from concept_encoder.data.local import resolve_data_dir


@pytest.fixture(scope="module")
def data_dir():
    return resolve_data_dir()


def test_wikitext_raw_splits_into_articles(data_dir):
    docs = read_local_file(data_dir / "wikitext" / "wiki.valid.raw.gz")
    assert len(docs) == 60  # the 60 top-level " = Title = " headings of WikiText valid
    assert docs[0].startswith("= Homarus gammarus =")
    assert all(doc.startswith("= ") for doc in docs)


def test_known_hub_name_resolves_into_the_local_folder(data_dir):
    by_name = load_documents(["wikitext-103-raw-v1:validation"], data_dir)
    by_path = load_documents(["wikitext/wiki.valid.raw.gz"], data_dir)
    assert by_name == by_path


def test_jsonl_glob_and_max_documents(data_dir):
    docs = load_documents(["corpus_public_domain/nltk_*.jsonl.gz"], data_dir)
    assert len(docs) == 14 + 55 + 65
    assert len(load_documents(["corpus_extra/enwiki_extract_00.jsonl.gz"], data_dir, max_documents=5)) == 5


def test_txt_and_parquet_files(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph.\nstill first.\n\n\nSecond paragraph.\n")
    pq.write_table(pa.table({"body": ["one doc", "two doc"]}), tmp_path / "b.parquet")
    assert load_documents(["a.txt"], tmp_path) == ["First paragraph.\nstill first.", "Second paragraph."]
    assert load_documents([str(tmp_path / "b.parquet")], None, text_field="body") == ["one doc", "two doc"]


@pytest.mark.parametrize(
    "setup, source, message",
    [
        (None, "nowhere/missing.jsonl.gz", "no such file"),
        ("blank", "blank.jsonl", "no non-empty documents"),
        ("broken", "broken.jsonl.gz", "broken.jsonl.gz, line 2: not valid JSON"),
        ("csv", "table.csv", "unsupported corpus file type"),
        (None, "JeanKaddour/minipile", "data mirror JeanKaddour/minipile"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, setup, source, message):
    if setup == "blank":
        (tmp_path / "blank.jsonl").write_text(json.dumps({"text": "  "}) + "\n")
    if setup == "broken":
        with gzip.open(tmp_path / "broken.jsonl.gz", "wt") as f:
            f.write(json.dumps({"text": "fine"}) + "\n{not json\n")
    if setup == "csv":
        (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match=message):
        load_documents([source], tmp_path)


def test_split_is_deterministic_and_order_free(data_dir):
    docs = load_documents(["wikitext/wiki.valid.raw.gz", "wikitext/wiki.test.raw.gz"], data_dir)
    train, validation = (part["text"] for part in split_documents(docs, 0.1))
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert set(split_documents(shuffled, 0.1)[1]["text"]) == set(validation)
    assert not set(train) & set(validation) and len(train) + len(validation) == len(docs)
    assert 0.03 < len(validation) / len(docs) < 0.2


def test_concat_packing_wastes_nothing():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    blocks = pack_concat(docs, block_size=4, start_id=1, sep_id=2)
    assert blocks.tolist() == [[1, 5, 6, 7], [1, 2, 8, 9], [1, 2, 10, 11], [1, 12, 13, 2]]


def test_document_packing_keeps_documents_apart():
    blocks = pack_documents([[5, 6, 7, 8, 9], [10]], block_size=5, start_id=1, sep_id=2)
    assert blocks == [[1, 5, 6, 7, 2], [1, 8, 9, 2], [1, 10, 2]]


def test_blocks_on_real_text(data_dir, tokenizer):
    docs = load_documents(["wikitext/wiki.valid.raw.gz"], data_dir)
    blocks = build_blocks(docs, tokenizer, block_size=64, packing="concat", validation_fraction=0.1)
    assert set(blocks.train["length"]) == {64} and blocks.train[0]["input_ids"][0] == tokenizer.cls_token_id
    assert blocks.train["index"] == list(range(len(blocks.train)))
    pad = tokenizer.pad_token_id
    assert all(pad not in ids for ids in blocks.train[:50]["input_ids"])
    by_doc = build_blocks(docs, tokenizer, block_size=64, packing="document", validation_fraction=0.1)
    assert max(by_doc.train["length"]) <= 64 and min(by_doc.train["length"]) >= 3
