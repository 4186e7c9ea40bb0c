"""Masked diffusion: noising, a denoiser that uses surviving tokens, pads invisible, sampling, learning."""

from pathlib import Path

import numpy as np
import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.cli import main
from concept_encoder.objectives import DiffusionCollator

from .conftest import tiny_config
from .test_pretrain import history

VARIANTS = {"conv": {}, "full": {"diffusion_mixing": "full"}, "adaln": {"diffusion_timestep_conditioning": True}}


def diffusion_model(tokenizer, **overrides):
    return ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, decoder_type="diffusion", **overrides))


@pytest.fixture(scope="module")
def features(document_blocks):
    return document_blocks


def test_noise_levels_and_masks(tokenizer, features):
    batch = DiffusionCollator.for_tokenizer(tokenizer, t_min=0.3)(features)
    t = batch["noise_level"].numpy()
    assert t.min() >= 0.3 and t.max() <= 1.0 and abs(t.mean() - 0.65) < 0.05
    masked = (batch["labels"] != -100).numpy()
    special = np.isin(batch["labels"].numpy(), tokenizer.all_special_ids)
    assert not (masked & ~batch["attention_mask"].numpy().astype(bool)).any()  # never a pad
    assert not special[masked].any() and (batch["input_ids"].numpy()[masked] == tokenizer.mask_token_id).all()
    maskable = batch["attention_mask"].numpy().astype(bool) & ~np.isin(batch["input_ids"].numpy(), tokenizer.all_special_ids) | masked
    observed = masked.sum(1) / np.maximum(maskable.sum(1), 1)
    assert np.corrcoef(observed, t)[0, 1] > 0.8  # each block is masked at its own rate t


@pytest.mark.parametrize("variant", VARIANTS)
def test_pads_are_never_visible_nor_counted(tokenizer, features, variant):
    model = diffusion_model(tokenizer, **VARIANTS[variant]).eval()
    collate = DiffusionCollator.for_tokenizer(tokenizer, pad_to_multiple_of=1)
    short = sorted(features, key=lambda f: len(f["input_ids"]))[:4]
    longest = max(features, key=lambda f: len(f["input_ids"]))
    tight, padded = collate(short), collate(short + [longest])
    assert padded["input_ids"].shape[1] > tight["input_ids"].shape[1]
    padded_rows = {k: v[:4] for k, v in padded.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(**padded_rows).loss, model(**tight).loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_denoiser_reads_surviving_neighbours(tokenizer, variant):
    """The original decoder could not see surviving tokens; this one mixes them into masked positions."""
    model = diffusion_model(tokenizer, **VARIANTS[variant]).eval()
    if variant == "adaln":  # AdaLN-Zero gates start closed; open them as training would
        for layer in model.decoder.layers:
            torch.nn.init.normal_(layer.modulation.bias, std=0.5)
    concepts = torch.randn(1, 8, 64)
    ids = torch.full((1, 12), tokenizer.mask_token_id)
    ids[0, 5] = 2000
    positions = torch.arange(12)[None]
    with torch.no_grad():
        embed = model.encoder.embeddings.word_embeddings
        t = torch.tensor([0.5])
        before = model.decoder(concepts, embed(ids), positions, None, t)[0, 6]
        ids[0, 5] = 3000  # change the surviving neighbour of masked position 6
        after = model.decoder(concepts, embed(ids), positions, None, t)[0, 6]
    assert (before - after).abs().max() > 1e-4


def test_elbo_weighting_is_one_over_t_per_token(tokenizer, features):
    model = diffusion_model(tokenizer, diffusion_elbo_weighting=True).eval()
    batch = DiffusionCollator.for_tokenizer(tokenizer)(features[:8])
    with torch.no_grad():
        weighted = model(**batch).loss
        plain = model(**{k: v for k, v in batch.items() if k != "noise_level"}).loss  # no t: unweighted
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, return_dense_logits=True).logits
    labelled = batch["labels"] != -100
    ce = torch.nn.functional.cross_entropy(logits[labelled], batch["labels"][labelled], reduction="none")
    weights = (1 / batch["noise_level"])[:, None].expand_as(labelled)[labelled]
    torch.testing.assert_close(weighted, (ce * weights).sum() / labelled.sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, ce.mean(), rtol=1e-5, atol=1e-5)


def test_reconstruct_fills_only_masked_positions(tokenizer, batch):
    model = diffusion_model(tokenizer).eval()
    ids, mask = batch["input_ids"][:3], batch["attention_mask"][:3]
    out = model.reconstruct(ids, mask, prefix_length=4, temperature=0.0)
    assert torch.equal(out[:, :4], ids[:, :4])  # the prefix stays
    assert torch.equal(out[mask == 0], ids[mask == 0])  # pads stay
    assert not (out[mask == 1] == tokenizer.mask_token_id).any()  # everything else is filled
    sampled = model.reconstruct(ids, mask, steps=3, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(0))
    assert not (sampled[mask == 1] == tokenizer.mask_token_id).any()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The diffusion micro twin trained for 800 steps (about 40 s on 2 cores): (run folder, its blocks)."""
    from datasets import load_from_disk

    root = tmp_path_factory.mktemp("diffusion")
    config = Path(__file__).resolve().parents[1] / "configs" / "micro" / "diffusion_L2.yaml"
    args = ["pretrain", str(config), "--output-dir", str(root), "--set", "training.max_steps=800",
            "--set", "training.eval_steps=200", "--set", "training.save_steps=800", "--set", "training.run_name=d"]
    assert main(args) == 0
    blocks = load_from_disk(str(next((root / ".cache").glob("blocks_*")) / "train"))
    return root / "d", torch.tensor(blocks[:32]["input_ids"])


def test_training_improves_reconstruction_of_training_text(trained_run):
    run, ids = trained_run
    evals = [e["eval_loss"] for e in history(run, 800) if "eval_loss" in e]
    assert evals[-1] < evals[0]
    trained = ConceptEncoderForMaskedLM.from_pretrained(run / "model").eval()
    untrained = ConceptEncoderForMaskedLM(trained.config).eval()
    special = torch.isin(ids, torch.tensor([trained.config.cls_token_id, trained.config.sep_token_id]))

    def accuracy(model):
        out = model.reconstruct(ids, prefix_length=16, temperature=0.0, steps=8)
        target = ~special & (torch.arange(ids.shape[1]) >= 16)
        return (out[target] == ids[target]).float().mean().item()

    assert accuracy(trained) > accuracy(untrained) + 0.02


def _masked_position_loss(model, ids, masked, concepts, decoder_input, noise):
    """Decoder cross-entropy at `masked` positions, for given concepts and decoder input ids."""
    with torch.no_grad():
        embed = model.encoder.embeddings.word_embeddings
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        states = model.decoder(concepts, embed(decoder_input), positions, None, torch.full((ids.shape[0],), noise))
        logits = model.lm_head(states)
    return torch.nn.functional.cross_entropy(logits[masked], ids[masked]).item()


def test_trained_denoiser_uses_informative_neighbours(trained_run):
    """After training, masked tokens are predicted better when their neighbours survive than when the
    decoder's input is all [MASK] (same concepts, same positions scored)."""
    run, ids = trained_run
    model = ConceptEncoderForMaskedLM.from_pretrained(run / "model").eval()
    special = torch.isin(ids, torch.tensor([model.config.cls_token_id, model.config.sep_token_id]))
    masked = (torch.arange(ids.shape[1]) % 5 == 2) & ~special  # 20% of positions scored
    mask_id = model.config.mask_token_id
    few_masked = ids.masked_fill(masked, mask_id)
    all_masked = ids.masked_fill(~special, mask_id)
    with torch.no_grad():
        concepts = model.encoder(few_masked).last_hidden_state  # the same concepts for both cases
    with_neighbours = _masked_position_loss(model, ids, masked, concepts, few_masked, 0.2)
    concepts_only = _masked_position_loss(model, ids, masked, concepts, all_masked, 1.0)
    assert with_neighbours < concepts_only - 0.1, (with_neighbours, concepts_only)
