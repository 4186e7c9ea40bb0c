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
    ids = {i for token, i in tokenizer.get_vocab().items()
           if token.lstrip("#Ġ▁").strip() in SENTENCE_ENDS and token.lstrip("#Ġ▁").strip() != ""}
    if tokenizer.sep_token_id is not None:
        ids.add(tokenizer.sep_token_id)
    return sorted(ids)


def split_point(n: int, target: int, ends: np.ndarray, window: int, min_side: int) -> int:
    """The prefix length of a text of n tokens: the cut after a sentence end (`ends`: positions of sentence-end
    tokens; cutting after position j gives a prefix of j + 1 tokens) nearest to `target` within `window`
    tokens, else `target`; both sides keep at least `min_side` tokens."""
    lo, hi = min_side, n - min_side
    target = min(max(target, lo), hi)
    cuts = ends + 1
    cuts = cuts[(cuts >= lo) & (cuts <= hi) & (np.abs(cuts - target) <= window)]
    if cuts.size == 0:
        return target
    return int(cuts[np.argmin(np.abs(cuts - target))])


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

    def prefix_lengths(self, features: list[dict]) -> np.ndarray:
        """The prefix length of each block [B] (deterministic in seed, epoch and block index)."""
        index = np.array([f["index"] for f in features], dtype=np.int64)
        shares = self.share_min + (self.share_max - self.share_min) * self.uniform(STREAM_SHARE, index, 1)[:, 0]
        cuts = []
        for f, share in zip(features, shares):
            ids = np.asarray(f["input_ids"])
            n = len(ids)
            if not self.splittable(n):
                raise ValueError(f"block {f['index']} has {n} tokens: too short to split into a prefix and a "
                                 f"suffix of {self.min_side_tokens} tokens each (prepare filters these out)")
            ends = np.flatnonzero(np.isin(ids, self._ends))
            cuts.append(split_point(n, round(share * n), ends, round(self.boundary_window * n), self.min_side_tokens))
        return np.array(cuts, dtype=np.int64)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        cuts = self.prefix_lengths(features)
        prefixes = [{"input_ids": f["input_ids"][:c], "index": f["index"]} for f, c in zip(features, cuts)]
        suffixes = [{"input_ids": f["input_ids"][c:], "index": f["index"]} for f, c in zip(features, cuts)]
        ids, real, index = pad_blocks(prefixes, self.pad_token_id, self.pad_to_multiple_of)
        targets, scored, _ = pad_blocks(suffixes, self.pad_token_id, self.pad_to_multiple_of)
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
