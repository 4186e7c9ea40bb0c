"""From a trained model to vectors: the sentence-transformers export, the corpus encoder (`encode`) and the MTEB
runner, each checked against the project's own zero-shot path on real STS-B dev sentences."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from concept_encoder.cli import main
from concept_encoder.data import resolve_data_dir
from concept_encoder.inference.corpus import partial_folder, read_vectors
from concept_encoder.inference.encoder import encode, load_encoder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MICRO = Path(__file__).resolve().parents[1] / "configs" / "micro" / "perceiver_mlm_L6.yaml"


def stsb_dev_sentences() -> list[str]:
    with gzip.open(resolve_data_dir() / "stsb" / "dev.tsv.gz", "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row["sentence1"] for row in rows] + [row["sentence2"] for row in rows]


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return stsb_dev_sentences()  # 3,000 real sentences


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """The micro Perceiver-MLM twin, 40 steps (its own 4k WordPiece tokenizer travels in the run folder)."""
    root = tmp_path_factory.mktemp("micro")
    steps = ["training.max_steps=40", "training.eval_steps=40", "training.save_steps=40", "training.run_name=m"]
    assert main(["pretrain", str(MICRO), "--output-dir", str(root), *(a for s in steps for a in ("--set", s))]) == 0
    return root / "m"


@pytest.fixture(scope="module")
def minilm_concepts(tmp_path_factory, tokenizer) -> Path:
    """MiniLM's first two layers under 8 concepts (untrained concepts: the export must carry the backbone)."""
    from concept_encoder import ConceptEncoderForMaskedLM

    folder = tmp_path_factory.mktemp("minilm_concepts")
    ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=2, num_concepts=8, hidden_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=128).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weighted_checkpoint(tmp_path_factory, trained_run) -> Path:
    """The trained encoder under the pair head's weighted pooling (what `evaluate --keep-models` saves)."""
    from transformers import AutoTokenizer

    from concept_encoder.modeling import ConceptEncoderForSentencePairClassification

    folder = tmp_path_factory.mktemp("weighted")
    model = ConceptEncoderForSentencePairClassification.from_pretrained(trained_run / "model", cosine_only=True)
    with torch.no_grad():  # a pooling that is not the init's, so a pooling the export dropped would show
        model.pooling.apply(lambda m: [p.normal_(0, 0.5) for p in m.parameters(recurse=False)])
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(trained_run / "tokenizer").save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("source, pooling", [("trained", "mean"), ("trained", "decoder"), ("weighted", "weighted"),
                                             ("minilm", "mean")])
def test_exported_model_encodes_as_zero_shot_does(tmp_path, sentences, trained_run, minilm_concepts,
                                                  weighted_checkpoint, source, pooling):
    from sentence_transformers import SentenceTransformer

    model_path = {"trained": trained_run, "weighted": weighted_checkpoint, "minilm": minilm_concepts}[source]
    out = tmp_path / "st"
    assert main(["export", str(model_path), "--to", str(out), "--pooling", pooling]) == 0
    st = SentenceTransformer(str(out), trust_remote_code=True, local_files_only=True, device="cpu")
    theirs = st.encode(sentences, batch_size=64, convert_to_numpy=True)
    model, tok = load_encoder(model_path, pooling)
    ours = encode(model, tok, sentences).numpy()
    assert theirs.shape == ours.shape == (len(sentences), 64)
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["ConceptEncoderModule", "ConceptPooling", "Normalize"]


def test_mteb_scores_an_exported_folder_with_its_own_pooling(tmp_path, sentences, trained_run):
    """An export made with decoder pooling is scored by mteb with that pooling, not rebuilt as mean pooling."""
    from concept_encoder.evaluation.mteb_runner import mteb_model

    assert main(["export", str(trained_run), "--to", str(tmp_path / "st"), "--pooling", "decoder"]) == 0
    theirs = mteb_model(tmp_path / "st").encode(sentences[:200], convert_to_numpy=True)
    model, tok = load_encoder(trained_run, "decoder")
    np.testing.assert_allclose(theirs, encode(model, tok, sentences[:200]).numpy(), atol=1e-5, rtol=0)


def test_export_refuses_a_plain_encoder_and_a_full_folder(tmp_path, trained_run):
    assert main(["export", MINILM, "--to", str(tmp_path / "a")]) == 2
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    assert main(["export", str(trained_run), "--to", str(tmp_path / "b")]) == 2
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------ encode
@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, sentences) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "sentences.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i, text in enumerate(sentences):
            handle.write(json.dumps({"doc_id": f"stsb-{i}", "text": text}) + "\n")
    return path


def test_encode_writes_what_zero_shot_computes(tmp_path, corpus_file, sentences, trained_run):
    out = tmp_path / "v.parquet"
    assert main(["encode", str(trained_run), str(corpus_file), "--out", str(out), "--id-field", "doc_id",
                 "--chunk-rows", "700", "--quiet"]) == 0
    ids, vectors = read_vectors(out)
    model, tok = load_encoder(trained_run)
    np.testing.assert_allclose(vectors, encode(model, tok, sentences).numpy(), atol=1e-5, rtol=0)
    assert ids[:2] == ["stsb-0", "stsb-1"] and len(ids) == len(sentences)
    assert not partial_folder(out).exists()

    npy = tmp_path / "c.npy"
    assert main(["encode", str(trained_run), str(corpus_file), "--out", str(npy), "--what", "concepts",
                 "--no-normalize", "--quiet"]) == 0
    _, concepts = read_vectors(npy)
    assert concepts.shape == (len(sentences), 8, 64)
    raw = encode(model, tok, sentences[:50], normalize=False).numpy()  # mean pooling = the concepts' mean
    np.testing.assert_allclose(concepts[:50].mean(axis=1), raw, atol=1e-5, rtol=0)


def test_a_killed_encode_resumes_and_matches_an_uninterrupted_one(tmp_path, corpus_file, trained_run):
    whole, resumed = tmp_path / "whole.npy", tmp_path / "resumed.npy"
    assert main(["encode", str(trained_run), str(corpus_file), "--out", str(whole), "--quiet"]) == 0
    command = [sys.executable, "-m", "concept_encoder.cli", "encode", str(trained_run), str(corpus_file),
               "--out", str(resumed), "--chunk-rows", "40", "--quiet"]
    process = subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": "1"})
    parts = partial_folder(resumed)
    deadline = time.time() + 120
    while not list(parts.glob("part-*.parquet")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(parts.glob("part-*.parquet")))
    assert not resumed.exists() and 1 <= written < 75, "the run must be killed part-way through"
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "resumed at row" in result.stdout
    np.testing.assert_allclose(read_vectors(resumed)[1], read_vectors(whole)[1], atol=1e-5, rtol=0)


def test_encode_names_the_bad_row_and_writes_nothing(tmp_path, trained_run, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a fine row"}\n{"text": "another"}\n{"text": broken}\n', encoding="utf-8")
    assert main(["encode", str(trained_run), str(bad), "--out", str(tmp_path / "v.parquet"), "--quiet"]) == 2
    assert f"{bad}, line 3: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "v.parquet").exists() and not partial_folder(tmp_path / "v.parquet").exists()
    bad.write_text('{"text": "a fine row"}\n{"text": "another"}\n{"text": "fixed"}\n', encoding="utf-8")
    assert main(["encode", str(trained_run), str(bad), "--out", str(tmp_path / "v.parquet"), "--quiet"]) == 0
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode() + "na\u00efve\n".encode("latin-1"))
    assert main(["encode", str(trained_run), str(latin), "--out", str(tmp_path / "w.npy"), "--quiet"]) == 2
    assert f"{latin}, line 2: not UTF-8" in capsys.readouterr().err


def test_encode_will_not_resume_into_parts_of_other_settings(tmp_path, corpus_file, trained_run, capsys):
    out = tmp_path / "v.parquet"
    command = ["encode", str(trained_run), str(corpus_file), "--out", str(out), "--chunk-rows", "1000", "--quiet"]
    assert main(command) == 0
    parts = partial_folder(out)
    parts.mkdir()  # an earlier run's first part and settings, as a kill would leave them, but another pooling
    pq.write_table(pq.read_table(out).slice(0, 1000), parts / "part-000000000000.parquet")
    (parts / "settings.json").write_text(json.dumps({"pooling": "decoder"}))
    out.unlink()
    assert main(command) == 2
    assert "delete that folder to start over" in capsys.readouterr().err and not out.exists()
    (parts / "settings.json").unlink()  # no settings: the parts are not trusted, the run starts over
    assert main(command) == 0 and len(read_vectors(out)[0]) == 3000


# ------------------------------------------------------------------------------------------ mteb
def test_mteb_on_local_stsb_equals_zero_shot_on_the_same_file(tmp_path):
    """mteb's own STS evaluator on the local STS-B dev file gives zero-shot's Spearman (all-MiniLM-L6-v2), on
    its first 500 pairs (the whole file gives 0.86716 both ways, docs/evaluation.md)."""
    from concept_encoder.data.tasks import get_task, load_split
    from concept_encoder.evaluation.mteb_runner import run_mteb
    from concept_encoder.evaluation.zero_shot import zero_shot_sts

    summary = run_mteb(MINILM, ["STSBenchmark"], resolve_data_dir(), tmp_path, max_examples=500)
    model, tok = load_encoder(MINILM)
    task = get_task("stsb")
    ours = zero_shot_sts(model, tok, task, load_split(task, "validation", resolve_data_dir())[:500])["spearman"] / 100
    result = summary["tasks"]["STSBenchmark"]
    assert result["split"] == "validation" and result["main_score_name"] == "cosine_spearman"
    assert result["main_score"] == pytest.approx(ours, abs=1e-6) and 0.8 < ours < 0.95
    assert (tmp_path / "mteb" / "STSBenchmark.json").exists()


def test_mteb_results_reach_the_registry_and_the_report(tmp_path, trained_run):
    from concept_encoder.registry import Registry
    from concept_encoder.registry.report import build_report

    run = tmp_path / trained_run.name  # a copy: the module's run folder stays as trained
    shutil.copytree(trained_run, run)
    registry = tmp_path / "registry.sqlite"
    with Registry(registry) as db:
        db.record_run(run.name, run_dir=str(run), config={}, git_commit=None, status="complete")
    build_report(run)
    assert main(["mteb", str(run), "--tasks", "SICK-R", "--registry", str(registry)]) == 0
    with Registry(registry) as db:
        metrics = db.get(run.name)["metrics"]
    assert "SICK-R.cosine_spearman" in str(metrics)
    assert "### MTEB" in (run / "report" / "report.md").read_text()


def test_mteb_names_a_task_it_has_no_local_data_for(tmp_path, capsys):
    assert main(["mteb", MINILM, "--tasks", "Banking77Classification", "--output-dir", str(tmp_path)]) == 2
    assert "has no local data" in capsys.readouterr().err
