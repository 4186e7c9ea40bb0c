"""MLM and span-masking collators with counter-based randomness.

Every random number is a hash of (seed, epoch, block index, position, stream), not a draw from a
global generator. So the masks of a block depend only on those keys: validation masks are identical at
every evaluation, data-parallel ranks and resumed runs see exactly the masks of an uninterrupted
single-process run, and no RNG state needs saving. Everything is vectorised over the batch.

Selection never touches pads or special tokens. Selected tokens (spans, for span masking) are
replaced by [MASK] with probability `mask_token_fraction`, by a random non-special token with
probability `random_token_fraction`, and kept otherwise (BERT's 80/10/10); labels are the original
ids at selected positions and -100 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE_INDEX = -100
_U64 = np.uint64
_GOLDEN, _MIX1, _MIX2 = _U64(0x9E3779B97F4A7C15), _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
STREAM_SELECT, STREAM_REPLACE, STREAM_TOKEN, STREAM_LENGTH, STREAM_GAP = 1, 2, 3, 4, 5


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrap-around arithmetic is defined for numpy unsigned ints)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> _U64(30))) * _MIX1
        x = (x ^ (x >> _U64(27))) * _MIX2
    return x ^ (x >> _U64(31))


def counter_uniform(seed: int, epoch: int, stream: int, index: np.ndarray, width: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape [len(index), width], a pure function of all the keys."""
    key = _splitmix(np.array([seed, epoch, stream], dtype=np.uint64)).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix(_splitmix(key[0] ^ _splitmix(key[1] ^ key[2])) + index.astype(np.uint64))  # [B]
        x = _splitmix(base[:, None] + np.arange(width, dtype=np.uint64)[None, :] * _GOLDEN)  # [B, width]
    return (x >> _U64(11)).astype(np.float64) / float(2**53)


def pad_blocks(features: list[dict], pad_token_id: int, multiple: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks -> (ids [B, N] right-padded to a multiple, real-token mask [B, N], block index [B])."""
    lengths = np.array([len(f["input_ids"]) for f in features])
    width = -(-int(lengths.max()) // multiple) * multiple
    ids = np.full((len(features), width), pad_token_id, dtype=np.int64)
    for row, f in enumerate(features):
        ids[row, : lengths[row]] = f["input_ids"]
    real = np.arange(width)[None, :] < lengths[:, None]
    return ids, real, np.array([f["index"] for f in features], dtype=np.int64)


@dataclass(kw_only=True)
class CorruptionCollator:
    """Shared by the collators that corrupt whole blocks (deletion, diffusion noise): ids, specials, keys."""

    pad_token_id: int
    mask_token_id: int
    special_token_ids: list[int]
    seed: int = 0
    epoch: int = 0  # set at each epoch by the trainer callback
    pad_to_multiple_of: int = 8
    _special: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self._special = np.array(sorted(set(self.special_token_ids) | {self.pad_token_id}), dtype=np.int64)

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings):
        return cls(pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                   special_token_ids=list(tokenizer.all_special_ids), **settings)

    def pad(self, features: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, real-token mask, corruptible mask (real, not special), block index)."""
        ids, real, index = pad_blocks(features, self.pad_token_id, self.pad_to_multiple_of)
        return ids, real, real & ~np.isin(ids, self._special), index

    def uniform(self, stream: int, index: np.ndarray, width: int) -> np.ndarray:
        return counter_uniform(self.seed, self.epoch, stream, index, width)


@dataclass
class MaskingCollator:
    """Pads a list of blocks and masks them: token MLM (`objective="mlm"`) or span masking (`"span"`)."""

    pad_token_id: int
    mask_token_id: int
    vocab_size: int
    special_token_ids: list[int]
    objective: str = "mlm"
    rate: float = 0.15
    span_min: int = 3
    span_max: int = 10
    mask_token_fraction: float = 0.8
    random_token_fraction: float = 0.1
    seed: int = 0
    epoch: int = 0  # set at each epoch by the trainer callback: a new epoch draws new masks
    pad_to_multiple_of: int = 8
    _special: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.objective not in ("mlm", "span"):
            raise ValueError(f"objective must be 'mlm' or 'span', got {self.objective!r}")
        self._special = np.array(sorted(set(self.special_token_ids) | {self.pad_token_id}), dtype=np.int64)

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings) -> MaskingCollator:
        return cls(
            pad_token_id=tokenizer.pad_token_id,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            special_token_ids=list(tokenizer.all_special_ids),
            **settings,
        )

    # ------------------------------------------------------------------ batch
    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, attention, index = pad_blocks(features, self.pad_token_id, self.pad_to_multiple_of)
        width = ids.shape[1]
        maskable = attention & ~np.isin(ids, self._special)
        if self.objective == "mlm":
            selected = (self._uniform(STREAM_SELECT, index, width) < self.rate) & maskable
            decision = self._uniform(STREAM_REPLACE, index, width)  # one draw per token
        else:
            selected, decision = self._select_spans(index, maskable)  # one draw per span

        labels = np.where(selected, ids, IGNORE_INDEX)
        masked = selected & (decision < self.mask_token_fraction)
        randomised = selected & ~masked & (decision < self.mask_token_fraction + self.random_token_fraction)
        random_ids = (self._uniform(STREAM_TOKEN, index, width) * self.vocab_size).astype(np.int64)
        randomised &= ~np.isin(random_ids, self._special)  # a special id drawn keeps the original token
        ids = np.where(masked, self.mask_token_id, np.where(randomised, random_ids, ids))
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "labels": torch.from_numpy(labels),
        }

    def _uniform(self, stream: int, index: np.ndarray, width: int) -> np.ndarray:
        return counter_uniform(self.seed, self.epoch, stream, index, width)

    # ------------------------------------------------------------------ spans
    def _select_spans(self, index: np.ndarray, maskable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Non-overlapping spans of span_min..span_max maskable tokens covering about `rate` of each row.

        Spans and the gaps between them (>= 1 token, so spans never merge) are laid out left to right:
        lengths uniform in [min, max], gaps geometric with mean mean_len * (1 - rate) / rate, the layout
        starting a random fraction of one span+gap cycle before the row. A span is clipped at the row
        start and at the first non-maskable token, and dropped if that leaves it shorter than span_min.
        Returns (selected [B, N], the span's own uniform draw at each of its positions).
        """
        B, N = maskable.shape
        lo, hi = self.span_min, self.span_max
        mean_len = (lo + hi) / 2
        # spans clipped away at the row's two ends cost about one mean span per row: ask for that much more
        n = np.maximum(maskable.sum(axis=1, keepdims=True), 1)  # [B, 1]
        rate = np.minimum(self.rate * (n + mean_len) / n, 0.95)
        mean_gap = np.maximum(mean_len * (1 - rate) / rate, 1.0)  # [B, 1]
        cycle = mean_len + mean_gap
        S = int((N + cycle.max()) // (lo + 1)) + 1  # enough spans to pass the end of the row
        lengths = lo + np.floor(self._uniform(STREAM_LENGTH, index, S) * (hi - lo + 1)).astype(np.int64)
        # gap = 1 + Geometric(p) on {0, 1, ...} with mean mean_gap - 1; the first gap may be 0
        p = 1.0 / mean_gap
        u = self._uniform(STREAM_GAP, index, S)
        with np.errstate(divide="ignore"):  # p == 1 (gap always 1): log1p(-1) = -inf gives extra 0
            extra = np.floor(np.log1p(-u) / np.log1p(-p)).astype(np.int64)
        gaps = extra + 1
        # start the layout a random part of a cycle before the row, so the row's start is covered like its middle
        offset = np.floor(self._uniform(STREAM_GAP, index + (1 << 40), 1) * cycle).astype(np.int64)  # [B, 1]
        ends = np.cumsum(gaps + lengths, axis=1) - offset  # [B, S]
        starts = np.maximum(ends - lengths, 0)

        # first non-maskable position at or after each position (N if none): clip spans there
        positions = np.where(maskable, N, np.arange(N)[None, :])
        next_blocked = np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1]
        in_row = (starts < N) & (ends > 0)
        safe_starts = np.minimum(starts, N - 1)
        stop = np.minimum(ends, np.take_along_axis(next_blocked, safe_starts, axis=1))
        keep = in_row & (stop - starts >= lo)

        draws = self._uniform(STREAM_REPLACE, index, S)
        delta = np.zeros((B, N + 1), dtype=np.float64)  # +draw at a span's start, -draw at its stop
        count = np.zeros((B, N + 1), dtype=np.int64)
        rows = np.broadcast_to(np.arange(B)[:, None], starts.shape)
        np.add.at(count, (rows[keep], starts[keep]), 1)
        np.add.at(count, (rows[keep], stop[keep]), -1)
        np.add.at(delta, (rows[keep], starts[keep]), draws[keep])
        np.add.at(delta, (rows[keep], stop[keep]), -draws[keep])
        selected = np.cumsum(count, axis=1)[:, :N] > 0
        decision = np.where(selected, np.cumsum(delta, axis=1)[:, :N], 1.0)
        return selected, decision


@dataclass
class PaddingCollator:
    """Pads blocks, no labels: for objectives that need only the text (SimCSE alone)."""

    pad_token_id: int
    pad_to_multiple_of: int = 8

    @classmethod
    def for_tokenizer(cls, tokenizer, **settings) -> PaddingCollator:
        return cls(pad_token_id=tokenizer.pad_token_id)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, real, _ = pad_blocks(features, self.pad_token_id, self.pad_to_multiple_of)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(real.astype(np.int64))}
