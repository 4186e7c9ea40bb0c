"""Contextualised tokens before compression: sliding-window attention equals banded dense attention, keeps
positions more than w apart from interacting within one block, ignores padding, and trains."""

import pytest
import torch
import torch.nn.functional as F

from concept_encoder import ConceptEncoderModel
from concept_encoder.modeling.attention import sliding_window_attention
from concept_encoder.modeling.layers import TokenLayer

from .conftest import tiny_config


@pytest.mark.parametrize("length, window", [(37, 5), (16, 4), (3, 8), (64, 64)])
def test_sliding_window_equals_dense_attention_under_a_band_mask(length, window):
    q, k, v = (torch.randn(2, 3, length, 8) for _ in range(3))
    real = torch.ones(2, length, dtype=torch.bool)
    real[1, length - length // 3 :] = False  # padded keys in the second row
    i = torch.arange(length)
    band = (i[:, None] - i[None, :]).abs() <= window
    mask = (band[None] & real[:, None, :]) | torch.eye(length, dtype=torch.bool)[None]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    assert torch.allclose(sliding_window_attention(q, k, v, window, real), expected, atol=1e-5)


def test_positions_further_than_the_window_do_not_interact_within_one_block(tokenizer):
    config = tiny_config(tokenizer.vocab_size, token_layers=1, token_window=4, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
    layer = TokenLayer(config).eval()
    tokens = torch.randn(1, 30, config.token_dim)
    changed = tokens.clone()
    changed[0, 12] += 1.0
    moved = (layer(changed) - layer(tokens)).abs().amax(dim=-1)[0]  # [N]
    far = torch.tensor([abs(i - 12) > 4 for i in range(30)])
    assert moved[far].max() == 0 and (moved[~far] > 0).all()


@pytest.mark.parametrize("extra", [{}, {"position_embedding_type": "rotary"},
                                   {"position_embedding_type": "rotary", "token_dim": 32}])  # its own rotary table
def test_the_encoder_with_token_layers_is_padding_invariant(tokenizer, batch, extra):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, token_layers=2, token_window=3, **extra)).eval()
    ids, mask = batch["input_ids"][:4], batch["attention_mask"][:4]
    padded_ids = torch.cat([ids, torch.zeros(4, 9, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(4, 9, dtype=mask.dtype)], dim=1)
    out = model(ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(model(padded_ids, attention_mask=padded_mask).last_hidden_state, out, atol=1e-5)
    assert len(model.token_layers) == 2 and torch.isfinite(out).all()


def test_token_layers_receive_gradients_and_are_validated(tokenizer, batch):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, token_layers=1, token_window=8))
    model(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.sum().backward()
    assert model.token_layers[0].attn.to_q.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="token_window"):
        tiny_config(tokenizer.vocab_size, token_layers=1, token_window=0)
    with pytest.raises(ValueError, match="token_layers"):
        tiny_config(tokenizer.vocab_size, token_layers=1, token_dim=30)  # 30 is not divisible by 4 heads
