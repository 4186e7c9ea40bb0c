"""The Hugging Face `Trainer`, with a fixed-mask evaluation collator, throughput logging and rank checks."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback


class PretrainingTrainer(Trainer):
    """`Trainer` with a separate evaluation collator (fixed masks) and tokens/s in every training log."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator or self.data_collator
        self._last_log = None  # (time, tokens seen) at the previous training log

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the throughput since the previous one
            now, seen = time.perf_counter(), self.state.num_input_tokens_seen
            if self._last_log is not None and now > self._last_log[0]:
                logs["tokens_per_second"] = round((seen - self._last_log[1]) / (now - self._last_log[0]), 1)
            self._last_log = (now, seen)
        super().log(logs, start_time)


class MaskingEpochCallback(TrainerCallback):
    """Tells the training collator the epoch, so each epoch draws new masks (and a resumed epoch the same ones)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = math.floor((state.epoch or 0.0) + 1e-6)


def parameter_fingerprint(model: torch.nn.Module) -> float:
    """A float64 checksum of all parameters (equal on every data-parallel rank after a step)."""
    with torch.no_grad():
        return float(sum((p.double() * (1 + i % 7)).sum() for i, p in enumerate(model.parameters())))


def ranks_agree(model: torch.nn.Module) -> tuple[bool, list[float]]:
    """Gather every rank's parameter fingerprint; True when they are all equal."""
    mine = parameter_fingerprint(model)
    if not (dist.is_available() and dist.is_initialized()):
        return True, [mine]
    gathered: list[float] = [0.0] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return all(g == gathered[0] for g in gathered), gathered
