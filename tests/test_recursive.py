"""The weight-tied recursive encoder: K=1 equals one stacked layer, K changes at inference, checkpoints load."""

import pytest
import torch
from transformers import AutoModelForMaskedLM

from concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel

from .conftest import tiny_config


def test_recursive_k1_equals_one_stacked_layer_with_the_same_weights(tokenizer, batch):
    stacked = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, num_hidden_layers=1)).eval()
    recursive = ConceptEncoderModel(
        tiny_config(tokenizer.vocab_size, num_hidden_layers=1, weight_sharing=True, num_iterations=1)
    ).eval()
    recursive.load_state_dict(stacked.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(recursive(**batch).last_hidden_state, stacked(**batch).last_hidden_state)


def test_recursive_applies_the_shared_layer_k_times(tokenizer, batch):
    """K iterations of the shared layer equal a K-layer stacked model whose layers all carry that layer."""
    recursive = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=3)).eval()
    stacked = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, num_hidden_layers=3)).eval()
    state = recursive.state_dict()
    for key, value in list(state.items()):
        if key.startswith("layers.0."):
            for i in (1, 2):
                state[key.replace("layers.0.", f"layers.{i}.")] = value
    stacked.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(recursive(**batch).last_hidden_state, stacked(**batch).last_hidden_state)


def test_iterations_change_at_inference_deterministically(tokenizer, batch):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=2)).eval()
    assert len(model.layers) == 1
    with torch.no_grad():
        k2 = model(**batch).last_hidden_state
        k4 = model(**batch, num_iterations=4).last_hidden_state
        k4_again = model(**batch, num_iterations=4).last_hidden_state
        model.config.num_iterations = 4  # the config route
        k4_config = model(**batch).last_hidden_state
    assert (k2 - k4).abs().max() > 1e-3
    torch.testing.assert_close(k4, k4_again, atol=0, rtol=0)
    torch.testing.assert_close(k4, k4_config, atol=0, rtol=0)
    assert len(model(**batch, num_iterations=5, output_hidden_states=True).hidden_states) == 6


def test_num_iterations_argument_rejected_on_a_stacked_encoder(tokenizer, batch):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size))
    with pytest.raises(ValueError, match="weight-shared"):
        model(**batch, num_iterations=3)


@pytest.mark.parametrize("layer_index", [0, 1])
def test_from_stacked_initialises_the_shared_layer_from_layer_i(tokenizer, batch, tmp_path, layer_index):
    stacked = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="position_only")).eval()
    stacked.save_pretrained(tmp_path / "stacked")
    recursive = ConceptEncoderForMaskedLM.from_stacked(tmp_path / "stacked", layer_index=layer_index, num_iterations=4)
    assert recursive.config.weight_sharing and recursive.config.encoder_steps == 4
    source, target = stacked.state_dict(), recursive.state_dict()
    for key, value in target.items():
        origin = key.replace("encoder.layers.0.", f"encoder.layers.{layer_index}.")
        torch.testing.assert_close(value, source[origin], atol=0, rtol=0, msg=key)
    # K = 1 through the copied layer i reproduces applying stacked layer i alone
    with torch.no_grad():
        out = recursive.eval()(**batch, num_iterations=1).concepts
        tokens = stacked.encoder.embeddings(batch["input_ids"], torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"]))
        concepts = stacked.encoder.concepts(batch["input_ids"].shape[0])
        mask = batch["attention_mask"].bool()[:, None, None, :]
        concepts = stacked.encoder.layers[layer_index](concepts, tokens, mask)[0]
        torch.testing.assert_close(out, stacked.encoder.norm(concepts), atol=1e-5, rtol=1e-5)


def test_recursive_checkpoint_restores_every_weight(tokenizer, batch, tmp_path):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize("padded", [False, True])
def test_token_projection_shared_across_iterations_equals_recomputing_it(tokenizer, batch, padded):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=4,
                                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not padded:
        ids, mask = ids[:1, : int(mask[0].sum())], None
    results = []
    for share in (True, False):
        model.share_token_projection = share
        out = model(ids, attention_mask=mask).last_hidden_state
        results.append((out, torch.autograd.grad(out.square().sum(), list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0])
    for fast, plain in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)


def _trm_model(vocab_size, **trm):
    torch.manual_seed(0)
    config = tiny_config(vocab_size, weight_sharing=True, num_iterations=4, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, **trm)
    return ConceptEncoderForMaskedLM(config)


def test_deep_supervision_averages_the_segment_losses_and_cuts_gradients_between_segments(tokenizer, batch):
    """K=4 in 2 segments: the loss is the mean of decoding the normalised state after 2 and after 4 iterations,
    and the second segment's loss sends no gradient into the first segment."""
    labels = batch["input_ids"].masked_fill(torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(0)) > 0.3, -100)
    model = _trm_model(tokenizer.vocab_size, deep_supervision_segments=2).train()
    loss = model(**batch, labels=labels).loss

    plain = _trm_model(tokenizer.vocab_size).train()  # same weights (same seed), one chain
    enc = plain.encoder
    out2 = enc(**batch, num_iterations=2, output_hidden_states=True)
    out4 = enc(**batch, num_iterations=4)
    expected = torch.stack([plain.decoding_loss(s, batch["input_ids"], batch["attention_mask"], labels,
                                                torch.arange(labels.shape[1]).expand_as(labels))[0]
                            for s in (out2.last_hidden_state, out4.last_hidden_state)]).mean()
    torch.testing.assert_close(loss, expected)

    # gradient cut: the final state reaches the concept table only through the detached first segment;
    # the first segment's state does reach it (a random projection: a LayerNorm output's plain sum has ~0 gradient)
    out = model.encoder(**batch, output_hidden_states=False, recursion_training=True)
    table = model.encoder.concepts.weight
    (final_grad,) = torch.autograd.grad((out.last_hidden_state * torch.randn_like(out.last_hidden_state)).sum(), table,
                                        allow_unused=True)
    assert final_grad is None or final_grad.abs().sum() == 0
    (first_grad,) = torch.autograd.grad((out.segment_states[0] * torch.randn_like(out.segment_states[0])).sum(), table)
    assert first_grad.abs().sum() > 0


def test_no_grad_iterations_run_only_in_training_and_inference_is_one_chain(tokenizer, batch):
    trm = _trm_model(tokenizer.vocab_size, deep_supervision_segments=2, recursion_no_grad_iterations=1)
    plain = _trm_model(tokenizer.vocab_size)
    with torch.no_grad():  # evaluation: the same K=4 chain whatever the training schedule
        torch.testing.assert_close(trm.eval()(**batch).concepts, plain.eval()(**batch).concepts)
    with torch.no_grad():  # fine-tuning heads call the encoder plainly: no schedule even in training mode
        torch.testing.assert_close(trm.encoder.train()(**batch).last_hidden_state,
                                   plain.encoder.train()(**batch).last_hidden_state)
    labels = batch["input_ids"].masked_fill(batch["input_ids"] % 3 > 0, -100)
    loss = trm.train()(**batch, labels=labels).loss
    loss.backward()
    table = trm.encoder.concepts.weight
    assert table.grad is None or table.grad.abs().sum() == 0  # it enters through a no-grad iteration only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trm.encoder.layers.parameters())


@pytest.mark.parametrize("fields, message", [
    ({"deep_supervision_segments": 3}, "do not divide"),
    ({"recursion_no_grad_iterations": 4}, "at least one iteration with gradient"),
    ({"deep_supervision_segments": 2, "weight_sharing": False, "num_iterations": None}, "weight_sharing=True"),
    ({"recursion_no_grad_iterations": 1, "layer_type": "bixt"}, "BiXT refines the tokens"),
])
def test_recursion_training_settings_are_checked(tokenizer, fields, message):
    settings = {"weight_sharing": True, "num_iterations": 4} | fields
    with pytest.raises(ValueError, match=message):
        tiny_config(tokenizer.vocab_size, **settings)
