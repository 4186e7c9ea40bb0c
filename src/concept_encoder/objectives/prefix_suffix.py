"""Prefix -> suffix prediction: encode the start of a text, decode the rest from the concepts alone.

Each block is cut in two at a sentence boundary so that the prefix holds a share s ~ U(share_min, share_max)
of its tokens: the cut is the sentence end (a token that ends in `.`, `!` or `?`, or a document's [SEP])
nearest to round(s·n), if one lies within `boundary_window`·n tokens of it; otherwise the drawn token cut.
The encoder reads the prefix only. The autoregressive decoder rebuilds the suffix left to right by teacher
forcing, cross-attending to the prefix's concepts and nothing else; a share `word_dropout` of its input
tokens is replaced by [MASK] (so it leans on the concepts, not on copying its own history). Loss: cross-
entropy on every suffix token. The upstream line found this the only objective whose concept rank grew with
training (`../shared/reference/upstream_findings.md`).

Randomness is counter-based (`masking.py`): the cut and the dropout of a block depend on (seed, epoch, block
index) alone, so the evaluation collator's fixed seed gives the same split points at every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .masking import IGNORE_INDEX, CorruptionCollator, pad_blocks

STREAM_SHARE, STREAM_WORD_DROPOUT = 21, 22
SENTENCE_ENDS = (".", "!", "?")


def sentence_end_ids(tokenizer) -> list[int]:
    """Ids of every vocabulary entry that ends a sentence: `.`, `!`, `?` alone or with a word-piece /
    byte-level marker (`##.`, `Ġ.`, `▁.`), plus [SEP], which ends a document in packed blocks."""
    ids = {i for token, i in tokenizer.get_vocab().items() if token.lstrip("#Ġ▁").strip() in SENTENCE_ENDS}
    if tokenizer.sep_token_id is not None:
        ids.add(tokenizer.sep_token_id)
    return sorted(ids)


def split_points(lengths: np.ndarray, targets: np.ndarray, is_end: np.ndarray, windows: np.ndarray,
                 min_side: int) -> np.ndarray:
    """Prefix lengths [B] of blocks of `lengths` [B] tokens: the cut after a sentence end (`is_end` [B, N]; cutting
    after position j gives a prefix of j + 1 tokens) nearest to `targets` [B] within `windows` [B] tokens (a tie
    goes to the earlier cut), else the target; both sides keep at least `min_side` tokens."""
    targets = np.clip(targets, min_side, lengths - min_side)
    cuts = np.arange(1, is_end.shape[1] + 1)[None, :]  # [1, N]
    distance = np.abs(cuts - targets[:, None])
    allowed = is_end & (cuts >= min_side) & (cuts <= (lengths - min_side)[:, None]) & (distance <= windows[:, None])
    nearest = np.where(allowed, distance, np.iinfo(np.int64).max).argmin(axis=1)  # the first of equal distances
    return np.where(allowed.any(axis=1), nearest + 1, targets)


@dataclass(kw_only=True)
class PrefixSuffixCollator(CorruptionCollator):
    start_token_id: int  # the decoder's first input ([CLS] or BOS)
    sentence_end_ids: list[int]
    share_min: float = 0.35
    share_max: float = 0.45
    boundary_window: float = 0.1  # a sentence end this far (share of the text) from the drawn cut is taken instead
    word_dropout: float = 0.2
    min_side_tokens: int = 4
    _ends: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.share_min <= self.share_max < 1.0:
            raise ValueError(f"prefix shares need 0 < share_min <= share_max < 1, got {self.share_min}, "
                             f"{self.share_max}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        self._ends = np.array(self.sentence_end_ids, dtype=np.int64)

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings):
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        return super().for_tokenizer(tokenizer, start_token_id=start, sentence_end_ids=sentence_end_ids(tokenizer),
                                     **settings)

    def splittable(self, length: int) -> bool:
        """Whether a block of `length` tokens has room for a prefix and a suffix of min_side_tokens each."""
        return length >= 2 * self.min_side_tokens

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        blocks, real, index = pad_blocks(features, self.pad_token_id, 1)
        lengths = real.sum(axis=1)
        if not self.splittable(int(lengths.min())):
            short = features[int(lengths.argmin())]
            raise ValueError(f"block {short['index']} has {lengths.min()} tokens: too short to split into a prefix "
                             f"and a suffix of {self.min_side_tokens} tokens each (prepare filters these out)")
        shares = self.share_min + (self.share_max - self.share_min) * self.uniform(STREAM_SHARE, index, 1)[:, 0]
        cuts = split_points(lengths, np.rint(shares * lengths).astype(np.int64), np.isin(blocks, self._ends) & real,
                            np.rint(self.boundary_window * lengths).astype(np.int64), self.min_side_tokens)
        ids, real = _window(blocks, np.zeros_like(cuts), cuts, self.pad_token_id, self.pad_to_multiple_of)
        targets, scored = _window(blocks, cuts, lengths, self.pad_token_id, self.pad_to_multiple_of)
        # teacher forcing: the decoder reads [start], s_0 .. s_{M-2}, a share of the s_* hidden behind [MASK]
        inputs = np.concatenate([np.full((len(features), 1), self.start_token_id), targets[:, :-1]], axis=1)
        fed = np.concatenate([np.ones_like(scored[:, :1]), scored[:, :-1]], axis=1)  # real decoder inputs
        dropped = (self.uniform(STREAM_WORD_DROPOUT, index, inputs.shape[1]) < self.word_dropout) & fed
        dropped[:, 0] = False  # never the start token
        inputs = np.where(dropped, self.mask_token_id, np.where(fed, inputs, self.pad_token_id))
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
            "labels": torch.from_numpy(np.where(scored, targets, IGNORE_INDEX)),
            "decoder_input_ids": torch.from_numpy(inputs.astype(np.int64)),
        }


def _window(blocks: np.ndarray, start: np.ndarray, end: np.ndarray, pad_id: int, multiple: int):
    """Tokens [start_b, end_b) of each row of `blocks` [B, N], moved to the front and right-padded to a multiple:
    (ids [B, W], real-token mask [B, W])."""
    width = -(-int((end - start).max()) // multiple) * multiple
    position = start[:, None] + np.arange(width)[None, :]  # [B, W]
    real = position < end[:, None]
    ids = np.take_along_axis(blocks, np.minimum(position, blocks.shape[1] - 1), axis=1)
    return np.where(real, ids, pad_id), real
