"""Every objective's fast path (labelled positions only, chunked vocabulary loss) equals the plain path
(dense [B, N, V] logits, then F.cross_entropy) in loss and in every gradient, with and without padding."""

import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.config import ObjectiveConfig
from concept_encoder.modeling.attention import attend
from concept_encoder.modeling.dropout import dropout, keep_mask
from concept_encoder.objectives import build_collator

from .conftest import tiny_config

OBJECTIVES = {  # name -> (model overrides, objective)
    "mlm": ({}, ObjectiveConfig(name="mlm")),
    "span": ({"decoder_type": "position_only"}, ObjectiveConfig(name="span")),
    "tsdae": ({"decoder_type": "position_only"}, ObjectiveConfig(name="tsdae")),
    "tsdae_autoregressive": ({"decoder_type": "autoregressive"}, ObjectiveConfig(name="tsdae")),
    "diffusion_elbo_smoothing": ({"decoder_type": "diffusion", "diffusion_elbo_weighting": True,
                                  "label_smoothing": 0.1}, ObjectiveConfig(name="diffusion")),
}


@pytest.mark.parametrize("padded", [False, True], ids=["packed", "padded"])
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_fast_path_equals_plain_path(tokenizer, document_blocks, objective, padded):
    overrides, config = OBJECTIVES[objective]
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, hidden_dropout_prob=0.0,
                                                  attention_probs_dropout_prob=0.0, **overrides))
    full = [b for b in document_blocks if len(b["input_ids"]) == 64]
    short = sorted(document_blocks, key=lambda b: len(b["input_ids"]))[:3]
    blocks = short + full[:3] if padded else full[:4]
    assert (len({len(b["input_ids"]) for b in blocks}) > 1) == padded  # padded batches really carry padding
    batch = build_collator(config, tokenizer, 0, model.config)(blocks)
    batch.pop("index", None)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for dense in (False, True):
        out = model(**batch, return_dense_logits=dense)
        assert (out.logits is None) != dense  # the fast path never builds [B, N, V]
        results.append((out.loss, torch.autograd.grad(out.loss, params, allow_unused=True)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for fast, plain in zip(results[0][1], results[1][1]):
        if plain is None:
            assert fast is None
        else:
            torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------- cheap CPU dropout
def test_dropout_mask_keeps_one_minus_p_in_every_16_bit_lane():
    torch.manual_seed(0)
    mask, keep = keep_mask(torch.Size([1 << 22]), 0.1)
    assert keep == pytest.approx(0.9, abs=1e-5)
    lanes = mask.view(-1, 4).float().mean(dim=0)  # the four 16-bit pieces of each 64-bit draw
    assert torch.allclose(lanes, torch.full((4,), keep), atol=2e-3), lanes
    neighbours = (mask[1:] & mask[:-1]).float().mean().item()  # lanes of one draw are independent
    assert neighbours == pytest.approx(keep**2, abs=2e-3)


def test_dropout_is_unbiased_and_its_gradient_is_the_scaled_mask():
    torch.manual_seed(0)
    x = torch.randn(1000, 512, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    scale = 1 / (1 - round(0.25 * 65536) / 65536)
    assert torch.allclose(y[kept], x[kept] * scale)  # kept values scaled by 1 / keep probability
    assert kept.float().mean().item() == pytest.approx(0.75, abs=3e-3)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, kept.float() * scale)
    means = torch.stack([dropout(torch.ones(1 << 16), 0.25).mean() for _ in range(20)])
    assert means.mean().item() == pytest.approx(1.0, abs=2e-3)  # E[dropout(x)] = x
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x


def test_cpu_attention_dropout_runs_the_explicit_path_with_the_cheap_mask():
    q, k, v = torch.randn(2, 4, 8, 16), torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)  # 8 queries, 16 keys
    key_mask = torch.ones(2, 1, 1, 16, dtype=torch.bool)
    key_mask[1, ..., 12:] = False
    torch.manual_seed(3)
    out, maps = attend(q, k, v, key_mask, dropout_p=0.2)
    assert maps is None
    torch.manual_seed(3)  # the same draw by hand
    weights = (q @ k.transpose(-2, -1) / 4.0).masked_fill(~key_mask, float("-inf")).softmax(-1)
    mask, keep = keep_mask(weights.shape, 0.2)
    assert torch.allclose(out, torch.where(mask, weights / keep, 0.0) @ v, atol=1e-5)
    plain, _ = attend(q, k, v, key_mask)  # without dropout: SDPA, the same attention
    assert torch.allclose(plain, weights @ v, atol=1e-5)
    torch.manual_seed(3)
    again, maps = attend(q, k, v, key_mask, dropout_p=0.2, need_weights=True)
    assert torch.equal(again, out) and torch.allclose(maps, weights)  # the maps are taken before dropout


def test_a_query_with_no_key_to_read_gets_zero_not_nan():
    q, k, v = torch.randn(2, 4, 8, 16), torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    key_mask = torch.ones(2, 1, 1, 16, dtype=torch.bool)
    key_mask[1] = False  # the second sample is all padding
    for p in (0.0, 0.2):
        out, _ = attend(q, k, v, key_mask, dropout_p=p)
        assert torch.isfinite(out).all() and not out[1].any()


def test_dropout_keeps_half_precision_and_handles_the_edges():
    x = torch.randn(64, 64, dtype=torch.bfloat16)
    assert dropout(x, 0.1).dtype == torch.bfloat16
    assert not dropout(x, 1.0).any() and not dropout(x, 1 - 1e-6).any()  # nothing kept, no division by zero
    assert dropout(torch.randn(64, 64).T, 0.5).shape == (64, 64)  # non-contiguous input
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, -0.1)


def test_training_with_dropout_is_reproducible_from_the_seed(tokenizer, document_blocks):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, hidden_dropout_prob=0.1,
                                                  attention_probs_dropout_prob=0.1)).train()
    batch = build_collator(ObjectiveConfig(name="mlm"), tokenizer, 0, model.config)(document_blocks[:4])
    batch.pop("index", None)
    losses = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        losses.append(model(**batch).loss.item())
    assert losses[0] == losses[1] != losses[2]
    model.eval()
    assert model(**batch).loss.item() not in losses  # eval drops nothing
