"""Documents -> token blocks: a deterministic train/validation split, tokenisation and packing.

- split: a document goes to validation when a hash of its text falls below `validation_fraction`;
  the split depends on nothing but the text (not the order, not the machine).
- packing "concat": documents joined by [SEP] into one stream, cut into full blocks that each start
  with [CLS]; no padding at all (the last partial block is dropped).
- packing "document": every block comes from one document, [CLS] chunk [SEP]; blocks have variable
  length and are padded per batch, grouped by length by the Trainer's sampler.
Each block carries its `index`, which keys the deterministic masking of the collators.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
from tokenizers import Tokenizer

from .corpus import CorpusError
import numpy as np


@dataclass
class Blocks:
    train: datasets.Dataset  # columns input_ids, index, length
    validation: datasets.Dataset
    train_documents: int
    validation_documents: int

    @property
    def train_tokens(self) -> int:
        return int(sum(self.train["length"]))


def document_hash(text: str) -> float:
    """A stable uniform number in [0, 1) for a document."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_documents(documents: list[str], validation_fraction: float) -> tuple[list[str], list[str]]:
    """Hash-based document split; at least one document on each side."""
    if len(documents) < 2:
        raise CorpusError(f"the corpus has {len(documents)} document(s); a train/validation split needs 2 or more")
    scores = [document_hash(d) for d in documents]
    held_out = [s < validation_fraction for s in scores]
    if not any(held_out):
        held_out[int(np.argmin(scores))] = True
    if all(held_out):
        held_out[int(np.argmax(scores))] = False
    train = [d for d, h in zip(documents, held_out) if not h]
    validation = [d for d, h in zip(documents, held_out) if h]
    return train, validation


def tokenize(documents: list[str], tokenizer, batch_size: int = 256) -> list[list[int]]:
    """Token ids per document, no special tokens (the fast Rust tokenizer batches across threads)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a copy without the tokenizer's own truncation/padding (MiniLM truncates at 128)
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    ids = []
    for start in range(0, len(documents), batch_size):
        batch = documents[start : start + batch_size]
        if backend is not None:
            ids.extend(e.ids for e in backend.encode_batch(batch, add_special_tokens=False))
        else:
            ids.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
    return ids


def start_and_end_ids(tokenizer) -> tuple[int, int]:
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if end is None:
        end = start
    return start, end


def pack_concat(token_lists: list[list[int]], block_size: int, start_id: int, sep_id: int) -> np.ndarray:
    """[n_blocks, block_size]: [CLS] + block_size-1 tokens of the [SEP]-joined stream."""
    stream = np.fromiter((t for ids in token_lists for t in (*ids, sep_id)), dtype=np.int64)
    body = block_size - 1
    n_blocks = len(stream) // body
    blocks = np.empty((n_blocks, block_size), dtype=np.int64)
    blocks[:, 0] = start_id
    blocks[:, 1:] = stream[: n_blocks * body].reshape(n_blocks, body)
    return blocks


def pack_documents(token_lists: list[list[int]], block_size: int, start_id: int, sep_id: int) -> list[list[int]]:
    """One document per block: [CLS] chunk [SEP], chunks of at most block_size-2 tokens."""
    body = block_size - 2
    return [
        [start_id, *ids[i : i + body], sep_id]
        for ids in token_lists
        for i in range(0, len(ids), body)
    ]


def _to_dataset(blocks) -> datasets.Dataset:
    lengths = [len(b) for b in blocks]
    return datasets.Dataset.from_dict(
        {"input_ids": [list(map(int, b)) for b in blocks], "index": list(range(len(blocks))), "length": lengths}
    )


def build_blocks(
    documents: list[str],
    tokenizer,
    block_size: int,
    packing: str,
    validation_fraction: float,
    max_validation_blocks: int | None = None,
) -> Blocks:
    train_docs, validation_docs = split_documents(documents, validation_fraction)
    start_id, sep_id = start_and_end_ids(tokenizer)
    pack = pack_concat if packing == "concat" else pack_documents
    train = pack(tokenize(train_docs, tokenizer), block_size, start_id, sep_id)
    validation = pack(tokenize(validation_docs, tokenizer), block_size, start_id, sep_id)
    if len(train) == 0 or len(validation) == 0:
        raise CorpusError(
            f"the corpus gives {len(train)} train and {len(validation)} validation blocks of {block_size} tokens; "
            "use more text, a smaller block_size or packing: document"
        )
    if max_validation_blocks is not None:
        validation = validation[:max_validation_blocks]
    return Blocks(_to_dataset(train), _to_dataset(validation), len(train_docs), len(validation_docs))


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def build_blocks_cached(documents: list[str], tokenizer, cache_dir, corpus_key: str, **settings) -> Blocks:
    """`build_blocks`, stored under `cache_dir` by a key of corpus, tokenizer and settings (atomic publish)."""
    key_text = json.dumps([corpus_key, tokenizer_fingerprint(tokenizer), settings, "v1"], sort_keys=True)
    folder = Path(cache_dir) / f"blocks_{hashlib.blake2b(key_text.encode(), digest_size=12).hexdigest()}"
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        return Blocks(datasets.load_from_disk(str(folder / "train")), datasets.load_from_disk(str(folder / "validation")),
                      meta["train_documents"], meta["validation_documents"])
    blocks = build_blocks(documents, tokenizer, **settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".partial_"))
    blocks.train.save_to_disk(str(staging / "train"))
    blocks.validation.save_to_disk(str(staging / "validation"))
    (staging / "meta.json").write_text(json.dumps(
        {"train_documents": blocks.train_documents, "validation_documents": blocks.validation_documents}))
    try:
        os.replace(staging, folder)
    except OSError:  # another process published it first
        shutil.rmtree(staging, ignore_errors=True)
    return blocks
