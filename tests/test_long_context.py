"""The long-context proxy (`article_halves`) on the data folder's held-out Wikipedia articles, its scoring, the
SCROLLS row parsing, and the `long-context` verb end to end."""

import numpy as np
import pytest

from concept_encoder.cli import main
from concept_encoder.data import resolve_data_dir
from concept_encoder.evaluation.long_context import (
    Contender,
    article_halves,
    quality_options,
    retrieval_scores,
    run_halves,
    split_query,
)


@pytest.fixture(scope="module")
def task(tokenizer):
    return article_halves(resolve_data_dir(), lengths=(128, 512), max_articles=40, tokenizer=tokenizer)


def test_halves_are_exact_token_spans_of_the_article(task, tokenizer):
    assert len(task.doc_ids) == 40 and len(set(task.doc_ids)) == 40
    for n in task.lengths:
        queries, targets = task.halves[n]
        for q, t in zip(queries[:10], targets[:10]):
            assert len(tokenizer(q, add_special_tokens=False)["input_ids"]) == pytest.approx(n // 2, abs=1)
            assert len(tokenizer(t, add_special_tokens=False)["input_ids"]) == pytest.approx(n // 2, abs=1)
    short_q, long_q = task.halves[128][0][0], task.halves[512][0][0]
    assert long_q.startswith(short_q)  # a longer N reads further into the same article


def test_retrieval_scores_on_a_hand_computed_case():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    targets = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [-1.0, 3.0]])
    # cosines: q0's own target 0.995 < t1's 1 (2nd); q1's own 0 < t0, t2, t3 (4th); q2's own 0.707 < t0's 0.774
    # and ties t1's 0.707, which counts against it (3rd); q3's own 0.949 < t2's 1 (2nd)
    scores = retrieval_scores(queries, targets)
    assert scores["accuracy"] == 0.0
    assert scores["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 3 + 1 / 2) / 4)
    assert retrieval_scores(targets, targets) == {"accuracy": 1.0, "mrr": 1.0}
    collapsed = np.ones((5, 3))  # every text one vector: no query finds its own
    assert retrieval_scores(collapsed, collapsed)["accuracy"] == 0.0


def test_tfidf_finds_second_halves_far_above_chance(task):
    result = run_halves(task, [Contender("TF-IDF", "tfidf")], log=lambda *_: None)
    by_length = result["contenders"][0]["by_length"]
    assert result["chance"] == 1 / 40
    assert by_length["512"]["accuracy"] > 0.7 and by_length["512"]["accuracy"] >= by_length["128"]["accuracy"] - 0.05


def test_scrolls_rows_split_into_query_and_document():
    nli = {"id": "x", "input": "Receiving Party shall not disclose.\n\nNON-DISCLOSURE AGREEMENT\n\n1. Terms (D) apply."}
    assert split_query(nli) == ("Receiving Party shall not disclose.", "NON-DISCLOSURE AGREEMENT\n\n1. Terms (D) apply.")
    quality = {"id": "y", "input": "Why did he leave?\n\n(A) fear\n(B) money\n(C) love\n(D) duty\n\nTHE STORY\n\nIt began."}
    query, document = split_query(quality, with_options=True)
    assert document == "THE STORY\n\nIt began."
    assert quality_options(query) == ("Why did he leave?", ["fear", "money", "love", "duty"])


def test_long_context_verb_writes_its_section(tmp_path, tokenizer):
    from concept_encoder import ConceptEncoderConfig, ConceptEncoderForMaskedLM

    model = tmp_path / "rotary"
    config = ConceptEncoderConfig(vocab_size=tokenizer.vocab_size, num_concepts=8, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128, position_embedding_type="rotary")
    ConceptEncoderForMaskedLM(config).save_pretrained(model)
    tokenizer.save_pretrained(model)
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept text\n")
    assert main(["long-context", str(model), "--lengths", "128", "1024", "--articles", "12", "--no-references",
                 "--also-truncated", "64", "--also-chunked", "32", "--results-file", str(results),
                 "--output", str(tmp_path / "lc.json")]) == 0
    text = results.read_text()
    assert "kept text" in text and "<!-- long-context -->" in text and "| N=128 | N=1024 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| concept encoder `rotary`")]
    # accuracy, then seconds: pooled, late interaction over concepts, pooled reading the first 64 tokens, and the
    # whole half read in 32-token chunks
    assert len(rows) == 8 and "| all |" in rows[0] and "(late interaction) | all |" in rows[1]
    assert "| first 64 tokens |" in rows[2] and "| all, 32-token chunks averaged |" in rows[3]
    assert "--also-chunked 32" in text


def test_bm25_and_chunk_averaged_minilm_find_second_halves(task):
    """The baselines users would pick instead, on the same task: BM25 over the whole half, and all-MiniLM-L6-v2
    chunk-and-averaged over it (256-token chunks), both far above chance (1/40) at N = 512."""
    from concept_encoder.evaluation.long_context import REFERENCE_TOKENIZER

    rows = [Contender("BM25", "bm25"), Contender("MiniLM chunked", "model", REFERENCE_TOKENIZER, chunk=256)]
    result = run_halves(task, rows, log=lambda *_: None)
    bm25, chunked = (c["by_length"]["512"]["accuracy"] for c in result["contenders"])
    assert bm25 > 0.7 and chunked > 0.5, (bm25, chunked)
    assert result["contenders"][1]["reads"] == "all, 256-token chunks averaged"


def test_bm25_scores_are_bm25s_own(task):
    import bm25s

    from concept_encoder.evaluation.long_context import bm25_scores

    queries, targets = task.halves[128]
    scores = bm25_scores(queries[:3], targets)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(targets, stopwords="en", show_progress=False), show_progress=False)
    docs, values = retriever.retrieve(bm25s.tokenize(queries[:1], stopwords="en", show_progress=False),
                                      k=len(targets), show_progress=False)
    assert np.allclose(scores[0][docs[0]], values[0], atol=1e-5)
