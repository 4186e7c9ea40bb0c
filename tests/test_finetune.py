"""Fine-tuning protocol: disjoint selection/report splits, PAWS without train, end-to-end results.json."""

import json
import re

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
    splits = protocol_splits(get_task("mrpc"), resolve_data_dir(), FinetuneSettings())
    train, selection, report = splits.train, splits.selection, splits.report
    assert not _keys(train) & _keys(selection) and not _keys(selection) & _keys(report)
    assert 0.07 < len(selection) / (len(train) + len(selection)) < 0.13 and len(report) == 408
    assert "reported on validation" in splits.protocol and not splits.extra  # classification: dev only


@pytest.mark.parametrize("name, train_size", [("stsb", 5749), ("sick-r", 4439)])
def test_sts_reports_on_a_heldout_part_of_train_that_neither_trains_nor_selects(name, train_size):
    """Dev chose recipes, so STS also reports on a split that chose nothing: without a labelled test file in
    the data folder, a hashed 20% of train, disjoint from training and selection."""
    splits = protocol_splits(get_task(name), resolve_data_dir(), FinetuneSettings())
    heldout = splits.extra["heldout"]
    assert len(splits.train) + len(splits.selection) + len(heldout) == train_size
    assert 0.17 < len(heldout) / train_size < 0.23
    assert not _keys(heldout) & (_keys(splits.train) | _keys(splits.selection))
    assert len(_keys(heldout) & _keys(splits.report)) <= 1  # STS-B itself repeats 5 train pairs in dev
    assert "hashed 20% of train" in splits.protocol
    # the selection split is the one the earlier runs used: a hash below 10% of the full train split
    assert 0.08 < len(splits.selection) / train_size < 0.12


def test_a_labelled_sts_test_file_is_the_heldout_split_when_the_folder_has_it(tmp_path):
    import gzip
    import shutil

    from concept_encoder.data.tasks import load_split

    data = tmp_path / "data"
    shutil.copytree(resolve_data_dir() / "stsb", data / "stsb")
    rows = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6}.000\tA man plays {i}.\tA man sings {i}.\n"
            for i in range(30)]
    with gzip.open(data / "stsb" / "original" / "sts-test.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(rows)
    splits = protocol_splits(get_task("stsb"), data, FinetuneSettings())
    assert len(splits.extra["heldout"]) == 30 and splits.extra["heldout"][7]["label"] == 1.0
    assert len(splits.train) + len(splits.selection) == len(load_split(get_task("stsb"), "train", data))
    assert "labelled test set" in splits.protocol


def test_paws_fine_tunes_on_half_of_dev_and_says_so():
    splits = protocol_splits(get_task("paws"), resolve_data_dir(), FinetuneSettings())
    train, selection, report = splits.train, splits.selection, splits.report
    assert len(train) + len(selection) + len(report) == 8000 and 0.45 < len(report) / 8000 < 0.55
    assert not _keys(train + selection) & _keys(report)
    assert "no train split" in splits.protocol


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
    captured = capsys.readouterr()
    assert "mrpc" in captured.out
    # no Trainer bar (a bar without a description) outside a terminal: it used to be forced into every log
    bars = [line for line in re.split(r"[\r\n]", captured.err) if re.match(r"\s*\d+%\|", line)]
    assert not bars, bars[:3]


def test_via_decoder_head_through_the_cli(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "rte", "--seeds", "1", "--epochs", "1", "--head",
            "via_decoder", "--max-train-examples", "64", "--max-eval-examples", "50",
            "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    rte = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["rte"]
    assert rte["settings"]["head"] == "via_decoder" and 0 <= rte["summary"]["accuracy"]["mean"] <= 1


def test_unknown_task_is_one_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--tasks", "glu"]) == 2
    assert "unknown task 'glu'" in capsys.readouterr().err


def test_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--tasks", "rte", "--seeds", "1", "--output-dir", str(tmp_path / "o")]) == 2
    assert "not a model folder, run folder or reachable Hub model" in capsys.readouterr().err


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


def test_mnli_mismatched_is_reported_from_the_same_fine_tuning(tmp_path, tokenizer):
    """A data folder with MNLI train, matched and mismatched files (cut from the real dev_matched file):
    one fine-tuning per seed reports both, each beside its own baselines."""
    import gzip

    with gzip.open(resolve_data_dir() / "mnli" / "dev_matched.tsv.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    header, rows = lines[0], lines[1:]
    folder = tmp_path / "data" / "mnli"
    folder.mkdir(parents=True)
    for name, part in (("train", rows[:400]), ("dev_matched", rows[400:460]), ("dev_mismatched", rows[460:500])):
        with gzip.open(folder / f"{name}.tsv.gz", "wt", encoding="utf-8") as handle:
            handle.write("\n".join([header, *part]) + "\n")
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "mnli", "--seeds", "1", "--epochs", "1", "--data-dir",
            str(tmp_path / "data"), "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["mnli"]
    assert result["sizes"]["report"] == 60 and result["sizes"]["mismatched"] == 40
    assert "mismatched reported from the same fine-tuning" in result["protocol"]
    assert 0 <= result["summary"]["mismatched_accuracy"]["mean"] <= 1
    assert "mismatched_accuracy" in result["baselines"]["majority"]
    assert "| mnli | mismatched | accuracy |" in (tmp_path / "eval" / "results.md").read_text()


def test_a_user_file_fine_tunes_on_half_and_reports_on_the_other(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"a {i}\tb {i % 7}\t{i % 2}\n" for i in range(200)))
    splits = protocol_splits(get_task(f"pair:{path}"), None, FinetuneSettings())
    assert len(splits.train) + len(splits.selection) + len(splits.report) == 200 and "no train split" in splits.protocol


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
    assert stsb["sizes"]["heldout"] == 1158 and "heldout_spearman" in stsb["summary"]  # beside dev, chose nothing
    assert 0.5 < stsb["baselines"]["tfidf_cosine"]["heldout_spearman"] < 0.9
    assert "| sick-r | validation | spearman |" in (model_dir / "evaluation" / "results.md").read_text()
    assert main(["evaluate", str(model_dir), "--mode", "zero-shot", "--tasks", "mrpc"]) == 2
    assert "not a similarity task" in capsys.readouterr().err


def test_inputs_are_cut_to_the_position_table_and_heldout_is_reported(tmp_path, tokenizer):
    """STS-B pairs encoded jointly run past a 32-position table: fine-tuning clips max_length to it (it used
    to crash), and the held-out split is reported beside dev, with the baselines on the same examples."""
    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, max_position_embeddings=32)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["evaluate", str(model_dir), "--tasks", "stsb", "--seeds", "1", "--epochs", "1",
            "--max-train-examples", "64", "--max-eval-examples", "80", "--output-dir", str(tmp_path / "eval")]
    assert main(args) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["stsb"]
    assert result["max_length"] == 32 and result["settings"]["max_length"] == 128
    assert result["sizes"]["heldout"] == 80 and "heldout_spearman" in result["summary"]
    assert {"heldout_spearman", "spearman"} <= set(result["baselines"]["tfidf_cosine"])
    assert "| stsb | heldout | spearman |" in (tmp_path / "eval" / "results.md").read_text()
