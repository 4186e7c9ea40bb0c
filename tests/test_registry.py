"""The run registry on real SQLite files: round trips, concurrent writer processes, atomic calls, clear errors,
and the compare table's deltas."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from datetime import UTC, datetime

import pytest

from concept_encoder.registry import (
    REGISTRY_ENV_VAR,
    Registry,
    RegistryError,
    default_registry_path,
    format_compare,
    format_run,
    format_run_list,
    git_commit,
)

CONFIG = {"model": {"hidden_size": 512, "num_concepts": 128}, "objective": {"name": "mlm"}, "seeds": [1, 2, 3]}
WRITER_ROWS = 100


def _metric(value, std=None):
    return {"value": value, "std": std}


def test_round_trip_survives_reopening(tmp_path):
    path = tmp_path / "nested" / "registry.sqlite"  # the folder is created too
    with Registry(path) as registry:
        registry.record_run("perceiver_mlm_1", run_dir="/runs/perceiver_mlm_1", config=CONFIG,
                            git_commit="abc123-dirty", created="2025-01-02T03:04:05+00:00")
        registry.record_metrics("perceiver_mlm_1", "pretrain", {"eval_loss": 6.5, "global_step": 1000})
        registry.record_metrics("perceiver_mlm_1", "finetune", {"stsb.spearman": (0.61, 0.012),
                                                                "mrpc.f1": {"mean": 0.8, "std": None}})
        registry.record_artefacts("perceiver_mlm_1", {"model": tmp_path / "model", "report_md": "/r/report.md"})
        registry.set_status("perceiver_mlm_1", "complete")

    with Registry(path) as registry:
        run = registry.get("perceiver_mlm_1")
    assert run.pop("updated") >= "2025"
    assert run == {
        "run_id": "perceiver_mlm_1", "created": "2025-01-02T03:04:05+00:00", "status": "complete",
        "run_dir": "/runs/perceiver_mlm_1", "git_commit": "abc123-dirty", "notes": None, "config": CONFIG,
        "metrics": {"pretrain": {"eval_loss": _metric(6.5), "global_step": _metric(1000.0)},
                    "finetune": {"stsb.spearman": _metric(0.61, 0.012), "mrpc.f1": _metric(0.8)}},
        "artefacts": {"model": str(tmp_path / "model"), "report_md": "/r/report.md"},
    }


def test_upserts_overwrite_and_keep(tmp_path):
    with Registry(tmp_path / "registry.sqlite") as registry:
        registry.record_run("run", run_dir="/a", config={"lr": 1}, git_commit="abc", created="2025-01-01T00:00:00+00:00")
        registry.record_metrics("run", "pretrain", {"eval_loss": 6.5, "train_loss": 7.0})
        registry.record_metrics("run", "pretrain", {"eval_loss": (6.25, 0.5)})
        # Recording the run again (a resumed experiment) updates its fields but keeps metrics, created and commit.
        # (another folder under the same id is refused: tests/test_hardening.py)
        registry.record_run("run", run_dir="/a", config={"lr": 2}, status="failed")
        run = registry.get("run")
    assert run["metrics"] == {"pretrain": {"eval_loss": _metric(6.25, 0.5), "train_loss": _metric(7.0)}}
    assert (run["run_dir"], run["config"], run["status"]) == ("/a", {"lr": 2}, "failed")
    assert (run["created"], run["git_commit"]) == ("2025-01-01T00:00:00+00:00", "abc")


def test_non_finite_values_are_stored_as_null(tmp_path):
    with Registry(tmp_path / "registry.sqlite") as registry:
        registry.record_run("run", run_dir="/a", config={})
        registry.record_metrics("run", "pretrain", {"eval_loss": float("nan"), "grad_norm": (float("inf"), 1.0)})
        assert registry.get("run")["metrics"]["pretrain"] == {"eval_loss": _metric(None), "grad_norm": _metric(None, 1.0)}


def _write_rows(path: str, writer: str, barrier) -> None:
    """One writer process: its own run plus rows of a run the other writer fills at the same moment."""
    barrier.wait(timeout=60)  # both processes start writing together
    with Registry(path) as registry:
        registry.record_run(f"own_{writer}", run_dir=f"/runs/own_{writer}", config={"writer": writer})
        for i in range(WRITER_ROWS):
            registry.record_metrics(f"own_{writer}", "pretrain", {f"step_{i}": float(i)})
            registry.record_metrics("shared", "finetune", {f"{writer}.task_{i}": (float(i), 0.5)})


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path) as registry:
        registry.record_run("shared", run_dir="/runs/shared", config={})
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    writers = [context.Process(target=_write_rows, args=(str(path), name, barrier)) for name in ("w1", "w2")]
    for process in writers:
        process.start()
    barrier.wait(timeout=60)
    for process in writers:
        process.join(timeout=60)
    assert [process.exitcode for process in writers] == [0, 0]

    with Registry(path) as registry:
        assert {run["run_id"] for run in registry.list_runs()} == {"shared", "own_w1", "own_w2"}
        for writer in ("w1", "w2"):
            assert len(registry.get(f"own_{writer}")["metrics"]["pretrain"]) == WRITER_ROWS
        shared = registry.get("shared")["metrics"]["finetune"]
    assert len(shared) == 2 * WRITER_ROWS
    assert shared["w2.task_99"] == _metric(99.0, 0.5)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 4 * WRITER_ROWS


def test_failed_call_leaves_none_of_its_rows(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path) as registry:
        registry.record_run("run", run_dir="/a", config={})
        registry.record_metrics("run", "pretrain", {"eval_loss": 6.5})
        with pytest.raises(RegistryError, match=r"finetune/bad: 'abc' is not a number") as error:
            registry.record_metrics("run", "finetune", {"a": 1.0, "b": (2.0, 0.1), "bad": "abc", "c": 3.0})
        assert str(path) in str(error.value)
        assert registry.get("run")["metrics"] == {"pretrain": {"eval_loss": _metric(6.5)}}
        registry.record_metrics("run", "finetune", {"a": 1.0})  # the connection is usable afterwards
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT stage, key FROM metrics ORDER BY stage").fetchall() == [("finetune", "a"),
                                                                                          ("pretrain", "eval_loss")]


@pytest.mark.parametrize("content", [b"run_id,loss\nrun,6.5\n" * 50, os.urandom(4096)], ids=["text", "random"])
def test_corrupt_file_is_refused_by_name(tmp_path, content):
    path = tmp_path / "registry.sqlite"
    path.write_bytes(content)
    with pytest.raises(RegistryError) as error:
        Registry(path)
    assert str(error.value) == f"{path}: is not a concept-encoder registry (file is not a database)"


def test_other_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(RegistryError, match=r"other\.sqlite: is not a concept-encoder registry .*people"):
        Registry(path)


def test_locked_database_fails_after_the_timeout(tmp_path):
    path = tmp_path / "registry.sqlite"
    Registry(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        with Registry(path, timeout=0.2) as registry:
            with pytest.raises(RegistryError, match="locked by another process") as error:
                registry.record_run("run", run_dir="/a", config={})
            assert str(path) in str(error.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_references_resolve_or_fail_clearly(tmp_path):
    ids = ["perceiver_mlm_H512L6C128_20250101_120000", "perceiver_mlm_H512L6C128_20250102_120000",
           "posonly_tsdae_H512L6C128_20250103_120000"]
    with Registry(tmp_path / "registry.sqlite") as registry:
        for day, run_id in enumerate(ids, start=1):
            registry.record_run(run_id, run_dir=f"/runs/{run_id}", config={}, created=datetime(2025, 1, day, tzinfo=UTC))
        assert [row["run_id"] for row in registry.list_runs()] == ids[::-1]  # newest first
        assert registry.resolve(ids[0]) == ids[0]
        assert registry.resolve("posonly") == ids[2]  # unique prefix
        assert registry.resolve("20250102") == ids[1]  # unique substring
        with pytest.raises(RegistryError, match="'perceiver' is ambiguous, it matches 2 runs") as error:
            registry.get("perceiver")
        assert ids[0] in str(error.value) and ids[1] in str(error.value)
        with pytest.raises(RegistryError, match=r"registry\.sqlite: unknown run id 'nope' \(newest known: posonly"):
            registry.get("nope")
        with pytest.raises(RegistryError, match="unknown run id 'nope'"):
            registry.record_metrics("nope", "pretrain", {"eval_loss": 1.0})
        with pytest.raises(RegistryError, match="status 'done' is not one of"):
            registry.set_status(ids[0], "done")


def test_default_path_and_git_commit(tmp_path, monkeypatch):
    monkeypatch.delenv(REGISTRY_ENV_VAR, raising=False)
    assert default_registry_path(tmp_path) == tmp_path / "registry.sqlite"
    monkeypatch.setenv(REGISTRY_ENV_VAR, str(tmp_path / "elsewhere.sqlite"))
    assert default_registry_path(tmp_path) == tmp_path / "elsewhere.sqlite"
    assert git_commit(tmp_path) is None  # not a repository
    commit = git_commit()  # this package's checkout, when it is one
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


def _run(run_id: str, metrics: dict) -> dict:
    return {"run_id": run_id, "created": "2025-01-01T00:00:00+00:00", "updated": "2025-01-01T01:00:00+00:00",
            "status": "complete", "run_dir": f"/runs/{run_id}", "git_commit": None, "notes": None,
            "config": {"objective": {"name": "mlm"}}, "artefacts": {"model": f"/runs/{run_id}/model"},
            "metrics": {stage: {key: _metric(*value) if isinstance(value, tuple) else _metric(value)
                                for key, value in keys.items()} for stage, keys in metrics.items()}}


def test_compare_table_deltas_and_marks():
    a = _run("run_a", {"pretrain": {"eval_loss": 6.50, "tokens_seen": 1_000_000},
                       "analysis": {"similarity_abs_mean": 0.30, "dead_dimensions": 0, "participation_ratio": 12.3},
                       "finetune": {"stsb.spearman": (0.60, 0.01), "mrpc.f1": 0.8012}})
    b = _run("run_b", {"pretrain": {"eval_loss": 6.40, "tokens_seen": 2_000_000},
                       "analysis": {"similarity_abs_mean": 0.35, "dead_dimensions": 3, "participation_ratio": 13.7},
                       "finetune": {"stsb.spearman": (0.65, 0.02), "mrpc.f1": 0.8054, "mnli.accuracy": 0.7}})
    baseline = _run("tfidf", {"finetune": {"stsb.spearman": 0.50, "mnli.accuracy": 0.72}})
    assert format_compare(a, b, baseline).splitlines() == [
        "A = `run_a`, B = `run_b`, baseline = `tfidf` (scores of finetune, zero_shot, baseline and mteb x 100)",
        "",
        "| stage | metric | A | B | Δ (B−A) | baseline | Δ vs baseline |",
        "|---|---|--:|--:|--:|--:|--:|",
        "| pretrain | eval_loss | 6.50 | 6.40 | −0.10 ✓ | – | – |",
        "| pretrain | tokens_seen | 1,000,000 | 2,000,000 | +1,000,000 | – | – |",
        "| analysis | dead_dimensions | 0 | 3 | +3 ✗ | – | – |",
        "| analysis | participation_ratio | 12.30 | 13.70 | +1.40 ✓ | – | – |",
        "| analysis | similarity_abs_mean | 0.30 | 0.35 | +0.05 ✗ | – | – |",
        "| finetune | mnli.accuracy | – | 70.00 | – | 72.00 | −2.00 ✗ |",  # scores x 100, as in every table
        "| finetune | mrpc.f1 | 80.12 | 80.54 | +0.42 ✓ | – | – |",
        "| finetune | stsb.spearman | 60.00 ± 1.00 | 65.00 ± 2.00 | +5.00 ✓ | 50.00 | +15.00 ✓ |",
    ]
    plain = format_compare(a, b, markdown=False).splitlines()
    assert plain[2].split() == ["stage", "metric", "A", "B", "Δ", "(B−A)"]
    assert plain[4].split() == ["pretrain", "eval_loss", "6.50", "6.40", "−0.10", "✓"]


def test_list_and_show_views():
    rows = [{"run_id": "run_b", "created": "2025-01-02T00:00:00+00:00", "status": "running",
             "headline": {"pretrain.eval_loss": 6.4}},
            {"run_id": "run_a", "created": "2025-01-01T00:00:00+00:00", "status": "complete",
             "headline": {"pretrain.eval_loss": 6.5, "finetune.stsb.spearman": 0.6}}]
    lines = format_run_list(rows).splitlines()
    assert lines[0].split() == ["run", "created", "status", "pretrain.eval_loss", "finetune.stsb.spearman"]
    assert lines[2].split() == ["run_b", "2025-01-02", "00:00:00", "running", "6.4", "–"]
    assert lines[3].split() == ["run_a", "2025-01-01", "00:00:00", "complete", "6.5", "60"]  # a score, x 100
    assert lines[4] == "(scores of finetune, zero_shot, baseline and mteb x 100)"
    assert format_run_list([]) == "no runs recorded yet"

    shown = format_run(_run("run_a", {"finetune": {"stsb.spearman": (0.6, 0.012)}, "pretrain": {"eval_loss": 6.5}}))
    assert "run         run_a" in shown
    assert shown.index("  pretrain") < shown.index("  finetune")  # stages in pipeline order
    assert "  finetune (x 100)\n    stsb.spearman  60 ± 1.2" in shown
    assert "    name: mlm" in shown
