"""MLM and span-masking collators on real WikiText blocks tokenised by MiniLM."""

import numpy as np
import pytest
import torch

from concept_encoder.data.blocks import build_blocks
from concept_encoder.data.corpus import load_documents
from concept_encoder.data.local import resolve_data_dir
from concept_encoder.objectives import MaskingCollator


@pytest.fixture(scope="module")
def features(tokenizer):
    """Real variable-length blocks (document packing, so batches carry padding)."""
    docs = load_documents(["wikitext/wiki.valid.raw.gz"], resolve_data_dir())
    blocks = build_blocks(docs, tokenizer, block_size=128, packing="document", validation_fraction=0.1)
    return [blocks.train[i] for i in range(512)]


def collate(tokenizer, features, **settings):
    return MaskingCollator.for_tokenizer(tokenizer, **settings)(features)


def runs_of(selected: np.ndarray) -> list[int]:
    lengths = []
    for row in selected:
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        lengths.extend((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist())
    return lengths


@pytest.mark.parametrize("objective, rate", [("mlm", 0.15), ("mlm", 0.4), ("span", 0.3), ("span", 0.15)])
def test_rate_pads_and_specials(tokenizer, features, objective, rate):
    batch = collate(tokenizer, features, objective=objective, rate=rate)
    original = np.full(batch["input_ids"].shape, tokenizer.pad_token_id)
    for row, f in enumerate(features):
        original[row, : len(f["input_ids"])] = f["input_ids"]
    selected = (batch["labels"] != -100).numpy()
    special = np.isin(original, tokenizer.all_special_ids)
    real = batch["attention_mask"].numpy().astype(bool)
    maskable = real & ~special
    assert not selected[~maskable].any()  # pads and [CLS]/[SEP] are never masked or labelled
    assert (batch["input_ids"].numpy()[~maskable] == original[~maskable]).all()  # nor replaced
    assert (batch["labels"].numpy()[selected] == original[selected]).all()
    assert abs(selected.sum() / maskable.sum() - rate) < 0.02
    ids = batch["input_ids"].numpy()[selected]
    as_mask = (ids == tokenizer.mask_token_id).mean()
    kept = (ids == original[selected]).mean()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03  # 80/10/10 (by token or by span)


def test_span_lengths_stay_within_bounds(tokenizer, features):
    batch = collate(tokenizer, features, objective="span", rate=0.3, span_min=3, span_max=10)
    lengths = runs_of((batch["labels"] != -100).numpy())
    assert min(lengths) >= 3 and max(lengths) <= 10
    assert 5.5 < np.mean(lengths) < 7.0  # uniform 3..10 has mean 6.5 (clipping shortens a few)
    narrow = collate(tokenizer, features, objective="span", rate=0.3, span_min=2, span_max=4)
    assert set(runs_of((narrow["labels"] != -100).numpy())) <= {2, 3, 4}


@pytest.mark.parametrize("objective", ["mlm", "span"])
def test_masks_are_a_function_of_seed_epoch_and_block_only(tokenizer, features, objective):
    batch = collate(tokenizer, features[:64], objective=objective, seed=7)
    again = collate(tokenizer, features[:64], objective=objective, seed=7)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    # a block gets the same mask whatever batch it lands in and in whatever order
    order = list(range(64))[::-1]
    reversed_batch = collate(tokenizer, [features[i] for i in order], objective=objective, seed=7)
    for new_row, old_row in enumerate(order):
        width = int(batch["attention_mask"][old_row].sum())
        assert torch.equal(reversed_batch["labels"][new_row, :width], batch["labels"][old_row, :width])
    assert not torch.equal(collate(tokenizer, features[:64], objective=objective, seed=8)["labels"], batch["labels"])
    assert not torch.equal(collate(tokenizer, features[:64], objective=objective, seed=7, epoch=1)["labels"],
                           batch["labels"])


def test_dynamic_padding_to_a_multiple_of_eight(tokenizer, features):
    batch = collate(tokenizer, features[:5])
    longest = max(len(f["input_ids"]) for f in features[:5])
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
