"""A corpus file -> a vectors file (`.parquet` or `.npy`), streamed, batched and resumable.

Rows are read one chunk at a time (`data.rows`), each chunk is encoded in length-sorted batches and written as
one part file beside the output (`OUT.partial/part-<first row>.parquet`, atomically), so a killed run loses at
most the chunk in flight: run the same command again and it starts after the last part. When every row is
encoded the parts are joined into OUT (written to a temporary name, then renamed) and the partial folder goes.
A run resumes only into parts made with the same input file, model and settings; anything else is an error
that names the folder to delete.

Output: `.parquet` has columns `id` (the row's id field, or its row number) and `vector` (float32, a fixed-size
list of H for pooled vectors, a [C, H] tensor column for concepts); `.npy` holds the vectors alone, row i of the
array being input row i ([rows, H] or [rows, C, H]).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..data.rows import count_rows, iter_rows, row_format
from ..reporting import progress_bars
from ..rundir import write_atomic
from .encoder import EncoderError, encode, encode_concepts, load_encoder, max_tokens, model_source

OUTPUT_SUFFIXES = (".parquet", ".npy")
WHAT = ("pooled", "concepts")


@dataclass(frozen=True)
class EncodeSettings:
    """What the vectors depend on; a resumed run must match the parts it continues."""

    input: str
    input_bytes: int
    input_mtime_ns: int
    model: str
    weights: str | None
    pooling: str
    what: str
    normalize: bool
    max_length: int
    field: str
    id_field: str | None


def check_output(out: Path) -> None:
    if out.suffix not in OUTPUT_SUFFIXES:
        raise EncoderError(f"{out}: the output must end in one of {OUTPUT_SUFFIXES}")


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def encode_file(model_path: str | Path, input_path: str | Path, out: str | Path, *, pooling: str = "mean",
                what: str = "pooled", normalize: bool = True, field: str = "text", id_field: str | None = None,
                batch_size: int = 64, max_length: int | None = None, chunk_rows: int = 4096,
                progress: bool = True) -> dict:
    """Encode every row of `input_path` into `out`; returns a summary (rows, shape, resumed rows, output)."""
    input_path, out = Path(input_path), Path(out)
    check_output(out)
    row_format(input_path)  # an unsupported input is an error before the model loads
    if what not in WHAT:
        raise EncoderError(f"what must be one of {WHAT}, got {what!r}")
    if not input_path.is_file():
        raise EncoderError(f"{input_path}: no such input file")
    total = count_rows(input_path, field, id_field)  # a bad row fails here, before the model loads
    if total == 0:
        raise EncoderError(f"{input_path}: no rows to encode (field {field!r})")
    model, tokenizer = load_encoder(model_path, pooling)
    stat = input_path.stat()
    settings = EncodeSettings(str(input_path.resolve()), stat.st_size, stat.st_mtime_ns, model_source(model_path),
                              _weights_stamp(model_source(model_path)), pooling, what, normalize,
                              max_tokens(model, max_length), field, id_field)
    parts = partial_folder(out)
    done = _resume_point(parts, settings)

    chunk: list[tuple[str, str]] = []
    with tqdm(total=total, initial=done, unit="row", desc=f"encode {input_path.name}",
              disable=True if not progress else progress_bars()) as bar:
        for index, row in enumerate(iter_rows(input_path, field, id_field)):
            if index >= total:
                raise EncoderError(f"{input_path}: changed while it was being encoded ({total} rows counted)")
            if index >= done:
                chunk.append(row)
            if len(chunk) == chunk_rows or (chunk and index == total - 1):
                _write_part(parts, index + 1 - len(chunk), chunk, model, tokenizer, settings, batch_size)
                bar.update(len(chunk))
                chunk = []
    shape = _join_parts(parts, out, total)
    finished = parts.with_name(parts.name + ".done")  # renamed first: a kill while deleting leaves no stale parts
    os.replace(parts, finished)
    shutil.rmtree(finished)
    return {"output": str(out), "rows": total, "shape": list(shape), "resumed_from_row": done,
            "what": what, "pooling": pooling, "max_length": settings.max_length}


def _weights_stamp(source: str) -> str | None:
    """Size and mtime of a local model's weights, so a model retrained at the same path does not resume."""
    weights = sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    return ";".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights) or None


def _resume_point(parts: Path, settings: EncodeSettings) -> int:
    """The first row not yet written by an earlier run into `parts` (0 for a fresh start)."""
    recorded = parts / "settings.json"
    if not recorded.exists() or not _part_files(parts):  # nothing to continue: start (over) with these settings
        if parts.exists():
            shutil.rmtree(parts)
        parts.mkdir(parents=True)
        write_atomic(recorded, json.dumps(asdict(settings), indent=2))
        return 0
    earlier = json.loads(recorded.read_text(encoding="utf-8"))
    if earlier != asdict(settings):
        changed = sorted(k for k, v in asdict(settings).items() if earlier.get(k) != v)
        raise EncoderError(f"{parts}: holds parts of a run with other settings ({', '.join(changed)} differ); "
                           "delete that folder to start over, or rerun with the same settings to resume")
    return _contiguous_rows(parts)


def _contiguous_rows(parts: Path) -> int:
    """Rows in the part files, which must follow each other from row 0."""
    row = 0
    for part in _part_files(parts):
        if int(part.stem.removeprefix("part-")) != row:
            raise EncoderError(f"{parts}: parts are not contiguous at row {row} ({part.name}); delete the folder")
        row += pq.ParquetFile(part).metadata.num_rows
    return row


def _part_files(parts: Path) -> list[Path]:
    return sorted(parts.glob("part-*.parquet"))


def clipped(text: str, tokenizer, max_length: int, margin: int = 16) -> str:
    """The shortest prefix of `text` (doubling from 8 characters per token) that still holds max_length + margin
    tokens, so that one 5 MB line is not tokenised whole to keep its first max_length tokens; the margin keeps
    the cut word away from the tokens that are kept."""
    limit = 8 * (max_length + margin)
    while limit < len(text):
        if len(tokenizer(text[:limit], add_special_tokens=False)["input_ids"]) >= max_length + margin:
            return text[:limit]
        limit *= 2
    return text


@torch.no_grad()
def _vectors(texts: list[str], model, tokenizer, settings: EncodeSettings, batch_size: int) -> np.ndarray:
    """Vectors of one chunk, in its order."""
    if tokenizer is not None:  # a static (model2vec) model reads the whole text
        texts = [clipped(text, tokenizer, settings.max_length) for text in texts]
    if settings.what == "pooled":
        return encode(model, tokenizer, texts, batch_size, settings.max_length, settings.normalize).numpy()
    return encode_concepts(model, tokenizer, texts, batch_size, settings.max_length, settings.normalize).numpy()


def _write_part(parts: Path, first_row: int, chunk, model, tokenizer, settings: EncodeSettings, batch_size: int):
    vectors = _vectors([text for _, text in chunk], model, tokenizer, settings, batch_size)
    table = pa.table({"id": pa.array([row_id for row_id, _ in chunk], pa.string()), "vector": vector_column(vectors)})
    target = parts / f"part-{first_row:012d}.parquet"
    scratch = target.with_suffix(".tmp")
    pq.write_table(table, scratch)
    os.replace(scratch, target)  # a part is either whole or absent


def vector_column(vectors: np.ndarray) -> pa.Array:
    """[rows, H] -> a fixed-size list column; [rows, C, H] -> a fixed-shape tensor column."""
    if vectors.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(vectors))


def column_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The inverse of `vector_column`: [rows, H] or [rows, C, H] float32."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def read_vectors(path: str | Path) -> tuple[list[str] | None, np.ndarray]:
    """(ids or None, vectors) of an `encode` output file."""
    path = Path(path)
    if path.suffix == ".npy":
        return None, np.load(path, mmap_mode="r")
    table = pq.read_table(path)
    return table.column("id").to_pylist(), column_vectors(table.column("vector"))


def _join_parts(parts: Path, out: Path, total: int) -> tuple[int, ...]:
    files = _part_files(parts)
    if not files:
        raise EncoderError(f"{parts}: the input has no rows, so there is nothing to write")
    if _contiguous_rows(parts) != total:
        raise EncoderError(f"{parts}: the parts hold {_contiguous_rows(parts)} rows, the input {total}; delete the folder")
    scratch = out.with_name(f".{out.name}.tmp{out.suffix}")
    first = pq.read_table(files[0])
    row_shape = column_vectors(first.column("vector")).shape[1:]
    if out.suffix == ".npy":
        array = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(total, *row_shape))
        row = 0
        for file in files:
            vectors = column_vectors(pq.read_table(file, columns=["vector"]).column("vector"))
            array[row : row + len(vectors)] = vectors
            row += len(vectors)
        array.flush()
        del array
    else:
        with pq.ParquetWriter(scratch, first.schema) as writer:
            for file in files:
                writer.write_table(pq.read_table(file))
    os.replace(scratch, out)
    return (total, *row_shape)
