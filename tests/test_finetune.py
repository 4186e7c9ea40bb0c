"""Fine-tuning protocol: disjoint selection/report splits, PAWS without train, end-to-end results.json."""

import json

import pytest

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.cli import main
from concept_encoder.data.local import resolve_data_dir
from concept_encoder.data.tasks import get_task
from concept_encoder.evaluation.finetune import FinetuneSettings, protocol_splits

from .conftest import tiny_config


def _keys(examples):
    return {(e["text_a"], e["text_b"]) for e in examples}


def test_selection_is_held_out_of_training_and_report_is_never_seen():
    train, selection, report, protocol = protocol_splits(get_task("mrpc"), resolve_data_dir(), FinetuneSettings())
    assert not _keys(train) & _keys(selection) and not _keys(selection) & _keys(report)
    assert 0.07 < len(selection) / (len(train) + len(selection)) < 0.13 and len(report) == 408
    assert "reported on validation" in protocol


def test_paws_fine_tunes_on_half_of_dev_and_says_so():
    train, selection, report, protocol = protocol_splits(get_task("paws"), resolve_data_dir(), FinetuneSettings())
    assert len(train) + len(selection) + len(report) == 8000 and 0.45 < len(report) / 8000 < 0.55
    assert not _keys(train + selection) & _keys(report)
    assert "no train split" in protocol


def test_micro_concept_encoder_fine_tunes_on_stsb_and_mrpc(tmp_path, tokenizer, capsys):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "stsb", "mrpc", "--seeds", "1", "2", "--epochs", "1",
            "--max-train-examples", "128", "--max-eval-examples", "100", "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    stsb, mrpc = results["tasks"]["stsb"], results["tasks"]["mrpc"]
    assert stsb["headline_metric"] == "spearman" and mrpc["headline_metric"] == "f1"
    assert [r["seed"] for r in mrpc["runs"]] == [1, 2] and set(mrpc["summary"]["f1"]) == {"mean", "std"}
    assert "majority" in mrpc["baselines"] and "tfidf_cosine" in stsb["baselines"]
    assert mrpc["sizes"] == {"train": 128, "selection": 16, "report": 100}
    assert "mrpc" in capsys.readouterr().out


def test_via_decoder_head_through_the_cli(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "rte", "--seeds", "1", "--epochs", "1", "--head",
            "via_decoder_no_bypass", "--max-train-examples", "64", "--max-eval-examples", "50",
            "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    rte = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["rte"]
    assert rte["settings"]["head"] == "via_decoder_no_bypass" and 0 <= rte["summary"]["accuracy"]["mean"] <= 1


def test_unknown_task_is_one_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--tasks", "glu"]) == 2
    assert "unknown task 'glu'" in capsys.readouterr().err


def test_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--tasks", "rte", "--seeds", "1", "--output-dir", str(tmp_path / "o")]) == 2
    assert "not a concept encoder nor a loadable Hugging Face encoder" in capsys.readouterr().err


@pytest.mark.parametrize("head, task", [("pair", "mrpc"), ("pair_cosine", "stsb")])
def test_sentence_pair_heads_through_the_cli(tmp_path, tokenizer, head, task):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", task, "--seeds", "1", "--epochs", "1", "--head", head,
            "--max-train-examples", "64", "--max-eval-examples", "50", "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"][task]
    assert result["settings"]["head"] == head
    assert all(abs(v["mean"]) <= 1 for v in result["summary"].values())


def test_pair_cosine_head_is_the_cosine_of_separately_pooled_sentences(tokenizer, batch):
    import torch

    from concept_encoder.modeling import ConceptEncoderForSentencePairClassification

    model = ConceptEncoderForSentencePairClassification(tiny_config(tokenizer.vocab_size, num_labels=1),
                                                        cosine_only=True).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        out = model(ids, ids.flip(0), mask, mask.flip(0))
        expected = torch.nn.functional.cosine_similarity(model.embed(ids, mask), model.embed(ids.flip(0), mask.flip(0)))
        alone = model.embed(ids[:1, : int(mask[0].sum())])  # no padding: the same vector
    torch.testing.assert_close(out.logits[:, 0], expected)
    torch.testing.assert_close(alone, model.embed(ids, mask)[:1], atol=1e-5, rtol=1e-5)


def test_a_learning_rate_grid_is_chosen_on_selection_and_reports_the_chosen_model(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    common = [str(model_dir), "--tasks", "stsb", "--seeds", "1", "--epochs", "1", "--head", "pair_cosine",
              "--max-train-examples", "96", "--max-eval-examples", "60"]
    assert main(["evaluate", *common, "--learning-rate", "1e-6", "3e-3", "--output-dir", str(tmp_path / "grid")]) == 0
    (run,) = json.loads((tmp_path / "grid" / "results.json").read_text())["tasks"]["stsb"]["runs"]
    by_rate = run["selection_by_learning_rate"]
    assert set(by_rate) == {"1e-06", "0.003"} and by_rate["1e-06"] != by_rate["0.003"]
    assert run["selection_best"] == max(by_rate.values()) == by_rate[f"{run['learning_rate']:g}"]
    # the reported numbers are the chosen rate's: the same as fine-tuning at that rate alone
    assert main(["evaluate", *common, "--learning-rate", str(run["learning_rate"]), "--output-dir", str(tmp_path / "one")]) == 0
    (alone,) = json.loads((tmp_path / "one" / "results.json").read_text())["tasks"]["stsb"]["runs"]
    assert "selection_by_learning_rate" not in alone
    assert alone["spearman"] == pytest.approx(run["spearman"], abs=1e-6)


def test_per_task_settings_from_the_config_file():
    from pathlib import Path

    from concept_encoder.evaluation.finetune import load_settings

    path = Path(__file__).resolve().parents[1] / "configs" / "eval" / "default.yaml"
    settings = load_settings(path, ["mrpc", "qnli"], learning_rate=1e-4, num_train_epochs=None)
    assert settings["mrpc"].num_train_epochs == 10 and settings["qnli"].num_train_epochs == 3
    assert settings["mrpc"].learning_rate == settings["qnli"].learning_rate == 1e-4  # the override wins


def test_bad_settings_are_clear_errors(tmp_path):
    from concept_encoder.config import ConfigError
    from concept_encoder.evaluation.finetune import load_settings

    path = tmp_path / "eval.yaml"
    path.write_text("tasks:\n  mrpc: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"\[tasks.mrpc\] unknown key\(s\) \['epochs'\]"):
        load_settings(path, ["mrpc"])
    for grid in ("[]", "[1.0e-4, -1.0e-4]", "[1.0e-4, fast]"):
        path.write_text(f"tasks:\n  mrpc: {{learning_rate: {grid}}}\n")
        with pytest.raises(ConfigError, match=r"\[tasks.mrpc\] .*learning_rate"):
            load_settings(path, ["mrpc"])


def test_mnli_reports_what_it_can_of_matched_and_mismatched(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "mnli", "--seeds", "1", "--epochs", "1",
            "--max-train-examples", "64", "--max-eval-examples", "50", "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 2  # locally MNLI has no train split: a clear error, not a silent swap


def test_a_user_file_fine_tunes_on_half_and_reports_on_the_other(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"a {i}\tb {i % 7}\t{i % 2}\n" for i in range(200)))
    train, selection, report, protocol = protocol_splits(get_task(f"pair:{path}"), None, FinetuneSettings())
    assert len(train) + len(selection) + len(report) == 200 and "no train split" in protocol


def test_kept_pair_model_gives_weighted_zero_shot_pooling_equal_to_its_cosine_head(tmp_path, tokenizer, capsys):
    from concept_encoder.data.tasks import load_split
    from concept_encoder.evaluation import load_encoder, zero_shot_sts

    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert main(["zero-shot", str(model_dir), "--pooling", "weighted", "--tasks", "stsb"]) == 2
    assert "no trained pooling weights" in capsys.readouterr().err  # a pretraining checkpoint has none
    args = ["evaluate", str(model_dir), "--tasks", "stsb", "--seeds", "3", "--epochs", "1", "--head", "pair_cosine",
            "--max-train-examples", "64", "--max-eval-examples", "50", "--keep-models", "--output-dir", str(tmp_path / "e")]
    assert main(args) == 0
    reported = json.loads((tmp_path / "e" / "results.json").read_text())["tasks"]["stsb"]["runs"][0]["spearman"]
    model, loaded_tokenizer = load_encoder(tmp_path / "e" / "models" / "stsb_seed3", "weighted")
    task = get_task("stsb")
    zero_shot = zero_shot_sts(model, loaded_tokenizer, task, load_split(task, "validation", resolve_data_dir())[:50])
    assert zero_shot["spearman"] / 100 == pytest.approx(reported, abs=1e-6)  # the cosine head is this pooling
    assert "| stsb | validation | spearman |" in (tmp_path / "e" / "results.md").read_text()


def test_evaluate_in_zero_shot_mode_writes_results(tmp_path, tokenizer, capsys):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert main(["evaluate", str(model_dir), "--mode", "zero-shot", "--tasks", "zero-shot"]) == 0
    results = json.loads((model_dir / "evaluation" / "results.json").read_text())
    assert results["mode"] == "zero-shot" and set(results["tasks"]) == {"stsb", "sick-r"}
    stsb = results["tasks"]["stsb"]
    assert stsb["baselines"]["tfidf_cosine"]["spearman"] == pytest.approx(0.7564, abs=1e-4)
    assert stsb["sizes"]["report"] == 1500 and -1 <= stsb["summary"]["spearman"]["mean"] <= 1
    assert "| sick-r | validation | spearman |" in (model_dir / "evaluation" / "results.md").read_text()
    assert main(["evaluate", str(model_dir), "--mode", "zero-shot", "--tasks", "mrpc"]) == 2
    assert "not a similarity task" in capsys.readouterr().err
