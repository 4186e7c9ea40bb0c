"""A file of texts read one row at a time, for encoding a corpus larger than memory.

Formats (gzip'd or not): `.txt` (one text per line; an empty line is an empty text, so row i is line i + 1),
`.jsonl` (one object per line, text in `field`), `.tsv` / `.csv` (a header row; text in column `field`),
`.parquet` (column `field`, read in record batches). Every row yields (id, text): the id is the row's `id_field`
value when one is named, else its row number. A row that cannot be read stops the run with an error naming
the file and the line (or row).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

from .corpus import CorpusError, json_record

ROW_SUFFIXES = (".txt", ".jsonl", ".tsv", ".csv", ".parquet")


class RowError(CorpusError):
    """One input row that cannot be read (bad JSON, a missing field, bytes that are not UTF-8)."""


def row_format(path: Path) -> str:
    suffix = Path(Path(path).name.removesuffix(".gz")).suffix
    if suffix not in ROW_SUFFIXES:
        raise CorpusError(f"{path}: unsupported input file type {suffix!r}; use one of {ROW_SUFFIXES} (.gz or not)")
    return suffix


def iter_rows(path: str | Path, field: str = "text", id_field: str | None = None) -> Iterator[tuple[str, str]]:
    """(id, text) per row, in file order, streamed."""
    path = Path(path)
    suffix = row_format(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such input file")
    if suffix == ".parquet":
        yield from _parquet_rows(path, field, id_field)
        return
    with _open_text(path) as handle:
        lines = _decoded_lines(handle, path)
        if suffix == ".txt":
            if id_field:
                raise CorpusError(f"{path}: a .txt file has no fields, so no id field {id_field!r}")
            for number, line in lines:
                yield str(number - 1), line.rstrip("\n").rstrip("\r")
        elif suffix == ".jsonl":
            for number, line in lines:
                yield _json_row(line, path, number, field, id_field)
        else:
            yield from _table_rows(lines, path, "\t" if suffix == ".tsv" else ",", field, id_field)


def count_rows(path: str | Path, field: str = "text", id_field: str | None = None) -> int:
    """How many rows `iter_rows` yields (a streamed pass; a parquet file's footer says it without one)."""
    path = Path(path)
    if row_format(path) == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in iter_rows(path, field, id_field))


def _open_text(path: Path):
    """Bytes, split into lines by the caller, so that one bad byte names its line instead of the whole file."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decoded_lines(handle, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) with each line decoded on its own, so a bad byte names its line."""
    for number, raw in enumerate(handle, 1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise RowError(f"{path}, line {number}: not UTF-8 text (byte {error.start}: {error.reason})") from None
        yield number, line


def _json_row(line: str, path: Path, number: int, field: str, id_field: str | None) -> tuple[str, str]:
    if not line.strip():
        raise RowError(f"{path}, line {number}: an empty line (every line must hold one JSON object)")
    record = json_record(line, path, number, field, RowError)
    if id_field is None:
        return str(number - 1), record[field]
    if id_field not in record:
        raise RowError(f"{path}, line {number}: no id field {id_field!r}")
    return str(record[id_field]), record[field]


def _table_rows(lines, path: Path, delimiter: str, field: str, id_field: str | None):
    csv.field_size_limit(2**31 - 1)  # long documents are what this reads; the module's default is 128 KiB
    reader = csv.reader((line for _, line in lines), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    try:
        yield from _checked_table_rows(reader, path, field, id_field)
    except csv.Error as error:
        raise RowError(f"{path}, line {reader.line_num}: {error}") from None


def _checked_table_rows(reader, path: Path, field: str, id_field: str | None):
    header = next(reader, None)
    if header is None:
        raise RowError(f"{path}: empty file (a header row is expected)")
    for name in (field, id_field):
        if name is not None and name not in header:
            raise CorpusError(f"{path}: no column {name!r} in the header {header}")
    text_at = header.index(field)
    id_at = header.index(id_field) if id_field else None
    for index, row in enumerate(reader):
        if len(row) != len(header):
            raise RowError(f"{path}, row {index + 1} (line {reader.line_num}): {len(row)} fields, "
                           f"the header has {len(header)}")
        yield (str(index) if id_at is None else row[id_at]), row[text_at]


def _parquet_rows(path: Path, field: str, id_field: str | None):
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    for name in (field, id_field):
        if name is not None and name not in file.schema_arrow.names:
            raise CorpusError(f"{path}: no column {name!r} (columns: {file.schema_arrow.names})")
    index = 0
    for batch in file.iter_batches(columns=[c for c in (field, id_field) if c], batch_size=4096):
        ids = batch.column(id_field).to_pylist() if id_field else None
        for i, text in enumerate(batch.column(field).to_pylist()):
            if not isinstance(text, str):
                raise RowError(f"{path}, row {index}: column {field!r} holds {text!r}, not a string")
            yield (str(index) if ids is None else str(ids[i])), text
            index += 1
