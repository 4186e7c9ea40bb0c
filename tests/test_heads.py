"""Classification heads: weighted pooling, and ViaDecoder reusing the pretrained decoder (with/without bypass)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderForSequenceClassification

from .conftest import tiny_config


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path)
    return tmp_path


def test_weighted_pooling_by_hand(tokenizer, batch):
    model = ConceptEncoderForSequenceClassification(tiny_config(tokenizer.vocab_size, num_labels=3)).eval()
    with torch.no_grad():
        out = model(**batch)
        concepts = model.encoder(**batch).last_hidden_state
        alpha = model.pooling.score(concepts).softmax(dim=1)
        expected = F.layer_norm((alpha * concepts).sum(1), (64,), model.pooling.norm.weight, model.pooling.norm.bias, 1e-5)
    torch.testing.assert_close(out.pooled, expected)
    assert out.logits.shape == (16, 3)


def test_via_decoder_loads_the_pretrained_decoder(checkpoint, batch):
    mlm = ConceptEncoderForMaskedLM.from_pretrained(checkpoint)
    head = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2, classifier_pooling="via_decoder")
    for name, value in mlm.decoder.state_dict().items():
        torch.testing.assert_close(head.decoder.state_dict()[name], value, atol=0, rtol=0)
    assert head(**batch, labels=torch.zeros(16, dtype=torch.long)).loss.isfinite()


def test_by_default_only_the_concepts_reach_the_head(checkpoint, batch):
    """The default ViaDecoder head has no bypass: changing the token ids while keeping the concepts fixed
    changes nothing. The bypass is an explicit option (and then the tokens do reach the head)."""
    head = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=2, classifier_pooling="via_decoder").eval()
    bypass = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=2, classifier_pooling="via_decoder", classifier_token_bypass=True).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        concepts = head.encoder(ids, attention_mask=mask).last_hidden_state
        other = torch.randint(1000, 2000, ids.shape)
        torch.testing.assert_close(head._via_decoder(concepts, ids, mask), head._via_decoder(concepts, other, mask))
        assert (bypass._via_decoder(concepts, ids, mask) - bypass._via_decoder(concepts, other, mask)).abs().max() > 1e-4
