"""`concept-encoder experiment` on a micro config end to end: report files, registry row, gates, resume, publish."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from concept_encoder.cli import main
from concept_encoder.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "configs" / "micro" / "perceiver_mlm_L6.yaml"
QUICK = ["training.max_steps=40", "training.eval_steps=20", "training.save_steps=20", "training.run_name=exp",
         "analysis.probe_documents=16", "analysis.during_training_blocks=8",
         "evaluation.finetune_tasks=[stsb]", "evaluation.zero_shot_tasks=[stsb]", "evaluation.seeds=[1]",
         "evaluation.num_train_epochs=1", "evaluation.max_train_examples=64", "evaluation.max_eval_examples=64"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    args = ["experiment", str(MICRO), "--output-dir", str(root), "--registry", str(root / "registry.sqlite")]
    for override in QUICK:
        args += ["--set", override]
    assert main(args) == 0
    return root, root / "exp"


def test_experiment_writes_report_registry_row_and_verdicts(finished, capsys):
    root, run_dir = finished
    report = (run_dir / "report" / "report.md").read_text()
    html = (run_dir / "report" / "report.html").read_text()
    assert "## Decision gates" in report and "Gate 1: per-sample concept rank" in report
    assert "| stsb | validation | spearman |" in report  # fine-tuned and zero-shot tables with baselines
    assert html.count("data:image/png;base64,") >= 4 and 'src="similarity.png"' not in html  # self-contained
    assert set(json.loads((run_dir / "stages.json").read_text())) == {"pretrain", "analyze", "evaluate", "report"}
    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "report" / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    with Registry(root / "registry.sqlite") as registry:
        run = registry.get("exp")
    assert run["status"] == "complete" and run["config"]["evaluation"]["finetune_tasks"] == ["stsb"]
    assert {"pretrain", "analysis", "finetune", "zero_shot", "baseline"} <= set(run["metrics"])
    assert run["metrics"]["baseline"]["stsb.tfidf_cosine.spearman"]["value"] > 0.5
    analysis = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert run["metrics"]["analysis"]["effective_rank_per_sample"]["value"] == pytest.approx(
        analysis["diagnostics"]["effective_rank_per_sample"])

    history = json.loads((run_dir / "log_history.json").read_text())["log_history"]
    assert sum("concepts/effective_rank_per_sample" in entry for entry in history) == 3  # steps 20, 40 and final
    assert sum("concepts/ablation_gain" in entry for entry in history) == 3  # the MLM loss with shuffled concepts
    ablation = {k: v for k, v in analysis["diagnostics"].items() if k.startswith("concept_ablation_")}
    assert set(ablation) == {f"concept_ablation_{k}" for k in ("own", "shuffled", "zeroed", "gain", "floor",
                                                               "gain_over_floor", "gain_used")}
    assert run["metrics"]["analysis"]["concept_ablation_gain"]["value"] == pytest.approx(ablation["concept_ablation_gain"])
    assert "Concepts used by the decoder" in report  # its gate
    assert "tokenizer: tokenizer/ (a wordpiece of 4096 tokens" in report and "ModernBERT" not in report

    assert main(["runs", "list", "--registry", str(root / "registry.sqlite")]) == 0
    assert "exp" in capsys.readouterr().out
    assert main(["runs", "show", "nope", "--registry", str(root / "registry.sqlite")]) == 2
    assert "nope" in capsys.readouterr().err


def test_resume_reruns_only_unfinished_stages(finished, capsys):
    root, run_dir = finished
    weights = (run_dir / "model" / "model.safetensors").stat().st_mtime_ns
    stages = json.loads((run_dir / "stages.json").read_text())
    del stages["analyze"]
    (run_dir / "stages.json").write_text(json.dumps(stages))
    (run_dir / "analysis" / "analysis.json").unlink()
    assert main(["experiment", "--resume", str(run_dir), "--registry", str(root / "registry.sqlite")]) == 0
    assert (run_dir / "analysis" / "analysis.json").exists()
    assert (run_dir / "model" / "model.safetensors").stat().st_mtime_ns == weights  # pretraining was not redone
    banners = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[experiment] ")]
    assert [line.split(":")[0] for line in banners] == [f"[experiment] {stage}" for stage in
                                                        ("analyze", "evaluate", "report", "registry")]
    assert str(run_dir) in banners[0]


def test_publish_dry_run_folder_loads_with_plain_transformers(finished, tmp_path):
    _, run_dir = finished
    folder = tmp_path / "hub"
    assert main(["publish", str(run_dir), "--repo-id", "someone/micro", "--dry-run", "--folder", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_concept_encoder.ConceptEncoderModel"
    assert "effective_rank_per_sample" in (folder / "README.md").read_text()
    # a fresh interpreter that never imports concept_encoder runs the model card's snippet as written (the repo id
    # replaced by the folder): the folder's own code must load, with no interactive trust prompt on the way
    card = (folder / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0].replace("'someone/micro'", repr(str(folder)))
    assert snippet.count("trust_remote_code=True") == 2
    script = ("import sys, torch; sys.modules['concept_encoder'] = None\n" + snippet
              + "print(tuple(concepts.shape))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False,
                         env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 8, 64)")


def test_sentence_transformers_export_loads_where_concept_encoder_is_not_installed(finished, tmp_path):
    """The export used to name classes of the installed package in modules.json and had no model card. Now the
    folder carries its code: the card's snippet, run as written in a process where `import concept_encoder`
    fails, gives the vectors this package's own zero-shot path gives; the card names the run, the pooling and
    the run's zero-shot scores beside TF-IDF. `publish --format sentence-transformers` prepares that folder."""
    import numpy as np

    from concept_encoder.inference.encoder import encode, load_encoder

    _, run_dir = finished
    folder = tmp_path / "hub_st"
    assert main(["publish", str(run_dir), "--repo-id", "someone/micro-st", "--format", "sentence-transformers",
                 "--pooling", "decoder", "--dry-run", "--folder", str(folder)]) == 0
    card = (folder / "README.md").read_text()
    assert "run `exp`" in card and "**decoder** pooling" in card and "| stsb | validation |" in card
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0].replace("'someone/micro-st'", repr(str(folder)))
    script = ("import json, sys; sys.modules['concept_encoder'] = None  # `import concept_encoder` now fails\n"
              + snippet + "print(json.dumps(vectors.tolist()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False,
                         env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    texts = json.loads(snippet.split("model.encode(", 1)[1].split(")", 1)[0].replace("'", '"'))
    model, tokenizer = load_encoder(run_dir, "decoder")
    np.testing.assert_allclose(theirs, encode(model, tokenizer, texts).numpy(), atol=1e-5, rtol=0)


def test_publish_lists_what_it_would_push_and_pushes_nothing_unconfirmed(finished, tmp_path, capsys):
    """`publish` used to upload as soon as the folder was ready, public by default."""
    _, run_dir = finished
    assert main(["publish", str(run_dir), "--repo-id", "someone/micro", "--folder", str(tmp_path / "hub")]) == 2
    captured = capsys.readouterr()
    assert "PUBLIC" in captured.out and "model.safetensors" in captured.out and "config.json" in captured.out
    assert "not pushed; confirm with --yes" in captured.err and "push to" not in captured.err


def test_publish_never_replaces_a_folder_it_did_not_make(finished, tmp_path, capsys):
    _, run_dir = finished
    for folder in (run_dir, run_dir.parent):
        assert main(["publish", str(run_dir), "--repo-id", "a/b", "--dry-run", "--folder", str(folder)]) == 2
        assert "it would be replaced" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["publish", str(run_dir), "--repo-id", "a/b", "--dry-run", "--folder", str(tmp_path)]) == 2
    assert "was not made by publish" in capsys.readouterr().err and (tmp_path / "notes.txt").exists()
    assert (run_dir / "model" / "model.safetensors").exists()


def test_bad_inputs_fail_before_any_stage(tmp_path, capsys, monkeypatch):
    corrupt = tmp_path / "registry.sqlite"
    corrupt.write_text("not a database")
    args = ["experiment", str(MICRO), "--output-dir", str(tmp_path), "--registry", str(corrupt)]
    assert main(args) == 2
    assert "registry.sqlite" in capsys.readouterr().err and not (tmp_path / "exp").exists()
    assert main(["experiment", str(MICRO), "--set", "evaluation.finetune_tasks=[glu]"]) == 2
    assert "unknown task 'glu'" in capsys.readouterr().err
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates: [unclosed\n")
    assert main(["experiment", str(MICRO), "--set", f"analysis.gates={gates}"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["experiment", "--resume", str(tmp_path), "--set", "training.max_steps=5"]) == 2
    assert "drop --set" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["report", "no_such_run"]) == 2  # neither a folder nor a run in a registry
    assert "no run registry here yet" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # a lookup never creates an empty database


@pytest.mark.parametrize("override, message", [
    ("evaluation.finetune_tasks=[mnli]", "mnli train"),  # no MNLI train file in the local folder
    ("evaluation.head=pair_cosine", "pair_cosine head regresses similarity"),  # on MRPC
])
def test_an_impossible_evaluation_fails_before_pretraining(tmp_path, capsys, override, message):
    args = ["experiment", str(MICRO), "--output-dir", str(tmp_path / "runs"), "--set", override,
            "--set", "evaluation.finetune_tasks=[stsb, mrpc]" if "head" in override else "training.max_steps=40"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was trained nor written


def test_the_pipeline_parses_the_experiment_file_once(tmp_path, monkeypatch):
    """Every stage receives the parsed ExperimentConfig: a wrapper counts the parses in every module that could."""
    import importlib

    from concept_encoder import config as config_module

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return config_module.load_experiment(*args, **kwargs)

    for name in ("experiment", "training.pretrain", "analysis.analyze", "registry.report", "study"):
        module = importlib.import_module(f"concept_encoder.{name}")
        monkeypatch.setattr(module, "load_experiment", counted)
    args = ["experiment", str(MICRO), "--output-dir", str(tmp_path), "--registry", str(tmp_path / "r.sqlite")]
    for override in [*QUICK, "training.run_name=once", "evaluation.zero_shot_tasks=[]"]:
        args += ["--set", override]
    assert main(args) == 0
    assert calls == [str(MICRO)], calls
