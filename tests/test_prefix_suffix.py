"""Prefix -> suffix prediction: split points, the decoder's inputs, what the encoder and decoder can see, the
short-block filter, and the objective end to end through `pretrain`."""

from pathlib import Path

import numpy as np
import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.analysis.ablation import concept_ablation
from concept_encoder.config import ConfigError, load_experiment
from concept_encoder.objectives.masking import IGNORE_INDEX
from concept_encoder.objectives.prefix_suffix import PrefixSuffixCollator, sentence_end_ids, split_points

from .conftest import tiny_config

TWIN = Path(__file__).resolve().parents[1] / "configs" / "micro" / "prefix_suffix_L6.yaml"


def collator(tokenizer, **settings):
    return PrefixSuffixCollator.for_tokenizer(tokenizer, **settings)


def test_split_points_take_the_nearest_sentence_end_within_the_window():
    is_end = np.zeros((4, 100), dtype=bool)
    is_end[:3, [9, 30, 44]] = True  # sentence ends at these positions: cuts after them at 10, 31, 45
    cuts = split_points(np.array([100, 100, 100, 12]), np.array([40, 38, 20, 11]), is_end, np.array([10, 10, 5, 3]),
                        min_side=4)
    # |45-40| = 5 beats |31-40| = 9; a tie (7 and 7) goes to the earlier cut; nothing within 5 tokens of 20: the
    # drawn token cut; a 12-token block with no sentence end: both sides keep 4 tokens
    assert cuts.tolist() == [45, 31, 20, 8]


def test_sentence_ends_are_punctuation_and_sep(tokenizer):
    ids = set(sentence_end_ids(tokenizer))
    assert {tokenizer.convert_tokens_to_ids(t) for t in (".", "!", "?")} | {tokenizer.sep_token_id} <= ids
    assert tokenizer.convert_tokens_to_ids(",") not in ids and tokenizer.convert_tokens_to_ids("the") not in ids


def test_prefix_and_suffix_rebuild_the_block_and_cut_at_a_sentence_end(tokenizer, document_blocks):
    features = [b for b in document_blocks if b["length"] >= 40][:32]
    batch = collator(tokenizer, word_dropout=0.0)(features)
    ends = set(sentence_end_ids(tokenizer))
    at_boundary = 0
    for row, f in enumerate(features):
        prefix = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        suffix = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert prefix + suffix == list(f["input_ids"])  # nothing lost, nothing shared
        share = len(prefix) / len(f["input_ids"])
        assert 0.35 - 0.1 - 1e-9 <= share <= 0.45 + 0.1 + 1e-9, share
        at_boundary += prefix[-1] in ends
    assert at_boundary >= len(features) // 2  # most real blocks have a sentence end near the drawn cut


def test_decoder_inputs_are_the_shifted_suffix_with_word_dropout(tokenizer, document_blocks):
    features = document_blocks[:64]
    clean = collator(tokenizer, word_dropout=0.0)(features)
    labels, inputs = clean["labels"], clean["decoder_input_ids"]
    assert (inputs[:, 0] == tokenizer.cls_token_id).all()
    real = labels != IGNORE_INDEX
    fed = torch.cat([torch.ones_like(real[:, :1]), real[:, :-1]], dim=1)
    assert torch.equal(inputs[:, 1:][fed[:, 1:]], labels[:, :-1][fed[:, 1:]])  # input i is target i-1
    assert (inputs[~fed] == tokenizer.pad_token_id).all()
    dropped = collator(tokenizer, word_dropout=0.2)(features)["decoder_input_ids"]
    hidden = (dropped != inputs) & fed
    assert (dropped[hidden] == tokenizer.mask_token_id).all() and not hidden[:, 0].any()
    assert 0.15 < hidden[:, 1:].sum() / fed[:, 1:].sum() < 0.25


def test_split_points_are_a_function_of_seed_and_block(tokenizer, document_blocks):
    features = [b for b in document_blocks if b["length"] >= 40][:16]
    a, b = collator(tokenizer, seed=7)(features), collator(tokenizer, seed=7)(features)
    assert all(torch.equal(a[k], b[k]) for k in a)  # evaluation: the same split at every evaluation
    reordered = collator(tokenizer, seed=7)(features[::-1])  # a block's cut does not depend on its batch
    assert torch.equal(reordered["attention_mask"].sum(1).flip(0), a["attention_mask"].sum(1))
    other = collator(tokenizer, seed=8)(features)
    assert not torch.equal(other["attention_mask"].sum(1), a["attention_mask"].sum(1))


def test_the_encoder_sees_only_the_prefix_and_the_decoder_is_causal(tokenizer, document_blocks):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="autoregressive")).eval()
    batch = collator(tokenizer, word_dropout=0.0)([b for b in document_blocks if b["length"] >= 40][:4])
    concepts = model(**batch, decode=False).concepts
    changed = dict(batch, labels=batch["labels"].clone(), decoder_input_ids=batch["decoder_input_ids"].clone())
    changed["labels"][:, -3:] = 1000  # the suffix's end differs: concepts unchanged
    changed["decoder_input_ids"][:, -3:] = 1000
    assert torch.equal(model(**changed, decode=False).concepts, concepts)
    text = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                decoder_input_ids=batch["decoder_input_ids"], return_dense_logits=True)
    early = model(**text).logits[:, :5]
    later = dict(text, decoder_input_ids=text["decoder_input_ids"].clone())
    later["decoder_input_ids"][:, 5:] = 1000
    assert torch.allclose(model(**later).logits[:, :5], early, atol=1e-5)  # position i reads inputs <= i only


def test_the_loss_is_the_suffix_token_mean_cross_entropy(tokenizer, document_blocks):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="autoregressive")).eval()
    batch = collator(tokenizer)(document_blocks[:4])
    out = model(**batch, return_dense_logits=True)
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten())
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(model(**batch).loss, expected, atol=1e-5)  # the sparse path: the same loss
    ablation = concept_ablation(model, [batch])
    assert ablation["concept_ablation_own"] == pytest.approx(expected.item(), abs=1e-4)


def test_short_blocks_are_refused_by_the_collator(tokenizer):
    with pytest.raises(ValueError, match="too short to split"):
        collator(tokenizer, min_side_tokens=4)([{"input_ids": [101, 7, 8, 9, 102], "index": 0}])


def test_config_pairs_the_objective_with_the_autoregressive_decoder(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(f"base: {TWIN}\nmodel:\n  decoder_type: perceiver_io\n")
    with pytest.raises(ConfigError, match="prefix_suffix decodes the suffix left to right"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="prefix_share_min"):
        load_experiment(TWIN, ["objective.prefix_share_min=0.6"])


def test_short_blocks_are_skipped_and_counted_and_a_corpus_with_none_to_split_stops_first(tmp_path, capsys):
    import json

    from concept_encoder.cli import main

    common = ["--output-dir", str(tmp_path), "--set", "data.packing=document", "--set", "training.max_steps=2",
              "--set", "training.eval_steps=2", "--set", "training.save_steps=2", "--set", "analysis.during_training=false"]
    assert main(["pretrain", str(TWIN), *common, "--set", "objective.min_side_tokens=1000"]) == 2
    assert "no train block is long enough to split" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name != ".cache"]  # nothing but the shared caches
    assert main(["pretrain", str(TWIN), *common, "--set", "objective.min_side_tokens=24",
                 "--set", "training.run_name=s"]) == 0
    skipped = json.loads((tmp_path / "s" / "train_summary.json").read_text())["skipped_blocks"]
    assert skipped["train"] > 0 and skipped["validation"] >= 0
    assert f"skipped {skipped['train']} train" in capsys.readouterr().out
