"""Concept ablation: does a decoding objective's loss depend on the concepts at all?

On labelled batches of the objective (its evaluation collator: fixed masks, deletions or noise), the
decoder's task loss is computed three times from one encoder pass: with each sample's own concepts,
with another sample's (the batch rolled by one, so every sample reads a different text's concepts),
and with zeros. An objective that taught the concepts the text loses clearly more with shuffled
concepts than with its own. Equal losses mean the decoder rebuilds the text from something else (a
bypass), whatever rank the concepts have: the gate `concepts_used` fails such a run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..modeling.diffusion import text_positions
from ..modeling.embeddings import default_positions
from ..modeling.modeling_concept_encoder import IGNORE_INDEX

ABLATIONS = ("own", "shuffled", "zeroed")


def ablated_concepts(concepts: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, C, H] -> the three variants; B >= 2 (a rolled batch of one is itself)."""
    return {"own": concepts, "shuffled": concepts.roll(1, dims=0), "zeroed": torch.zeros_like(concepts)}


@torch.no_grad()
def concept_ablation(model, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Token-weighted mean task loss per ablation over labelled batches of `ConceptEncoderForMaskedLM`.

    Returns concept_ablation_{own, shuffled, zeroed} (nats per labelled token) and concept_ablation_gain
    = shuffled - own: what the decoder loses when it reads another text's concepts.
    """
    was_training = model.training
    model.eval()
    totals, tokens = dict.fromkeys(ABLATIONS, 0.0), 0
    try:
        for batch in batches:
            ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
            labelled = int((labels != IGNORE_INDEX).sum())
            if ids.shape[0] < 2 or labelled == 0:
                continue
            positions = default_positions(ids)
            concepts = model.encoder(model.encoder_input_ids(ids, labels), attention_mask=mask,
                                     position_ids=positions).last_hidden_state
            for name, variant in ablated_concepts(concepts).items():
                loss = model.decoding_loss(variant, ids, mask, labels, positions, noise_level=batch.get("noise_level"),
                                           decoder_input_ids=batch.get("decoder_input_ids"))[0]
                totals[name] += float(loss) * labelled
            tokens += labelled
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("concept ablation: no batch of two or more samples with a labelled token")
    result = {f"concept_ablation_{name}": totals[name] / tokens for name in ABLATIONS}
    result["concept_ablation_gain"] = result["concept_ablation_shuffled"] - result["concept_ablation_own"]
    return result


def collated_batches(collator, features: list[dict], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Fixed batches of `features` ({input_ids, index}) from an objective's collator."""
    return [collator(features[start : start + batch_size]) for start in range(0, len(features), batch_size)]


def noised_batch(ids: torch.Tensor, config, t: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A diffusion batch of unpadded blocks [B, N] with a share t of the scored tokens masked, one noise level
    for every block (the training collator draws t per block; a fixed t shows the loss at that level)."""
    noise = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed)).to(ids.device)
    masked = text_positions(ids, config) & (noise < t)
    return {"input_ids": ids.masked_fill(masked, config.mask_token_id), "attention_mask": torch.ones_like(ids),
            "labels": ids.masked_fill(~masked, IGNORE_INDEX), "noise_level": torch.full((len(ids),), t, device=ids.device)}


@torch.no_grad()
def reconstruction_against_frequency(model, train_ids: torch.Tensor, held_out_ids: torch.Tensor,
                                     steps: int = 8, t: float = 0.6) -> dict[str, float]:
    """A diffusion model's `reconstruct` of held-out blocks against the trivial bar of the training text's
    unigram frequencies: accuracy vs always guessing the most frequent training token, and the masked-token
    cross-entropy at noise level t vs the (add-one) unigram distribution's."""
    config = model.config
    scored = text_positions(held_out_ids, config)
    targets = held_out_ids[scored]
    counts = torch.bincount(train_ids[text_positions(train_ids, config)], minlength=config.vocab_size).float()
    unigram = (counts + 1) / (counts + 1).sum()
    rebuilt = model.reconstruct(held_out_ids, temperature=0.0, steps=steps)
    return {
        "tokens": int(scored.sum()),
        "reconstruct_accuracy": (rebuilt[scored] == targets).float().mean().item(),
        "frequency_accuracy": (targets == counts.argmax()).float().mean().item(),
        "cross_entropy": model(**noised_batch(held_out_ids, config, t)).loss.item(),
        "unigram_cross_entropy": -unigram.log()[targets].mean().item(),
    }
