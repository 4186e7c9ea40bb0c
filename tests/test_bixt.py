"""BiXT layers follow Hiller et al. (2024): one similarity matrix, softmaxed over each axis, tokens refined."""

import math

import torch

from concept_encoder import ConceptEncoderModel
from concept_encoder.modeling.attention import merge_heads, split_heads

from .conftest import tiny_config


def test_both_directions_come_from_one_similarity_matrix(tokenizer):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, layer_type="bixt", token_dim=32)).eval()
    attn = model.layers[0].cross_attn
    concepts, tokens = torch.randn(2, 8, 64), torch.randn(2, 10, 32)
    real = torch.ones(2, 10, dtype=torch.bool)
    real[1, 6:] = False
    key_mask = real[:, None, None, :]
    with torch.no_grad():
        concept_update, token_update, weights = attn(concepts, tokens, key_mask, need_weights=True)

        r_c, v_c = (split_heads(t, 4) for t in attn.concept_rv(concepts).chunk(2, dim=-1))
        r_t, v_t = (split_heads(t, 4) for t in attn.token_rv(tokens).chunk(2, dim=-1))
        similarity = r_c @ r_t.transpose(-2, -1) / math.sqrt(16)  # [B, h, C, N], the one shared matrix
        over_tokens = similarity.masked_fill(~key_mask, float("-inf")).softmax(dim=-1)
        over_concepts = similarity.softmax(dim=-2)  # each token's distribution over the C concepts
        expected_concepts = attn.concept_out(merge_heads(over_tokens @ v_t))
        expected_tokens = attn.token_out(merge_heads(over_concepts.transpose(-2, -1) @ v_c))
    torch.testing.assert_close(weights, over_tokens)
    torch.testing.assert_close(concept_update, expected_concepts, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(token_update, expected_tokens, atol=1e-6, rtol=1e-5)


def test_tokens_are_refined_layer_by_layer_and_pads_stay_untouched(tokenizer, batch):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size, layer_type="bixt", num_hidden_layers=3)).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        tokens = model.embeddings(ids, torch.arange(ids.shape[1]).expand_as(ids))
        concepts = model.concepts(ids.shape[0])
        key_mask, token_mask = mask.bool()[:, None, None, :], mask[..., None].float()
        _, refined, _, _ = model.layers[0](concepts, tokens, key_mask, token_mask)
    pads = ~mask.bool()
    assert (refined - tokens)[~pads].abs().max() > 1e-3
    assert (refined - tokens)[pads].abs().max() == 0
    # the stack's last layer refines nothing that would be read, so it carries no token-side weights
    assert hasattr(model.layers[0], "token_ffn") and not hasattr(model.layers[-1], "token_ffn")
