"""Concept ablation: own concepts give exactly the objective's loss; shuffled and zeroed ones are what they say."""

import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.analysis.ablation import collated_batches, concept_ablation
from concept_encoder.objectives import DeletionCollator, DiffusionCollator, MaskingCollator

from .conftest import tiny_config

DECODERS = {  # decoder_type -> the collator of its objective
    "perceiver_io": lambda tok: MaskingCollator.for_tokenizer(tok, seed=1, objective="mlm", rate=0.3),
    "position_only": lambda tok: DeletionCollator.for_tokenizer(tok, rate=0.6, seed=1),
    "autoregressive": lambda tok: DeletionCollator.for_tokenizer(tok, rate=0.6, seed=1),
    "diffusion": lambda tok: DiffusionCollator.for_tokenizer(tok, seed=1),
}


def model_and_batches(tokenizer, features, decoder_type):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type=decoder_type)).eval()
    return model, collated_batches(DECODERS[decoder_type](tokenizer), features[:12], batch_size=6)


def token_weighted(losses_and_counts):
    return sum(loss * n for loss, n in losses_and_counts) / sum(n for _, n in losses_and_counts)


@pytest.mark.parametrize("decoder_type", DECODERS)
def test_own_concepts_give_the_objectives_loss(tokenizer, document_blocks, decoder_type):
    model, batches = model_and_batches(tokenizer, document_blocks, decoder_type)
    with torch.no_grad():
        expected = token_weighted([(model(**b).loss.item(), int((b["labels"] != -100).sum())) for b in batches])
    result = concept_ablation(model, batches)
    assert result["concept_ablation_own"] == pytest.approx(expected, rel=1e-5)
    assert result["concept_ablation_gain"] == pytest.approx(result["concept_ablation_shuffled"] - expected, abs=1e-6)
    assert not model.training  # the caller's mode (eval) is kept


@pytest.mark.parametrize("decoder_type", ["perceiver_io", "diffusion"])
def test_shuffled_means_the_previous_samples_text_and_zeroed_means_zeros(tokenizer, document_blocks, decoder_type):
    """The shuffled loss is the loss of decoding each sample from the concepts of the sample before it (the
    encoder run on that sample's text), not a shuffle of concept slots within a sample."""
    model, batches = model_and_batches(tokenizer, document_blocks, decoder_type)
    model.train()
    batch = batches[0]
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        model.eval()
        encoded = model.encoder_input_ids(ids, labels)
        other = model.encoder(encoded.roll(1, 0), attention_mask=mask.roll(1, 0)).last_hidden_state
        shuffled = model.decoding_loss(other, ids, mask, labels, positions, noise_level=batch.get("noise_level"))[0]
        zeros = torch.zeros(ids.shape[0], model.config.num_concepts, model.config.hidden_size)
        zeroed = model.decoding_loss(zeros, ids, mask, labels, positions, noise_level=batch.get("noise_level"))[0]
        model.train()
    result = concept_ablation(model, [batch])
    assert model.training  # the caller's mode is restored
    assert result["concept_ablation_shuffled"] == pytest.approx(shuffled.item(), rel=1e-5)
    assert result["concept_ablation_zeroed"] == pytest.approx(zeroed.item(), rel=1e-5)


def test_single_sample_batches_cannot_be_shuffled(tokenizer, document_blocks):
    model, _ = model_and_batches(tokenizer, document_blocks, "perceiver_io")
    lonely = collated_batches(DECODERS["perceiver_io"](tokenizer), document_blocks[:3], batch_size=1)
    with pytest.raises(ValueError, match="two or more samples"):
        concept_ablation(model, lonely)


def test_the_no_concept_floor_is_a_cross_fitted_constant(tokenizer, document_blocks):
    """The floor is the loss of one constant concept set, fitted on the other half of the batches; fitting
    lowers the fitted half's loss below the mean concept set it starts from, and leaves the model untouched."""
    from concept_encoder.analysis.ablation import _decoder_loss, fit_constant_concepts

    model, batches = model_and_batches(tokenizer, document_blocks, "perceiver_io")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = concept_ablation(model, batches, floor_steps=30)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    even, odd = batches[0::2], batches[1::2]

    def half_loss(concepts, half):  # token-weighted, as the start is chosen
        return sum(_decoder_loss(model, concepts.expand(b["input_ids"].shape[0], -1, -1), b).item()
                   * int((b["labels"] != -100).sum()) for b in half)

    with torch.no_grad():
        means = [torch.cat([model.encoder(b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                            for b in half]).mean(0) for half in (even, odd)]
        # each fit starts from the better of the mean concept set and zeros on its own half
        starts = [min((m, torch.zeros_like(m)), key=lambda s, half=half: half_loss(s, half))
                  for m, half in zip(means, (even, odd))]
    constants = [fit_constant_concepts(model, half, start, 30) for half, start in zip((even, odd), starts)]
    with torch.no_grad():
        scored = [(_decoder_loss(model, c.expand(b["input_ids"].shape[0], -1, -1), b).item(),
                   int((b["labels"] != -100).sum())) for c, other in zip(constants, (odd, even)) for b in other]
        start = starts[0]
        fitted = [_decoder_loss(model, x.expand(b["input_ids"].shape[0], -1, -1), b).item()
                  for x in (start, constants[0]) for b in even[:1]]
    assert result["concept_ablation_floor"] == pytest.approx(token_weighted(scored), rel=1e-5)
    assert fitted[1] < fitted[0]
    own, floor, shuffled, zeroed = (result[f"concept_ablation_{k}"] for k in ("own", "floor", "shuffled", "zeroed"))
    assert result["concept_ablation_gain_over_floor"] == pytest.approx(floor - own, abs=1e-9)
    # every input-independent concept set is a floor: zeroed concepts count too
    assert result["concept_ablation_gain_used"] == pytest.approx(min(floor, shuffled, zeroed) - own, abs=1e-9)
    no_floor = concept_ablation(model, batches)
    assert "concept_ablation_floor" not in no_floor
    assert no_floor["concept_ablation_gain_used"] == pytest.approx(min(shuffled, zeroed) - own, abs=1e-9)
