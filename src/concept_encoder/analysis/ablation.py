"""Concept ablation: does a decoding objective's loss depend on the concepts at all?

On labelled batches of the objective (its evaluation collator: fixed masks, deletions or noise), the
decoder's task loss is computed three times from one encoder pass: with each sample's own concepts,
with another sample's (the batch rolled by one, so every sample reads a different text's concepts),
and with zeros. An objective that taught the concepts the text loses clearly more with shuffled
concepts than with its own. Equal losses mean the decoder rebuilds the text from something else (a
bypass), whatever rank the concepts have: the gate `concepts_used` fails such a run.

A broken input (shuffled, zeroed) is a weak bar: a decoder may do much better with no text-specific input at all.
The **no-concept floor** is the strongest concept-free input to the same decoder: one constant concept set [C, H],
the same for every text, fitted by Adam to minimise the decoder's task loss (decoder frozen), cross-fitted (fit on
half of the batches, scored on the other half, and the other way round), so that the floor is the loss of the
best input-independent prior on text it was not fitted on. The fit starts from whichever of the mean concept set
and zeros scores better on its half: Adam moves each coordinate about lr per step, so from a far start 100 steps
can end worse than zeros (measured: a BiXT prefix_suffix twin fitted from its mean to 5.717 nats, zeroed 5.585).
Zeroed concepts are an input-independent set too, so `gain_used` = min(shuffled, zeroed, floor) − own: what the
concepts add over a wrong text and over every constant tried; the `concepts_used` gate reads it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..modeling.diffusion import text_positions
from ..modeling.embeddings import default_positions
from ..modeling.modeling_concept_encoder import IGNORE_INDEX
from ..reporting import progress

ABLATIONS = ("own", "shuffled", "zeroed")


def ablated_concepts(concepts: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, C, H] -> the three variants; B >= 2 (a rolled batch of one is itself)."""
    return {"own": concepts, "shuffled": concepts.roll(1, dims=0), "zeroed": torch.zeros_like(concepts)}


def _decoder_loss(model, concepts, batch) -> torch.Tensor:
    ids = batch["input_ids"]
    return model.decoding_loss(concepts, ids, batch.get("attention_mask"), batch["labels"], default_positions(ids),
                               noise_level=batch.get("noise_level"),
                               decoder_input_ids=batch.get("decoder_input_ids"))[0]


def fit_constant_concepts(model, batches: list[dict[str, torch.Tensor]], start: torch.Tensor, steps: int = 100,
                          lr: float = 0.01) -> torch.Tensor:
    """The one concept set [C, H] that minimises the frozen decoder's task loss over `batches` (Adam from `start`,
    `steps` steps, batches in turn)."""
    constant = torch.nn.Parameter(start.clone())
    optimiser = torch.optim.Adam([constant], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for step in progress(range(steps), "fit the no-concept floor", unit="step"):
                batch = batches[step % len(batches)]
                loss = _decoder_loss(model, constant.expand(batch["input_ids"].shape[0], -1, -1), batch)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return constant.detach()


def _labelled(batch: dict[str, torch.Tensor]) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def _constant_loss(model, constant: torch.Tensor, batches: list[dict[str, torch.Tensor]]) -> float:
    """The token-weighted summed task loss over `batches` when every text reads the one concept set [C, H]."""
    return sum(float(_decoder_loss(model, constant.expand(b["input_ids"].shape[0], -1, -1), b)) * _labelled(b)
               for b in batches)


@torch.no_grad()
def concept_ablation(model, batches: Iterable[dict[str, torch.Tensor]], floor_steps: int = 0) -> dict[str, float]:
    """Token-weighted mean task loss per ablation over labelled batches of `ConceptEncoderForMaskedLM`.

    Returns concept_ablation_{own, shuffled, zeroed} (nats per labelled token) and concept_ablation_gain
    = shuffled - own: what the decoder loses when it reads another text's concepts. With `floor_steps` > 0, also
    concept_ablation_floor (the cross-fitted constant's loss, see the module docstring; a single batch is split by
    rows for the cross-fit) and concept_ablation_gain_over_floor = floor - own. concept_ablation_gain_used =
    min(shuffled, zeroed, floor) - own (min(shuffled, zeroed) - own without a floor).
    """
    was_training = model.training
    model.eval()
    batches = [b for b in batches if b["input_ids"].shape[0] >= 2 and _labelled(b) > 0]
    totals, halves = dict.fromkeys(ABLATIONS, 0.0), None
    try:
        encoded = [model.encoder(model.encoder_input_ids(b["input_ids"], b["labels"]),
                                 attention_mask=b.get("attention_mask"),
                                 position_ids=default_positions(b["input_ids"])).last_hidden_state for b in batches]
        for batch, concepts in zip(batches, encoded):
            for name, variant in ablated_concepts(concepts).items():
                totals[name] += float(_decoder_loss(model, variant, batch)) * _labelled(batch)
        halves = _halves(batches, encoded) if floor_steps > 0 else None
        if halves is not None:  # cross-fitting: each half's constant, from its mean concept set, scored on the other
            totals["floor"] = 0.0
            for (fit_on, concepts), (scored, _) in (halves, halves[::-1]):
                mean = torch.cat(concepts).mean(0)
                start = min((mean, torch.zeros_like(mean)), key=lambda s, half=fit_on: _constant_loss(model, s, half))
                constant = fit_constant_concepts(model, fit_on, start, floor_steps)
                totals["floor"] += _constant_loss(model, constant, scored)
    finally:
        model.train(was_training)
    tokens = sum(_labelled(b) for b in batches)
    if tokens == 0:
        raise ValueError("concept ablation: no batch of two or more samples with a labelled token")
    result = {f"concept_ablation_{name}": value / tokens for name, value in totals.items()}
    own = result["concept_ablation_own"]
    result["concept_ablation_gain"] = result["concept_ablation_shuffled"] - own
    if halves is not None:
        result["concept_ablation_gain_over_floor"] = result["concept_ablation_floor"] - own
    result["concept_ablation_gain_used"] = min(result["concept_ablation_shuffled"], result["concept_ablation_zeroed"],
                                               result.get("concept_ablation_floor", float("inf"))) - own
    return result


def _halves(batches: list[dict], encoded: list[torch.Tensor]):
    """Two disjoint halves of the texts for cross-fitting, each as (batches, their concepts): alternate batches,
    or one batch's rows split in two; None when there are not two texts."""
    if len(batches) >= 2:
        return (batches[0::2], encoded[0::2]), (batches[1::2], encoded[1::2])
    if not batches or batches[0]["input_ids"].shape[0] < 2:
        return None
    batch, concepts, cut = batches[0], encoded[0], batches[0]["input_ids"].shape[0] // 2
    return (([{k: v[:cut] for k, v in batch.items()}], [concepts[:cut]]),
            ([{k: v[cut:] for k, v in batch.items()}], [concepts[cut:]]))


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
