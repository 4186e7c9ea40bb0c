"""Every objective's fast path (labelled positions only, chunked vocabulary loss) equals the plain path
(dense [B, N, V] logits, then F.cross_entropy) in loss and in every gradient, with and without padding."""

import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.config import ObjectiveConfig
from concept_encoder.training.pretrain import build_collator

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
