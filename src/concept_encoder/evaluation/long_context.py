"""Long inputs: does reading more of a document help, and what does each encoder pay as N grows?

Local proxy task `article_halves` (real text, no Hub): the Wikipedia articles of the data folder's extracts that
the long-context contender never trained on (`corpus_extra/enwiki_extract_02..05`), those at least N_max
WordPiece tokens long (all-MiniLM-L6-v2's tokenizer measures every length, so every encoder reads the same
text). At length N each article is cut to its first N tokens; the query is the first half, the target the second
half. An encoder embeds every half on its own; the task is to find each query's own second half among all the
articles' second halves (accuracy@1, chance 1/articles; MRR beside it). It is a proxy for long-document
understanding: a topic and its vocabulary carry across the halves, so TF-IDF is the bar to beat, and an encoder
that truncates (MiniLM at 512 tokens) sees only the start of each half.

Hub tasks (SCROLLS, Shaham et al. 2022, `tau/scrolls`), frozen-encoder protocols:
- `contract_nli`: hypothesis + contract -> entailment / contradiction / not mentioned; logistic regression on
  [u, v, |u - v|, u * v] of the two embeddings, fit on train, accuracy on validation;
- `quality`: a question with four options over a long story, as classification: the option whose embedding
  (question + option) is nearest to the story's; accuracy on validation (chance 25%).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.tasks import TaskError
from ..rundir import code_version

HELD_OUT_ARTICLES = tuple(f"corpus_extra/enwiki_extract_0{i}.jsonl.gz" for i in range(2, 6))
REFERENCE_TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"
LENGTHS = (512, 1024, 2048, 4096, 8192)
CHUNK_BATCH_TOKENS = 2048  # chunk-and-average batches: 8 chunks of 256 tokens (MiniLM), 64 of 32 (a short-window model)


@dataclass(frozen=True)
class HalvesTask:
    """Per length N: the first and second halves of every article's first N tokens."""

    lengths: tuple[int, ...]
    doc_ids: list[str]
    halves: dict[int, tuple[list[str], list[str]]]  # N -> (queries, targets)


def article_halves(data_dir: Path, lengths=LENGTHS, max_articles: int | None = 200, tokenizer=None) -> HalvesTask:
    """The articles at least max(lengths) tokens long (file order, the first `max_articles`), cut at each N."""
    if tokenizer is None:
        from ..inference.encoder import model_source, model_tokenizer

        tokenizer = model_tokenizer(model_source(REFERENCE_TOKENIZER))
    longest = max(lengths)
    doc_ids, cuts = [], []
    for name in HELD_OUT_ARTICLES:
        path = Path(data_dir) / name
        if not path.exists():
            raise TaskError(f"{path}: the long-context task reads it; it is part of the local data folder")
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                text = record["text"]
                if len(text) < 3 * longest:  # cheap: far too few characters for `longest` tokens
                    continue
                offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
                if len(offsets) < longest:
                    continue
                # the text of tokens [a, b): from token a's first character to token b-1's last
                cuts.append((text, offsets))
                doc_ids.append(record["doc_id"])
                if max_articles and len(doc_ids) == max_articles:
                    break
        if max_articles and len(doc_ids) == max_articles:
            break
    if len(doc_ids) < 10:
        raise TaskError(f"only {len(doc_ids)} articles of >= {longest} tokens in {HELD_OUT_ARTICLES}")

    def span(text: str, offsets, a: int, b: int) -> str:
        return text[offsets[a][0] : offsets[b - 1][1]]

    halves = {n: ([span(t, o, 0, n // 2) for t, o in cuts], [span(t, o, n // 2, n) for t, o in cuts])
              for n in lengths}
    return HalvesTask(tuple(lengths), doc_ids, halves)


def retrieval_scores(queries: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Each query's own target (same row) among all targets, by cosine: accuracy@1 and MRR."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    t = targets / np.linalg.norm(targets, axis=1, keepdims=True).clip(1e-12)
    return ranking_scores(q @ t.T)


def ranking_scores(similarity: np.ndarray) -> dict[str, float]:
    """Accuracy@1 and MRR of a [queries, targets] score matrix whose diagonal holds each query's own target."""
    own = np.diag(similarity)
    # 0 = first; a tie counts against the query, so an encoder that maps everything to one vector scores 0
    rank = (similarity > own[:, None]).sum(axis=1) + (similarity == own[:, None]).sum(axis=1) - 1
    return {"accuracy": float((rank == 0).mean()), "mrr": float((1.0 / (rank + 1)).mean())}


# ------------------------------------------------------------------------------------------ encoders
Embed = Callable[[list[str]], np.ndarray]  # texts -> vectors, truncated as the encoder does


def tfidf_pair_embedder(queries: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF (sublinear tf, IDF from every half of the task, no labels) of both sides; the whole text is read."""
    from .baselines import tfidf_vectoriser

    vectoriser = tfidf_vectoriser(queries + targets, ngrams=1)  # the TF-IDF cosine baseline's own settings
    return vectoriser.transform(queries), vectoriser.transform(targets)


def bm25_scores(queries: list[str], targets: list[str]) -> np.ndarray:
    """BM25 (`bm25s`, Lucene's variant, k1 1.5, b 0.75, English stop words) of every query against the targets
    as the indexed corpus [queries, targets]; the whole text is read."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(targets, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    return np.stack([retriever.get_scores(query) for query in tokens])


class ModelEmbedder:
    """Texts -> vectors of a concept encoder, an HF encoder or a static (model2vec) model, loaded once, truncated
    per call: pooled vectors, the mean of `chunk`-token chunks' vectors, or the concepts (`scoring: maxsim`)."""

    def __init__(self, model_path: str, pooling: str = "mean", batch_size: int = 8):
        from ..inference.encoder import load_encoder
        from ..inference.static import StaticEncoder

        self.model, self.tokenizer = load_encoder(model_path, pooling)
        self.static = isinstance(self.model, StaticEncoder)  # reads the whole text, no positions
        self.batch_size = batch_size
        self(["warm up: the first call's one-off costs stay out of the timings"], 16)

    def limit(self, n: int, max_length: int | None) -> int:
        """The truncation for an N-token document's halves: `max_length` when set; else the whole half, in this
        model's own tokenizer (the halves are cut in MiniLM's WordPiece: a smaller vocabulary makes more tokens
        of the same text, so 4x the half is room for all of it), capped by a learned position table."""
        if max_length is not None:
            return max_length
        if self.static or getattr(self.model.config, "position_embedding_type", "absolute") == "rotary":
            return 4 * (n // 2) + 2
        return min(4 * (n // 2) + 2, self.model.config.max_position_embeddings)

    def __call__(self, texts: list[str], max_length: int) -> np.ndarray:
        from ..inference.encoder import encode

        return encode(self.model, self.tokenizer, texts, batch_size=self.batch_size, max_length=max_length).numpy()

    def similarity(self, queries: list[str], targets: list[str], contender: Contender, n: int) -> np.ndarray:
        """[queries, targets] scores as `contender` reads and compares."""
        from ..inference.encoder import encode_chunked, encode_concepts
        from ..inference.scoring import late_interaction_matrix

        if contender.chunk is not None:  # batches of CHUNK_BATCH_TOKENS, whatever the chunk's size
            batch = max(1, CHUNK_BATCH_TOKENS // contender.chunk)
            q, t = (encode_chunked(self.model, self.tokenizer, texts, contender.chunk, batch).numpy()
                    for texts in (queries, targets))
            return q @ t.T
        limit = self.limit(n, contender.max_length)
        if contender.scoring == "maxsim":
            q, t = (encode_concepts(self.model, self.tokenizer, texts, self.batch_size, limit)
                    for texts in (queries, targets))
            return late_interaction_matrix(q, t).numpy()
        q, t = self(queries, limit), self(targets, limit)
        return q @ t.T


@dataclass(frozen=True)
class Contender:
    """A row of the long-context table."""

    name: str
    kind: str  # "tfidf" | "bm25" | "model"
    model: str | None = None
    max_length: int | None = None  # truncation; None: reads the whole half
    chunk: int | None = None  # chunk-and-average: the half in consecutive chunks of this many tokens, vectors averaged
    scoring: str = "pooled"  # pooled: cosine of pooled vectors | maxsim: late interaction over concepts


def run_halves(task: HalvesTask, contenders: list[Contender], log=print) -> dict:
    """Accuracy, MRR and seconds per 1,000 halves of every contender at every length."""
    results: dict = {"task": "article_halves", "articles": len(task.doc_ids), "lengths": list(task.lengths),
                     "source": list(HELD_OUT_ARTICLES), "chance": 1 / len(task.doc_ids), "machine": machine(),
                     "chunk_batch_tokens": CHUNK_BATCH_TOKENS, "contenders": []}
    embedders: dict[str, ModelEmbedder] = {}  # rows of one model share it (pooled, chunked, maxsim)
    for contender in contenders:
        if contender.kind == "model" and contender.model not in embedders:
            embedders.clear()  # one model in memory at a time
            embedders[contender.model] = ModelEmbedder(contender.model)
        embedder = embedders.get(contender.model) if contender.kind == "model" else None
        row = {}
        for n in task.lengths:
            queries, targets = task.halves[n]
            start = time.perf_counter()
            if contender.kind == "tfidf":
                q, t = tfidf_pair_embedder(queries, targets)  # rows L2-normalised: the product is the cosine
                similarity = (q @ t.T).toarray()
            elif contender.kind == "bm25":
                similarity = bm25_scores(queries, targets)
            else:
                similarity = embedder.similarity(queries, targets, contender, n)
            seconds = time.perf_counter() - start
            row[str(n)] = ranking_scores(similarity) | {"seconds_per_1000": 1000 * seconds / (2 * len(queries))}
            log(f"{contender.name:<44} {_reads(contender, embedder):<18} N={n:>5}  "
                f"acc@1 {100 * row[str(n)]['accuracy']:5.1f}  {row[str(n)]['seconds_per_1000']:8.1f} s/1k halves")
        results["contenders"].append({"name": contender.name, "kind": contender.kind, "model": contender.model,
                                      "reads": _reads(contender, embedder), "scoring": contender.scoring,
                                      "by_length": row})
    return results


def _reads(contender: Contender, embedder: ModelEmbedder | None) -> str:
    if contender.chunk is not None:
        return f"all, {contender.chunk}-token chunks averaged"
    if contender.max_length is not None:
        return f"first {contender.max_length} tokens"
    config = embedder.model.config if embedder is not None and not embedder.static else None
    if config is None or getattr(config, "position_embedding_type", "absolute") == "rotary":
        return "all"
    return f"first {config.max_position_embeddings} tokens (position table)"


def halves_tables(results: dict) -> str:
    """Two markdown tables: accuracy@1 x 100 and seconds per 1,000 halves, contenders by N."""
    from ..reporting import markdown_table

    lengths = results["lengths"]
    header = ["contender", "reads", *(f"N={n}" for n in lengths)]
    accuracy, seconds = [], []
    for c in results["contenders"]:
        name, reads = c["name"], c["reads"]
        accuracy.append([name, reads, *(f"{100 * c['by_length'][str(n)]['accuracy']:.1f}" for n in lengths)])
        seconds.append([name, reads, *(f"{c['by_length'][str(n)]['seconds_per_1000']:.1f}" for n in lengths)])
    chance = f"{100 * results['chance']:.1f}"
    return "\n".join([
        f"Accuracy@1 × 100 (each article's second half found among {results['articles']}; chance {chance}):", "",
        markdown_table(header, accuracy, 2), "",
        (f"Seconds per 1,000 halves (each half is N/2 tokens; encoding, or TF-IDF fit + transform; "
         f"{results['machine']}"
         + (f"; chunked rows in batches of {results['chunk_batch_tokens']:,} tokens" if "chunk_batch_tokens" in results
            else "") + "):"), "",
        markdown_table(header, seconds, 2)])


def machine() -> str:
    """The CPU (or GPU) the timings were taken on, in words."""
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, batch 8"
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        name = found.group(1).strip() if found else name
    return f"{name}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, batch 8"


# ------------------------------------------------------------------------------------------ SCROLLS (Hub)
SCROLLS_TASKS = ("contract_nli", "quality")
_QUALITY_OPTION = re.compile(r"\s*\(([A-D])\)\s*")


SCROLLS_URL = "https://huggingface.co/datasets/tau/scrolls/resolve/main/{config}.zip"


def scrolls_split(config: str, split: str) -> list[dict]:
    """SCROLLS rows (`id`, `pid`, `input`, `output`) from the Hub. `tau/scrolls` is a loading script, which
    `datasets` 4+ no longer runs, so the JSON lines are read from the dataset's own zip files."""
    if config not in SCROLLS_TASKS:
        raise TaskError(f"SCROLLS task must be one of {SCROLLS_TASKS}, got {config!r}")
    import datasets

    url = f"zip://{config}/{split}.jsonl::{SCROLLS_URL.format(config=config)}"
    try:
        rows = datasets.load_dataset("json", data_files={split: url}, split=split)
    except Exception as error:  # noqa: BLE001 - offline, or the file moved: say which, and where the proxy is
        raise TaskError(f"tau/scrolls {config} ({split}): cannot load {url} ({type(error).__name__}: "
                        f"{error}); offline, the long-context proxy is `article_halves`") from None
    return list(rows)


def split_query(row: dict, with_options: bool = False) -> tuple[str, str]:
    """(query, document) of a SCROLLS input: the query is prepended to the document with a blank line (for
    QuALITY the query is the question, a blank line, and the options (A)-(D), one per line)."""
    text = row["input"]
    after = text.find("(D)") if with_options else 0  # QuALITY: the blank line after the last option
    cut = text.find("\n\n", max(after, 0))
    if cut < 0:
        raise TaskError(f"SCROLLS row {row.get('id')}: no blank line between the query and the document")
    return text[:cut].strip(), text[cut + 2 :].strip()


def quality_options(query: str) -> tuple[str, list[str]]:
    """(question, the four option texts) of a QuALITY query: `question (A) ... (B) ... (C) ... (D) ...`."""
    parts = _QUALITY_OPTION.split(query)
    if len(parts) != 9:
        raise TaskError(f"QuALITY query without four (A)-(D) options: {query[:120]!r}")
    return parts[0].strip(), [" ".join(parts[i].split()) for i in (2, 4, 6, 8)]


def run_scrolls(config: str, embed: Embed, max_examples: int | None = None) -> dict:
    """A frozen-encoder SCROLLS score (see the module docstring); `embed` truncates as its encoder does."""
    validation = scrolls_split(config, "validation")[:max_examples]
    if config == "quality":
        correct = 0
        for row in validation:
            question, document = split_query(row, with_options=True)
            question, options = quality_options(question)
            doc = embed([document])
            opts = embed([f"{question} {o}" for o in options])
            correct += int(options[int(np.argmax(opts @ doc[0]))] == " ".join(row["output"].split()))
        return {"task": config, "accuracy": correct / len(validation), "n": len(validation)}
    from sklearn.linear_model import LogisticRegression

    def features(rows):
        queries, documents = zip(*(split_query(r) for r in rows))
        u, v = embed(list(queries)), embed(list(documents))
        return np.concatenate([u, v, np.abs(u - v), u * v], axis=1), [r["output"].strip() for r in rows]

    train = scrolls_split(config, "train")[:max_examples]
    x, y = features(train)
    classifier = LogisticRegression(max_iter=2000).fit(x, y)
    x_val, y_val = features(validation)
    return {"task": config, "accuracy": float((classifier.predict(x_val) == np.array(y_val)).mean()),
            "n": len(validation), "labels": sorted(set(y))}


# ------------------------------------------------------------------------------------------ the whole comparison
BASELINES = ("tfidf", "bm25", "minilm", "minilm-chunked")


def concept_rows(model: str, name: str | None = None, truncated: tuple[int, ...] = (),
                 chunked: tuple[int, ...] = ()) -> list[Contender]:
    """A concept encoder's rows: reading the whole half (or as far as its position table goes), pooled and at the
    concept level (late interaction); again reading only the first `truncated` tokens (does reading further help
    it?); and reading the whole half in `chunked`-token chunks, their pooled vectors averaged (a model with a
    position table, trained on short windows, reads a long text as its windows)."""
    label = f"concept encoder `{name or Path(model).name}`"
    return [Contender(f"{label} (mean of concepts)", "model", str(model)),
            Contender(f"{label} (late interaction)", "model", str(model), scoring="maxsim"),
            *(Contender(f"{label} (mean of concepts)", "model", str(model), n) for n in truncated),
            *(Contender(f"{label} (mean of concepts)", "model", str(model), chunk=n) for n in chunked)]


def contenders_for(models: list[str], references: bool = True, truncated: tuple[int, ...] = (),
                   static: str | None = None, baselines: tuple[str, ...] = BASELINES,
                   chunked: tuple[int, ...] = ()) -> list[Contender]:
    """The baselines users would pick instead (`baselines`, with `references`): TF-IDF, BM25, MiniLM truncated at
    256 (its sentence-transformers default) and 512 (its position table), MiniLM chunk-and-averaged over the whole
    half (256-token chunks); the model2vec student of MiniLM (`static`, a folder from `static-student`). Then each
    concept encoder's `concept_rows`."""
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise TaskError(f"unknown long-context baseline(s) {unknown}; choose from {list(BASELINES)}")
    chosen = set(baselines) if references else set()
    rows = [Contender("TF-IDF cosine", "tfidf")] if "tfidf" in chosen else []
    rows += [Contender("BM25 (bm25s)", "bm25")] if "bm25" in chosen else []
    if "minilm" in chosen:
        rows += [Contender("all-MiniLM-L6-v2 (mean of tokens)", "model", REFERENCE_TOKENIZER, n) for n in (256, 512)]
    if "minilm-chunked" in chosen:
        rows += [Contender("all-MiniLM-L6-v2 (mean of tokens)", "model", REFERENCE_TOKENIZER, chunk=256)]
    if static is not None:
        rows += [Contender(f"model2vec student `{Path(static).name}`", "model", str(static))]
    for model in models:
        rows += concept_rows(model, truncated=truncated, chunked=chunked)
    return rows


def run_long_context(models: list[str], data_dir: Path, lengths=LENGTHS, max_articles: int = 200,
                     references: bool = True, truncated: tuple[int, ...] = (), scrolls: tuple[str, ...] = (),
                     static: str | None = None, baselines: tuple[str, ...] = BASELINES,
                     chunked: tuple[int, ...] = (), log=print) -> dict:
    """The local proxy at every length for every contender, then each SCROLLS task asked for (Hub)."""
    contenders = contenders_for(models, references, truncated, static, baselines, chunked)
    results = run_halves(article_halves(data_dir, lengths, max_articles), contenders, log)
    for config in scrolls:
        results.setdefault("scrolls", {})[config] = {
            f"{c.name}, {c.max_length or 'all'}": run_scrolls(
                config, _truncating(ModelEmbedder(c.model), c.max_length or 4 * max(lengths)))
            for c in contenders if c.kind == "model" and c.scoring == "pooled" and c.chunk is None}
    return results


def _truncating(embedder: ModelEmbedder, max_length: int) -> Embed:
    return lambda texts: embedder(texts, max_length)


def long_context_section(results: dict, command: str) -> str:
    """The long-context tables for docs/results.md, with how they were made."""
    lines = [f"_Generated by `{command}` on {time.strftime('%Y-%m-%d')} at commit {code_version()}; task "
             "`article_halves` on "
             f"{results['articles']} Wikipedia articles of "
             f"`{results['source'][0]}`..`{Path(results['source'][-1]).name}` (none in any contender's training "
             "text)._", "", halves_tables(results)]
    for config, by_model in results.get("scrolls", {}).items():
        scores = "; ".join(f"{name} {100 * r['accuracy']:.1f}" for name, r in by_model.items())
        lines += ["", f"SCROLLS `{config}` (validation accuracy × 100): {scores}"]
    return "\n".join(lines) + "\n"
