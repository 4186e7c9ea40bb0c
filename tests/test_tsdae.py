"""TSDAE deletion: hidden tokens, dense labels over real tokens only, pads never visible nor counted."""

import numpy as np
import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.cli import main
from concept_encoder.config import ConfigError, load_experiment
from concept_encoder.objectives import DeletionCollator

from .conftest import tiny_config
from .test_pretrain import history, write_config


@pytest.fixture(scope="module")
def features(document_blocks):
    return document_blocks


def test_deletion_hides_tokens_and_labels_every_real_token(tokenizer, features):
    batch = DeletionCollator.for_tokenizer(tokenizer, rate=0.6)(features)
    real = batch["labels"] != -100
    lengths = torch.tensor([len(f["input_ids"]) for f in features])
    assert torch.equal(real.sum(1), lengths)  # dense labels over the real tokens, none on pads
    special = torch.isin(batch["labels"], torch.tensor(tokenizer.all_special_ids)) & real
    deletable = real & ~special
    deleted = deletable & (batch["attention_mask"] == 0)
    assert abs(deleted.sum().item() / deletable.sum().item() - 0.6) < 0.02
    assert (batch["attention_mask"][special] == 1).all() and (batch["attention_mask"][~real] == 0).all()
    assert (batch["input_ids"][deleted] == tokenizer.mask_token_id).all()  # nothing left to copy
    assert ((deletable & (batch["attention_mask"] == 1)).sum(1) >= 1).all()  # one survivor per row at least


def test_even_a_rate_near_one_keeps_a_survivor(tokenizer, features):
    batch = DeletionCollator.for_tokenizer(tokenizer, rate=0.999)(features[:32])
    special = torch.isin(batch["labels"], torch.tensor(tokenizer.all_special_ids))
    survivors = (batch["attention_mask"] == 1) & ~special
    assert (survivors.sum(1) == 1).all()


def test_tsdae_loss_ignores_padding(tokenizer, features):
    """The same blocks collated alone and with longer neighbours (more padding) give the same loss."""
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="position_only")).eval()
    collate = DeletionCollator.for_tokenizer(tokenizer, rate=0.6, pad_to_multiple_of=1)
    short = sorted(features, key=lambda f: len(f["input_ids"]))[:4]
    longest = max(features, key=lambda f: len(f["input_ids"]))
    tight, padded = collate(short), collate(short + [longest])
    assert padded["input_ids"].shape[1] > tight["input_ids"].shape[1]
    with torch.no_grad():
        per_block = model(**{k: v[:4] for k, v in padded.items()}).loss
        alone = model(**tight).loss
    torch.testing.assert_close(per_block, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"objective": {"name": "tsdae"}}, "decoder_type: objective tsdae needs position_only or autoregressive"),
    ({"objective": {"name": "tsdae", "deletion_rate": 1.0}, "model": {"decoder_type": "position_only"}},
     "deletion_rate: must be in (0, 1)"),
    ({"objective": {"name": "diffusionn"}}, "is not one of"),
])
def test_bad_tsdae_configs(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_experiment(write_config(tmp_path, **change))


@pytest.mark.slow  # 25 s; the TSDAE micro twins of tests/test_configs.py train the same path in the default run
def test_tsdae_micro_run_loss_falls(tmp_path):
    config = write_config(tmp_path, objective={"name": "tsdae"}, model={"decoder_type": "position_only"},
                          training={"max_steps": 30, "save_steps": 30, "eval_steps": 15})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    logs = history(tmp_path / "runs" / "micro", 30)
    losses = [e["loss"] for e in logs if "loss" in e]
    evals = [e["eval_loss"] for e in logs if "eval_loss" in e]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0 and evals[-1] < evals[0]


def test_autoregressive_decoder_is_causal_and_ignores_pads(tokenizer, features):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="autoregressive")).eval()
    collate = DeletionCollator.for_tokenizer(tokenizer, rate=0.6, pad_to_multiple_of=1)
    batch = collate(features[:4])
    with torch.no_grad():
        logits = model(**batch, return_dense_logits=True).logits
        changed = {k: v.clone() for k, v in batch.items()}
        changed["labels"][:, 6] = 1000  # a different original token at position 6
        logits_changed = model(**changed, return_dense_logits=True).logits
    torch.testing.assert_close(logits[:, :7], logits_changed[:, :7])  # positions <= 6 never see token 6
    assert (logits[:, 7] - logits_changed[:, 7]).abs().max() > 1e-4  # position 7 does
    short = sorted(features, key=lambda f: len(f["input_ids"]))[:4]
    tight, padded = collate(short), collate(short + [max(features, key=lambda f: len(f["input_ids"]))])
    with torch.no_grad():
        torch.testing.assert_close(model(**{k: v[:4] for k, v in padded.items()}).loss, model(**tight).loss,
                                   atol=1e-5, rtol=1e-5)


def test_autoregressive_decoding_needs_tsdae(tmp_path):
    with pytest.raises(ConfigError, match="autoregressive decoding needs"):
        load_experiment(write_config(tmp_path, model={"decoder_type": "autoregressive"}))
