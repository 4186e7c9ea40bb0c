"""`concept-encoder study`: the token budget is checked before compute, contenders run once, tables are rewritten
between their markers while the hand-written text around them stays."""

import json
from pathlib import Path

import yaml

from concept_encoder.cli import main
from concept_encoder.config import read_experiment_mapping
from concept_encoder.study import contender_run

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "configs" / "micro" / "perceiver_mlm_L6.yaml"


def _quick_contender(folder: Path, steps: int = 40) -> Path:
    config = read_experiment_mapping(MICRO)  # the twin with its bases merged in
    config["training"].update(max_steps=steps, eval_steps=20, save_steps=20)
    config["analysis"] = {"probe_documents": 16, "during_training_blocks": 8}
    config["evaluation"] = {"finetune_tasks": ["stsb"], "zero_shot_tasks": ["stsb"], "seeds": [1],
                            "num_train_epochs": 1, "max_train_examples": 64, "max_eval_examples": 64,
                            "learning_rate": [1.0e-4, 1.0e-3]}
    path = folder / f"contender_{steps}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _study(folder: Path, contenders: dict[str, Path], budget: int, **extra) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "token_budget": budget, "contenders": {k: str(v) for k, v in contenders.items()},
        "output_dir": str(folder / "runs"), "results_file": str(folder / "results.md"), **extra}))
    return path


def test_a_contender_off_the_token_budget_is_refused_before_any_compute(tmp_path, capsys):
    study = _study(tmp_path, {"a": _quick_contender(tmp_path, 40), "b": _quick_contender(tmp_path, 50)}, 40 * 16 * 64)
    assert main(["study", str(study)]) == 2
    err = capsys.readouterr().err
    assert "contender b trains on 51,200 tokens" in err and "40,960" in err
    assert not (tmp_path / "runs").exists()


def test_study_runs_each_contender_once_and_keeps_text_around_its_tables(tmp_path):
    long_inputs = {"long_context_lengths": [128, 512], "long_context_articles": 12, "long_context_baselines": ["tfidf"],
                   "reference": "sentence-transformers/all-MiniLM-L6-v2", "reference_tasks": ["sick-r"],
                   "static_student": True}
    study = _study(tmp_path, {"mlm": _quick_contender(tmp_path)}, 40 * 16 * 64, **long_inputs)
    (tmp_path / "results.md").write_text("# Results\n\nMy conclusions stay.\n")
    assert main(["study", str(study)]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "My conclusions stay." in text and text.count("<!-- study:tiny -->") == 1
    row = next(line for line in text.splitlines() if line.startswith("| mlm | mlm |"))
    run_dir = contender_run(tmp_path / "runs", "mlm")
    analysis = json.loads((run_dir / "analysis" / "analysis.json").read_text())["diagnostics"]
    assert f"{analysis['effective_rank_per_sample']:.2f} (8)" in row
    summary = json.loads((run_dir / "train_summary.json").read_text())  # the training loop apart from the stage
    stage = json.loads((run_dir / "stages.json").read_text())["pretrain"]["seconds"]
    assert [c.strip() for c in row.split("|")[4:6]] == [f"{stage:.0f}", f"{summary['train_runtime_s']:.0f}"]
    zero_shot = json.loads((run_dir / "evaluation" / "zero_shot" / "results.json").read_text())
    bench = next(line for line in text.splitlines() if line.startswith("| mlm | ") and "mlm | mlm" not in line)
    assert f"{zero_shot['tasks']['stsb']['summary']['spearman']['mean'] * 100:.1f}" in bench
    assert "| _TF-IDF cosine (no training)_ |" in text and "### Decision gates" in text

    # zero-shot STS pooled and by late interaction, beside TF-IDF, the reference and its model2vec student; a task
    # a row did not run is "–" (the contender ran STS-B, the reference and the student SICK-R)
    section = text.split("### Zero-shot similarity, pooled and concept-level")[1].split("###")[0]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in section.splitlines() if line.startswith("| ") and not line.startswith("| encoder")}
    assert "| encoder | stsb validation (n=1,500) | stsb held-out (n=1,158) | sick-r validation (n=495) |" in section
    stsb = zero_shot["tasks"]["stsb"]["summary"]
    for label, metric in (("pooled cosine", "spearman"), ("late interaction over concepts", "maxsim_spearman")):
        assert cells[f"`mlm` ({label})"] == [f"{stsb[metric]['mean'] * 100:.1f}",
                                            f"{stsb['heldout_' + metric]['mean'] * 100:.1f}", "–", "–"]
    assert cells["TF-IDF cosine (IDF from the task's train side)"] == ["75.6", "70.0", "61.1", "61.4"]
    reference = json.loads((tmp_path / "runs" / "reference" / "results.json").read_text())["tasks"]["sick-r"]
    assert cells["`sentence-transformers/all-MiniLM-L6-v2` (pooled cosine)"] == [
        "–", "–", f"{reference['summary']['spearman']['mean'] * 100:.1f}",
        f"{reference['summary']['heldout_spearman']['mean'] * 100:.1f}"]
    static = cells["`m2v_all-MiniLM-L6-v2` (pooled cosine)"]
    assert static[:2] == ["–", "–"] and 55 < float(static[2]) < 75  # the static student: 64.6 on SICK-R
    assert (tmp_path / "runs" / "m2v_all-MiniLM-L6-v2").is_dir()  # distilled once, read by the long inputs too
    assert "_mlm fine-tunes with a learning-rate grid [0.0001, 0.001], chosen per seed on the selection part" in text
    (ft_run,) = json.loads((run_dir / "evaluation" / "finetune" / "results.json").read_text())["tasks"]["stsb"]["runs"]
    assert set(ft_run["selection_by_learning_rate"]) == {"0.0001", "0.001"}
    # one cache per study: contenders share the tokenizer, blocks and teacher targets of the same corpus
    assert list((tmp_path / "runs" / ".cache").glob("tokenizers/wordpiece_*"))
    assert not (tmp_path / "runs" / "mlm" / ".cache").exists()

    # long inputs: the contender reads a long half as far as its position table goes, and in chunks of its own
    # training window (64 tokens), beside TF-IDF; the table says so
    long_rows = [line for line in text.split("### Long inputs")[1].split("### Decision gates")[0].splitlines()
                 if line.startswith("| ")]
    assert any(line.startswith("| concept encoder `mlm` (mean of concepts) | all, 64-token chunks averaged |")
               for line in long_rows)
    assert any(line.startswith("| TF-IDF cosine | all |") for line in long_rows) and "| N=128 | N=512 |" in text
    long_file = tmp_path / "runs" / "long_context.json"
    assert json.loads(long_file.read_text())["settings"]["models"]["mlm"]["chunk"] == 64

    weights = (run_dir / "model" / "model.safetensors").stat().st_mtime_ns
    measured = long_file.stat().st_mtime_ns
    assert main(["study", str(study)]) == 0  # finished contenders and their long-input table are not rerun
    assert (run_dir / "model" / "model.safetensors").stat().st_mtime_ns == weights
    assert long_file.stat().st_mtime_ns == measured
    assert (tmp_path / "results.md").read_text().count("<!-- /study:tiny -->") == 1
    _study(tmp_path, {"mlm": _quick_contender(tmp_path)}, 40 * 16 * 64, **long_inputs | {"long_context_lengths": [256]})
    assert main(["study", str(study)]) == 0  # other lengths: measured again
    assert json.loads(long_file.read_text())["lengths"] == [256] and "| N=256 |" in (tmp_path / "results.md").read_text()
    stages = json.loads((run_dir / "stages.json").read_text())
    stages["pretrain"]["finished"] = "2030-01-01T00:00:00"  # as if the contender had been trained again
    (run_dir / "stages.json").write_text(json.dumps(stages))
    assert main(["study", str(study), "--tables-only"]) == 0
    assert "_Stale: measured for other contenders' models" in (tmp_path / "results.md").read_text()
    measured = long_file.stat().st_mtime_ns
    assert main(["study", str(study)]) == 0  # a new model: measured again, and the note is gone
    assert long_file.stat().st_mtime_ns != measured and "_Stale:" not in (tmp_path / "results.md").read_text()


def test_a_long_input_study_is_refused_before_training_when_it_cannot_be_measured(tmp_path, capsys, monkeypatch):
    """A contender that trains on the long-input task's held-out articles, or no data folder to read them from,
    is an error before any compute (it used to surface after hours of training)."""
    contender = _quick_contender(tmp_path)
    mapping = yaml.safe_load(contender.read_text())
    mapping["data"]["corpus"] = ["wikitext/wiki.valid.raw.gz", "/data/corpus_extra/enwiki_extract_0*.jsonl.gz"]
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(yaml.safe_dump(mapping))
    study = _study(tmp_path, {"leaky": leaky}, 40 * 16 * 64, long_context_lengths=[512])
    assert main(["study", str(study)]) == 2
    assert "the long-input task's held-out articles" in capsys.readouterr().err
    study = _study(tmp_path, {"mlm": contender}, 40 * 16 * 64, long_context_lengths=[512])
    monkeypatch.delenv("CONCEPT_ENCODER_DATA", raising=False)
    assert main(["study", str(study)]) == 2
    assert "long_context_lengths: the long-input task reads the local data folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_rows_carry_their_provenance_and_check_lists_the_stale_ones(tmp_path, capsys):
    """Each stage records the commit and the hash of every package module it loaded; the tables state each
    contender's config hash; `study --check` exits 1 for a changed config and warns, naming modules, for code."""
    from concept_encoder.config import load_experiment
    from concept_encoder.rundir import config_hash, module_hashes

    contender = _quick_contender(tmp_path)
    study = _study(tmp_path, {"mlm": contender}, 40 * 16 * 64)
    assert main(["study", str(study)]) == 0
    run_dir = contender_run(tmp_path / "runs", "mlm")
    record = json.loads((run_dir / "provenance.json").read_text())
    assert set(record["stages"]) == {"pretrain", "analyze", "evaluate", "report"}
    assert {"modeling/layers.py", "training/pretrain.py", "evaluation/finetune.py"} <= set(record["modules"])
    assert record["modules"]["modeling/layers.py"] == module_hashes(["modeling/layers.py"])["modeling/layers.py"]
    text = (tmp_path / "results.md").read_text()
    assert f"mlm `{config_hash(load_experiment(contender).to_dict())}`" in text and "Tables written at commit" in text
    capsys.readouterr()
    assert main(["study", str(study), "--check"]) == 0
    assert "every row is up to date" in capsys.readouterr().out

    record["modules"]["modeling/layers.py"] = "0" * 16  # as if the run had used another version of that module
    (run_dir / "provenance.json").write_text(json.dumps(record))
    assert main(["study", str(study), "--check"]) == 0
    assert "warning: mlm: code changed since" in (out := capsys.readouterr().out) and "modeling/layers.py" in out
    assert "training/pretrain.py" not in out

    contender.write_text(contender.read_text().replace("learning_rate: 0.002", "learning_rate: 0.001"))
    assert main(["study", str(study), "--check"]) == 1
    assert "stale: mlm: config changed" in (out := capsys.readouterr().out) and "training.learning_rate" in out


def test_the_shipped_cpu_study_gives_every_contender_the_same_budget():
    from concept_encoder.study import load_study

    study = load_study(ROOT / "configs" / "study" / "cpu.yaml")
    assert len(study.contenders) == 9 and study.k_sweep_contender == "recursive_k6"
    hour = load_study(ROOT / "configs" / "study" / "cpu_hour.yaml")  # the from-scratch CPU-hour target
    assert list(hour.contenders) == ["simcse_hour"] and hour.name != study.name
    wide = load_study(ROOT / "configs" / "study" / "cpu_hour_wide.yaml")  # its second attempt: width, not tokens
    assert list(wide.contenders) == ["mlm_simcse_wide"] and len({study.name, hour.name, wide.name}) == 3
    third = load_study(ROOT / "configs" / "study" / "cpu_hour_mlm.yaml")  # the third: the best pilot, the whole hour
    assert list(third.contenders) == ["mlm_simcse_hour"] and len({study.name, hour.name, wide.name, third.name}) == 4


def test_a_contender_whose_config_changed_since_its_run_is_refused(tmp_path, capsys):
    contender = _quick_contender(tmp_path)
    study = _study(tmp_path, {"mlm": contender}, 40 * 16 * 64)
    run_dir = tmp_path / "runs" / "mlm" / "earlier"
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.yaml").write_text(contender.read_text().replace("learning_rate: 0.002", "learning_rate: 0.001"))
    assert main(["study", str(study)]) == 2
    assert "contender mlm changed since" in capsys.readouterr().err


def test_a_partial_or_differently_made_k_sweep_is_run_again(tmp_path):
    """A sweep that stopped after its first K, or one made with other seeds or settings (a hand-run
    `k-sweep --finetune ... --max-train-examples 96`), used to count as done, and the table then failed on the
    missing K."""
    import copy

    from concept_encoder.analysis.k_sweep import sweep_settings
    from concept_encoder.data.tasks import get_task
    from concept_encoder.evaluation.finetune import FinetuneSettings
    from concept_encoder.rundir import K_SWEEP_RESULTS
    from concept_encoder.study import StudyConfig, _sweep_missing

    study = StudyConfig(name="s", token_budget=1, contenders={"r": "r.yaml"}, k_sweep_contender="r",
                        k_sweep_ks=[2, 4], k_sweep_finetune_tasks=["stsb"])
    finetuning = {"finetune": [(get_task("stsb"), FinetuneSettings(head="pair_cosine"))], "seeds": [1]}
    scores = {"spearman": 0.5, "heldout_spearman": 0.4}
    done = {"points": {"2": 0.1, "4": 0.2}, "finetuned": {"stsb": {"2": scores, "4": scores}},
            "finetune_seeds": [1], "finetune_settings": sweep_settings(finetuning["finetune"])}
    (tmp_path / K_SWEEP_RESULTS).parent.mkdir(parents=True)

    def missing(record: dict, wanted: dict = finetuning) -> bool:
        (tmp_path / K_SWEEP_RESULTS).write_text(json.dumps(record))
        return _sweep_missing(tmp_path, study, wanted)

    assert not missing(done) and not missing(done, {})
    partial = copy.deepcopy(done)
    del partial["finetuned"]["stsb"]["4"]
    other_settings = copy.deepcopy(done)
    other_settings["finetune_settings"]["stsb"]["max_train_examples"] = 96
    zero_shot_only = {"points": done["points"]}
    for stale in (partial, other_settings, {**done, "finetune_seeds": [1, 2]}, zero_shot_only):
        assert missing(stale)
