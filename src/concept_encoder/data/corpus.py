"""Text corpora as lists of documents, from the Hub or from local files.

A source is a Hub corpus name (optionally `:split`), or a file / glob. With a local data folder set,
known Hub names resolve into it (`wikitext-103-raw-v1:validation` -> `wikitext/wiki.valid.raw.gz`,
`JeanKaddour/minipile` -> `minipile/train.jsonl.gz`, the layout `concept-encoder data mirror` writes),
and relative paths resolve against it.

Local formats (gzip'd or not): `.jsonl` (one object per line, text in `text_field`), `.parquet`,
`.raw` (WikiText: one document per top-level ` = Title = ` heading), `.txt` (one document per
blank-line-separated paragraph).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

LOCAL_SUFFIXES = (".jsonl", ".parquet", ".raw", ".txt")


@dataclass(frozen=True)
class HubCorpus:
    path: str  # `datasets.load_dataset` path
    name: str | None  # its config name
    folder: str  # folder in the local data layout
    wikitext: bool = False  # line-per-row WikiText layout; local files `wiki.{train,valid,test}.raw.gz`


KNOWN_CORPORA = {
    "wikitext-103-raw-v1": HubCorpus("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext", wikitext=True),
    "wikitext-2-raw-v1": HubCorpus("Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext", wikitext=True),
    "JeanKaddour/minipile": HubCorpus("JeanKaddour/minipile", None, "minipile"),
    "openwebtext": HubCorpus("Skylion007/openwebtext", None, "openwebtext"),
    "wikimedia/wikipedia": HubCorpus("wikimedia/wikipedia", "20231101.en", "wikipedia"),
}
KNOWN_CORPORA["wikitext"] = KNOWN_CORPORA["wikitext-103-raw-v1"]
WIKITEXT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}


from ..errors import CorpusError
from .local import DATA_ENV_VAR


def split_source(source: str) -> tuple[str, str]:
    """`name:split` -> (name, split); the split defaults to train."""
    name, _, split = source.partition(":")
    return name, split or "train"


def load_documents(
    sources: list[str], data_dir: Path | None, text_field: str = "text", max_documents: int | None = None
) -> list[str]:
    """Every non-empty document of every source, in order, as a list (small corpora and tests)."""
    return list(load_corpus(sources, data_dir, text_field, max_documents)["text"])


def load_corpus(
    sources: list[str], data_dir: Path | None, text_field: str = "text", max_documents: int | None = None
) -> datasets.Dataset:
    """Every non-empty document of every source, in order, as a `datasets.Dataset` with one `text` column.

    Hub corpora stay memory-mapped Arrow tables; local files are read into memory.
    """
    parts = []
    for source in sources:
        part = _read_source(source, data_dir, text_field, max_documents)
        if not isinstance(part, datasets.Dataset):
            part = datasets.Dataset.from_dict({"text": [d for d in part if d.strip()]})
        else:
            part = part.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)
        if max_documents and len(part) > max_documents:
            part = part.select(range(max_documents))
        if len(part) == 0:
            raise CorpusError(f"corpus source {source!r} has no non-empty documents")
        parts.append(part)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def stream_corpus(sources: list[str], data_dir: Path | None, text_field: str = "text") -> datasets.IterableDataset:
    """The documents of every source as a stream: nothing is downloaded or held in memory ahead of use.

    Hub corpora stream from the Hub; local files (and known names resolved into the local folder) are
    read lazily, file by file. WikiText from the Hub is small and not streamed: use it without streaming.
    """
    files: list[Path] = []
    streams = []
    for source in sources:
        name, split = split_source(source)
        corpus = KNOWN_CORPORA.get(name)
        if corpus is not None and data_dir is not None:
            files.extend(_local_corpus_files(corpus, split, data_dir, source))
        elif (found := _match_files(source, data_dir)):
            files.extend(found)
        elif corpus is not None or (data_dir is None and "/" in name and not Path(name).suffix):
            corpus = corpus or HubCorpus(name, None, name.split("/")[-1])
            if corpus.wikitext:
                raise CorpusError(f"corpus source {source!r}: WikiText is small; load it with data.streaming: false")
            try:
                stream = datasets.load_dataset(corpus.path, corpus.name, split=split, streaming=True)
            except Exception as error:
                raise CorpusError(f"corpus {corpus.path} ({split}): cannot stream from the Hub ({error})") from None
            stream = stream.select_columns([text_field])
            streams.append(stream if text_field == "text" else stream.rename_column(text_field, "text"))
        else:
            raise CorpusError(f"corpus source {source!r}: no such file" + (
                "" if data_dir else f"; no data folder is set: point {DATA_ENV_VAR} or --data-dir at it"))
    if files:
        streams.insert(0, datasets.IterableDataset.from_generator(
            _documents_of, gen_kwargs={"files": files, "text_field": text_field},
            features=datasets.Features({"text": datasets.Value("string")}),
        ))
    stream = streams[0] if len(streams) == 1 else datasets.concatenate_datasets(streams)
    return stream.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)


def _documents_of(files: list[Path], text_field: str):
    for path in files:
        for text in read_local_file(Path(path), text_field):
            yield {"text": text}


def corpus_key(corpus: datasets.Dataset) -> str:
    """A key that changes when the corpus text changes (datasets' own fingerprint for Hub tables)."""
    if corpus.cache_files:
        return corpus._fingerprint
    digest = hashlib.blake2b(digest_size=16)
    for batch in corpus.iter(batch_size=1000):
        for text in batch["text"]:
            digest.update(text.encode("utf-8"))
            digest.update(b"\x00")
    return digest.hexdigest()


def _read_source(
    source: str, data_dir: Path | None, text_field: str, max_documents: int | None
) -> list[str] | datasets.Dataset:
    name, split = split_source(source)
    if name in KNOWN_CORPORA:
        corpus = KNOWN_CORPORA[name]
        if data_dir is not None:
            return _read_files(_local_corpus_files(corpus, split, data_dir, source), text_field)
        return _read_hub(corpus, split, text_field, max_documents)
    files = _match_files(source, data_dir)
    if files:
        return _read_files(files, text_field)
    if data_dir is None and "/" in source and not Path(source).suffix:
        return _read_hub(HubCorpus(name, None, name.split("/")[-1]), split, text_field, max_documents)
    where = (f" (relative paths resolve against the data folder {data_dir})" if data_dir else
             f" here, and no data folder is set: point {DATA_ENV_VAR} or --data-dir at the folder that holds it")
    raise CorpusError(f"corpus source {source!r}: no such file{where}")


def local_corpus_path(corpus: HubCorpus, split: str, data_dir: Path) -> Path:
    """Where a known Hub corpus lives in the local layout."""
    if corpus.wikitext:
        if split not in WIKITEXT_FILES:
            raise CorpusError(f"wikitext has no split {split!r}; splits: {sorted(WIKITEXT_FILES)}")
        return data_dir / corpus.folder / f"{WIKITEXT_FILES[split]}.gz"
    return data_dir / corpus.folder / f"{split}.jsonl.gz"


def _local_corpus_files(corpus: HubCorpus, split: str, data_dir: Path, source: str) -> list[Path]:
    path = local_corpus_path(corpus, split, data_dir)
    for candidate in (path, path.with_suffix("")):  # gzip'd or not
        if candidate.exists():
            return [candidate]
    raise CorpusError(
        f"corpus source {source!r}: {path} is not in the local data folder; "
        f"fill it with `concept-encoder data mirror {split_source(source)[0]} --to {data_dir}`"
    )


def _match_files(source: str, data_dir: Path | None) -> list[Path]:
    pattern = Path(source).expanduser()
    if not pattern.is_absolute() and data_dir is not None:
        pattern = data_dir / pattern
    return [Path(p) for p in sorted(glob.glob(str(pattern))) if Path(p).is_file()]


def _read_files(files: list[Path], text_field: str) -> list[str]:
    documents: list[str] = []
    for path in files:
        documents.extend(read_local_file(path, text_field))
    return documents


def read_local_file(path: Path, text_field: str = "text") -> list[str]:
    """The documents of one local corpus file."""
    suffix = Path(path.name.removesuffix(".gz")).suffix
    if suffix not in LOCAL_SUFFIXES:
        raise CorpusError(f"{path}: unsupported corpus file type {suffix!r}; use one of {LOCAL_SUFFIXES} (.gz or not)")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise CorpusError(f"{path}: no column {text_field!r} (columns: {table.column_names})")
        return [t for t in table.column(text_field).to_pylist() if t]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:  # one line naming the file and the line, not a codec traceback
        line = raw.count(b"\n", 0, error.start) + 1
        raise CorpusError(f"{path}, line {line}: not UTF-8 text ({error.reason} at byte {error.start}); "
                          "convert the file to UTF-8") from None
    if suffix == ".jsonl":
        return [_json_text(line, path, number, text_field)
                for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    return split_wikitext(text) if suffix == ".raw" else [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _json_text(line: str, path: Path, number: int, text_field: str) -> str:
    return json_record(line, path, number, text_field)[text_field]


def json_record(line: str, path: Path, number: int, text_field: str, error_type: type | None = None) -> dict:
    """One JSON-lines object holding a string `text_field`; else `error_type` (CorpusError) naming file and line."""
    error_type = error_type or CorpusError
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise error_type(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise error_type(f"{path}, line {number}: no string field {text_field!r}")
    return record


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $", re.MULTILINE)


def split_wikitext(text: str) -> list[str]:
    """WikiText raw text -> one document per article (top-level ` = Title = ` heading)."""
    starts = [m.start() for m in _WIKITEXT_TITLE.finditer(text)]
    if not starts:
        return [text.strip()] if text.strip() else []
    bounds = zip(starts, starts[1:] + [len(text)])
    return [text[a:b].strip() for a, b in bounds if text[a:b].strip()]


def _read_hub(
    corpus: HubCorpus, split: str, text_field: str, max_documents: int | None
) -> list[str] | datasets.Dataset:
    """A Hub corpus through `datasets`: downloaded once, then a memory-mapped Arrow table.

    With `max_documents`, only that many rows are read (streamed), not the whole corpus.
    """
    try:
        if max_documents and not corpus.wikitext:
            stream = datasets.load_dataset(corpus.path, corpus.name, split=split, streaming=True)
            return [row[text_field] for row in stream.take(max_documents)]
        table = datasets.load_dataset(corpus.path, corpus.name, split=split)
    except Exception as error:  # network, auth, unknown split: one clear line
        raise CorpusError(
            f"corpus {corpus.path} ({split}): cannot load from the Hub ({type(error).__name__}: {error}). "
            "Offline? Set --data-dir / CONCEPT_ENCODER_DATA to a mirrored data folder."
        ) from None
    if text_field not in table.column_names:
        raise CorpusError(f"corpus {corpus.path} ({split}): no column {text_field!r} (columns: {table.column_names})")
    if corpus.wikitext:  # one row per line: rebuild the articles
        return split_wikitext("".join(table[text_field]))
    table = table.select_columns([text_field])
    return table if text_field == "text" else table.rename_column(text_field, "text")


def mirror(names: list[str], to: Path, splits: tuple[str, ...] = ("train", "validation", "test"),
           max_documents: int | None = None) -> list[Path]:
    """Copy Hub corpora into the local layout (for offline clusters). Returns the files written."""
    written = []
    for source in names:
        name, split = split_source(source)
        corpus = KNOWN_CORPORA.get(name) or HubCorpus(name, None, name.split("/")[-1])
        for s in ([split] if ":" in source else splits):
            try:
                docs = _read_hub(corpus, s, "text", max_documents)
                docs = docs["text"] if isinstance(docs, datasets.Dataset) else docs
            except CorpusError as error:
                if ":" in source or s == "train":
                    raise
                print(f"skipping {name}:{s}: {error}")
                continue
            target = local_corpus_path(corpus, s, to)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with gzip.open(partial, "wt", encoding="utf-8") as handle:
                if corpus.wikitext:
                    handle.write("\n".join(docs) + "\n")
                else:
                    for doc in docs:
                        handle.write(json.dumps({"text": doc}) + "\n")
            partial.replace(target)  # atomic: a killed mirror leaves no half file under the real name
            written.append(target)
    return written
