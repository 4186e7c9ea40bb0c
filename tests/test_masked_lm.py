"""The masked-LM pretraining model: gradients, sparse = dense loss, round trips, Auto classes, learning."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForMaskedLM

from concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel
from concept_encoder.modeling.decoding import select_positions

from .conftest import VARIANTS, tiny_config


def mlm_inputs(tokenizer, batch, rate=0.3, seed=0):
    """Mask `rate` of the real non-special tokens with [MASK]; labels elsewhere -100."""
    ids, mask = batch["input_ids"].clone(), batch["attention_mask"]
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & mask.bool() & ~special
    labels = torch.where(chosen, ids, -100)
    ids[chosen] = tokenizer.mask_token_id
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build(tokenizer, **overrides) -> ConceptEncoderForMaskedLM:
    return ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, **overrides))


DECODERS = {"perceiver_io": {}, "position_only": {"decoder_type": "position_only"}}
MLM_VARIANTS = {
    **{f"{v}/perceiver_io": VARIANTS[v] for v in VARIANTS},
    "stacked/position_only": DECODERS["position_only"],
    "bixt/position_only": {**VARIANTS["bixt"], **DECODERS["position_only"]},
    "rotary/position_only": {**VARIANTS["rotary"], **DECODERS["position_only"]},
    "untied": {"tie_word_embeddings": False},
    "two_decoder_layers": {"num_decoder_layers": 2},
}


@pytest.mark.parametrize("variant", MLM_VARIANTS)
def test_every_trainable_parameter_gets_a_gradient(tokenizer, batch, variant):
    model = build(tokenizer, **MLM_VARIANTS[variant]).train()
    model(**mlm_inputs(tokenizer, batch)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing


@pytest.mark.parametrize("variant", ["stacked/perceiver_io", "stacked/position_only", "bixt/perceiver_io",
                                     "token_dim_32/perceiver_io", "rotary/position_only"])
def test_sparse_and_dense_vocabulary_projection_give_the_same_loss(tokenizer, batch, variant):
    model = build(tokenizer, **MLM_VARIANTS[variant]).eval()
    inputs = mlm_inputs(tokenizer, batch)
    with torch.no_grad():
        sparse = model(**inputs)
        dense = model(**inputs, return_dense_logits=True)
    assert sparse.logits is None  # training-style call: no [B, N, V] tensor
    assert dense.logits.shape == (*inputs["input_ids"].shape, tokenizer.vocab_size)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-5, rtol=1e-5)
    labelled = inputs["labels"] != -100
    by_hand = F.cross_entropy(dense.logits[labelled], inputs["labels"][labelled])
    torch.testing.assert_close(dense.loss, by_hand)


def test_select_positions_packs_selected_positions_in_order():
    selected = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    index, valid = select_positions(selected)
    assert index.shape == (3, 3)
    assert index[0].tolist() == [1, 3, 4] and valid[0].all()
    assert not valid[1].any()
    assert index[2, 0] == 0 and valid[2].tolist() == [True, False, False]


def test_nothing_labelled_gives_zero_loss_with_a_graph(tokenizer, batch):
    model = build(tokenizer).train()
    labels = torch.full_like(batch["input_ids"], -100)
    loss = model(**batch, labels=labels).loss
    assert loss.item() == 0.0 and loss.requires_grad


def test_position_only_decoder_ignores_the_input_ids_at_query_positions(tokenizer, batch):
    """Position-only queries carry no token identity: the logits depend on the input only through the concepts."""
    model = build(tokenizer, decoder_type="position_only").eval()
    with torch.no_grad():
        concepts = model.encoder(**batch).last_hidden_state
        positions = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
        a, _ = model.decode(concepts, batch["input_ids"], positions)
        b, _ = model.decode(concepts, torch.zeros_like(batch["input_ids"]), positions)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_tied_output_embeddings(tokenizer):
    tied = build(tokenizer)
    assert tied.lm_head.decoder.weight is tied.encoder.embeddings.word_embeddings.weight
    untied = build(tokenizer, tie_word_embeddings=False)
    assert untied.lm_head.decoder.weight is not untied.encoder.embeddings.word_embeddings.weight


@pytest.mark.parametrize("variant", ["stacked/perceiver_io", "bixt/position_only", "token_dim_32/perceiver_io",
                                     "recursive/perceiver_io", "rotary/position_only", "untied"])
def test_save_load_round_trip_gives_identical_outputs(tokenizer, batch, tmp_path, variant):
    model = build(tokenizer, **MLM_VARIANTS[variant]).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is ConceptEncoderForMaskedLM
    inputs = mlm_inputs(tokenizer, batch)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).loss, model(**inputs).loss, atol=0, rtol=0)
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    encoder = AutoModel.from_pretrained(tmp_path).eval()  # the base model out of the pretraining checkpoint
    assert type(encoder) is ConceptEncoderModel
    with torch.no_grad():
        torch.testing.assert_close(encoder(**batch).last_hidden_state, model.encoder(**batch).last_hidden_state,
                                   atol=0, rtol=0)


def test_a_few_steps_on_real_text_reduce_the_loss(tokenizer, batch):
    model = build(tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    inputs = mlm_inputs(tokenizer, batch, rate=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
