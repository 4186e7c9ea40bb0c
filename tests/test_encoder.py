"""The encoder on real MiniLM-tokenised STS-B sentences: shapes, mask and padding invariance, attention paths."""

import pytest
import torch
import torch.nn.functional as F

from concept_encoder import ConceptEncoderModel

from .conftest import VARIANTS, tiny_config


def build(tokenizer, **overrides) -> ConceptEncoderModel:
    return ConceptEncoderModel(tiny_config(tokenizer.vocab_size, **overrides)).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes(tokenizer, batch, variant):
    model = build(tokenizer, **VARIANTS[variant])
    out = model(**batch, output_hidden_states=True, output_attentions=True)
    B, N = batch["input_ids"].shape
    C, H, heads, steps = 8, 64, 4, model.config.encoder_steps
    assert out.last_hidden_state.shape == (B, C, H)
    assert len(out.hidden_states) == steps + 1
    assert [a.shape for a in out.cross_attentions] == [(B, heads, C, N)] * steps
    assert [a.shape for a in out.attentions] == [(B, heads, C, C)] * steps


@pytest.mark.parametrize("variant", VARIANTS)
def test_appending_pads_changes_nothing(tokenizer, batch, variant):
    model = build(tokenizer, **VARIANTS[variant])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    extra = 7
    padded_ids = F.pad(ids, (0, extra), value=tokenizer.pad_token_id)
    padded_mask = F.pad(mask, (0, extra), value=0)
    with torch.no_grad():
        reference = model(ids, mask).last_hidden_state
        padded = model(padded_ids, padded_mask).last_hidden_state
    torch.testing.assert_close(padded, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_batch_equals_each_sentence_alone(tokenizer, batch, variant):
    """Batching with padding gives each sentence the concepts it gets when encoded unpadded on its own."""
    model = build(tokenizer, **VARIANTS[variant])
    with torch.no_grad():
        batched = model(**batch).last_hidden_state
        for row in (0, 5, 11):
            length = int(batch["attention_mask"][row].sum())
            alone = model(batch["input_ids"][row : row + 1, :length]).last_hidden_state
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["stacked", "bixt", "recursive", "rotary"])
def test_masked_out_token_has_no_influence(tokenizer, batch, variant):
    """A token hidden by attention_mask=0 in the middle of a sentence can be anything: nothing changes."""
    model = build(tokenizer, **VARIANTS[variant])
    ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    mask[:, 3] = 0
    with torch.no_grad():
        reference = model(ids, mask).last_hidden_state
        ids[:, 3] = torch.randint(1000, 2000, (ids.shape[0],))
        changed = model(ids, mask).last_hidden_state
    torch.testing.assert_close(changed, reference, atol=0, rtol=0)


@pytest.mark.parametrize("variant", ["stacked", "bixt", "token_dim_32", "rotary"])
def test_sdpa_path_equals_explicit_softmax_path(tokenizer, batch, variant):
    model = build(tokenizer, **VARIANTS[variant])
    with torch.no_grad():
        fast = model(**batch).last_hidden_state
        explicit = model(**batch, output_attentions=True)
    torch.testing.assert_close(explicit.last_hidden_state, fast, atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()[:, None, None, :]  # [B, 1, 1, N]
    for cross in explicit.cross_attentions:  # [B, h, C, N]: distributions over real tokens only
        torch.testing.assert_close(cross.sum(-1), torch.ones_like(cross[..., 0]))
        assert cross.masked_select(~real.expand_as(cross)).abs().max() == 0


def test_attention_maps_only_when_asked(tokenizer, batch):
    out = build(tokenizer)(**batch)
    assert out.attentions is None and out.cross_attentions is None and out.hidden_states is None


def test_token_dim_differs_from_concept_dim(tokenizer):
    model = build(tokenizer, token_dim=16)
    assert model.embeddings.word_embeddings.weight.shape == (tokenizer.vocab_size, 16)
    assert model.layers[0].cross_attn.to_kv.in_features == 16  # K/V project tokens from Dt up to H


def test_input_longer_than_position_table_is_a_clear_error(tokenizer):
    model = build(tokenizer)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, 129, dtype=torch.long))


def test_rotary_encoder_reads_inputs_longer_than_max_positions(tokenizer):
    model = build(tokenizer, position_embedding_type="rotary")
    out = model(torch.randint(1000, 2000, (1, 300)))
    assert out.last_hidden_state.shape == (1, 8, 64)


def test_positions_matter(tokenizer, batch):
    """Reversing the real tokens changes the concepts (the encoder is not a bag of words)."""
    for overrides in ({}, {"position_embedding_type": "rotary"}):
        model = build(tokenizer, **overrides)
        length = int(batch["attention_mask"][0].sum())
        ids = batch["input_ids"][:1, :length]
        with torch.no_grad():
            forward = model(ids).last_hidden_state
            backward = model(ids.flip(1)).last_hidden_state
        assert (forward - backward).abs().max() > 1e-3


def test_explicit_initialisation(tokenizer):
    model = build(tokenizer)
    embedding = model.embeddings.word_embeddings.weight
    assert embedding[tokenizer.pad_token_id].abs().max() == 0
    assert abs(embedding.std().item() - 0.02) < 1e-3
    q = model.layers[0].cross_attn.to_q
    assert abs(q.weight.std().item() - 0.02) < 2e-3 and q.bias.abs().max() == 0
    out = model.layers[0].ffn.proj_out.weight  # residual projection: 0.02 / sqrt(2 * (L + decoder layers))
    assert abs(out.std().item() - 0.02 / (2 * 3) ** 0.5) < 1e-3
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)
    tiny = torch.finfo(torch.float32).tiny  # smallest normal float: nothing in between 0 and it (no denormals)
    for name, p in model.named_parameters():
        nonzero = p[p != 0].abs()
        assert nonzero.numel() == 0 or nonzero.min() >= tiny, name
