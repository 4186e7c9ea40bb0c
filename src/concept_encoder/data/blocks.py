"""Documents -> token blocks: a deterministic train/validation split, tokenisation and packing.

- split: a document goes to validation when a hash of its text falls below `validation_fraction`;
  the split depends on nothing but the text (not the order, not the machine).
- packing "concat": documents joined by [SEP] into one stream, cut into full blocks that each start
  with [CLS]; no padding at all (only the tail of every 1,000-document chunk is dropped).
- packing "document": every block comes from one document, [CLS] chunk [SEP]; blocks have variable
  length and are padded per batch, grouped by length by the Trainer's sampler.
Everything runs as batched `datasets.map` over Arrow tables, so corpora larger than memory work
(`num_proc` workers). Each block carries its `index`, which keys the deterministic masking.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer

from .corpus import CorpusError

PACK_CHUNK = 1000  # documents per packing batch


@dataclass
class Blocks:
    train: datasets.Dataset | datasets.IterableDataset  # columns input_ids, length, index
    validation: datasets.Dataset
    train_documents: int  # -1 when streamed (unknown)
    validation_documents: int


def document_hash(text: str) -> float:
    """A stable uniform number in [0, 1) for a document."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_documents(
    documents: datasets.Dataset | list[str], validation_fraction: float
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hash-based document split of a `text` dataset; at least one document on each side."""
    if not isinstance(documents, datasets.Dataset):
        documents = datasets.Dataset.from_dict({"text": list(documents)})
    if len(documents) < 2:
        raise CorpusError(f"the corpus has {len(documents)} document(s); a train/validation split needs 2 or more")
    scored = documents.map(lambda b: {"_u": [document_hash(t) for t in b["text"]]}, batched=True)
    scores = np.asarray(scored["_u"])
    threshold = validation_fraction
    if not (scores < threshold).any():  # tiny corpora: hold out the lowest-scoring document
        threshold = float(np.partition(scores, 0)[0]) + 1e-12
    if (scores < threshold).all():
        threshold = float(scores.max())
    held_out = scores < threshold
    train = scored.select(np.flatnonzero(~held_out)).remove_columns("_u")
    validation = scored.select(np.flatnonzero(held_out)).remove_columns("_u")
    return train, validation


def plain_backend(tokenizer) -> Tokenizer | None:
    """A copy of the fast tokenizer's backend without its own truncation/padding (MiniLM truncates at 128)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def tokenize(texts: list[str], tokenizer, backend: Tokenizer | None = None) -> list[list[int]]:
    """Token ids per text, no special tokens (the Rust tokenizer batches across threads)."""
    if backend is not None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def start_and_end_ids(tokenizer) -> tuple[int, int]:
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return start, end if end is not None else start


def pack_concat(token_lists: list[list[int]], block_size: int, start_id: int, sep_id: int) -> np.ndarray:
    """[n_blocks, block_size]: [CLS] + block_size-1 tokens of the [SEP]-joined stream."""
    pieces = [np.asarray(ids + [sep_id], dtype=np.int64) for ids in token_lists]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    body = block_size - 1
    n_blocks = len(stream) // body
    blocks = np.empty((n_blocks, block_size), dtype=np.int64)
    blocks[:, 0] = start_id
    blocks[:, 1:] = stream[: n_blocks * body].reshape(n_blocks, body)
    return blocks


def pack_documents(token_lists: list[list[int]], block_size: int, start_id: int, sep_id: int) -> list[list[int]]:
    """One document per block: [CLS] chunk [SEP], chunks of at most block_size-2 tokens."""
    body = block_size - 2
    return [[start_id, *ids[i : i + body], sep_id] for ids in token_lists for i in range(0, len(ids), body)]


def _to_blocks(documents, tokenizer, block_size: int, packing: str, num_proc: int = 1):
    """Documents (a Dataset or an IterableDataset) -> blocks {input_ids, length, index}."""
    start_id, sep_id = start_and_end_ids(tokenizer)
    backend = plain_backend(tokenizer)
    pack = pack_concat if packing == "concat" else pack_documents

    def tokenize_and_pack(batch):
        blocks = pack(tokenize(batch["text"], tokenizer, backend), block_size, start_id, sep_id)
        return {"input_ids": [list(b) for b in blocks], "length": [len(b) for b in blocks]}

    if isinstance(documents, datasets.IterableDataset):  # lazily, as the Trainer reads
        packed = documents.map(tokenize_and_pack, batched=True, batch_size=PACK_CHUNK, remove_columns=["text"])
    else:
        packed = documents.map(
            tokenize_and_pack, batched=True, batch_size=PACK_CHUNK, remove_columns=documents.column_names,
            num_proc=num_proc if num_proc > 1 else None, desc=f"tokenising and packing ({packing})",
        )
    return packed.map(lambda b, idx: {"index": idx}, batched=True, with_indices=True)  # index keys the masks


def build_streaming_blocks(
    documents: datasets.IterableDataset,
    tokenizer,
    block_size: int,
    packing: str,
    validation_fraction: float,
    max_validation_blocks: int | None = None,
) -> Blocks:
    """Blocks from a document stream: training blocks stay a lazy stream (tokenised and packed as read);
    the first `max_validation_blocks` validation blocks are held in memory so every evaluation is the same.
    """
    def side(held_out: bool):
        return documents.filter(
            lambda b: [(document_hash(t) < validation_fraction) == held_out for t in b["text"]], batched=True
        )

    train = _to_blocks(side(False), tokenizer, block_size, packing)
    limit = max_validation_blocks or 1024
    rows = list(itertools.islice(iter(_to_blocks(side(True), tokenizer, block_size, packing)), limit))
    if not rows:
        raise CorpusError("the stream gave no validation blocks; raise data.validation_fraction")
    return Blocks(train, datasets.Dataset.from_list(rows), train_documents=-1, validation_documents=-1)


def build_blocks(
    documents: datasets.Dataset | list[str],
    tokenizer,
    block_size: int,
    packing: str,
    validation_fraction: float,
    max_validation_blocks: int | None = None,
    num_proc: int = 1,
) -> Blocks:
    train_docs, validation_docs = split_documents(documents, validation_fraction)
    train = _to_blocks(train_docs, tokenizer, block_size, packing, num_proc)
    validation = _to_blocks(validation_docs, tokenizer, block_size, packing, num_proc)
    if len(train) == 0 or len(validation) == 0:
        raise CorpusError(
            f"the corpus gives {len(train)} train and {len(validation)} validation blocks of {block_size} tokens; "
            "use more text, a smaller block_size or packing: document"
        )
    if max_validation_blocks is not None and len(validation) > max_validation_blocks:
        validation = validation.select(range(max_validation_blocks))
    return Blocks(train, validation, len(train_docs), len(validation_docs))


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def build_blocks_cached(documents, tokenizer, cache_dir, corpus_key: str, **settings) -> Blocks:
    """`build_blocks`, stored under `cache_dir` by a key of corpus, tokenizer and settings (atomic publish)."""
    key_text = json.dumps([corpus_key, tokenizer_fingerprint(tokenizer), settings, "v2"], sort_keys=True)
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
    return build_blocks_cached(documents, tokenizer, cache_dir, corpus_key, **settings)  # read back, memory-mapped
