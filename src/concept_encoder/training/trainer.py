"""The Hugging Face `Trainer`, with a fixed-mask evaluation collator, throughput logging and rank checks."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback


class PretrainingTrainer(Trainer):
    """`Trainer` with a composite objective, a separate evaluation collator (fixed masks), and every loss
    component, learned weight and tokens/s in each training log.

    Evaluation reports the task loss alone (`eval_loss`), so runs with different regularisers compare; an
    objective without a reconstruction task (SimCSE, distillation) reports its own main loss instead.
    """

    def __init__(self, *args, eval_data_collator=None, objective_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator or self.data_collator
        self.objective_loss = objective_loss
        self._last_log = None  # (time, tokens seen) at the previous training log
        self._components: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if (self.objective_loss is None or self.objective_loss.task) and not model.training:
            inputs = {k: v for k, v in inputs.items() if k != "teacher_vectors"}  # eval_loss is the task's alone
        if self.objective_loss is not None and not model.training and not self.objective_loss.task:
            _, values, _ = self.objective_loss(model, inputs, self.state.global_step, num_items_in_batch)
            loss = torch.tensor(values[self.objective_loss.main], device=inputs["input_ids"].device)
            return (loss, None) if return_outputs else loss
        if self.objective_loss is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        total, values, weights = self.objective_loss(model, inputs, self.state.global_step, num_items_in_batch)
        for name, value in values.items():
            self._components.setdefault(f"loss_{name}", []).append(value)
        for name, weight in weights.items():
            self._components.setdefault(f"weight_{name}", []).append(weight)
        return (total, None) if return_outputs else total

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if self.objective_loss is None or self.objective_loss.task:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        # no labels in a SimCSE / distillation batch: the Trainer would skip the loss, so compute it here
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():  # autocast as in training
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _save_checkpoint(self, model, trial):
        # never publish weights that are already broken: the last checkpoint on disk stays the last good one
        broken = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            raise FloatingPointError(f"non-finite parameters ({broken[0]} and {len(broken) - 1} more) at step "
                                     f"{self.state.global_step}; not saving, stopping")
        super()._save_checkpoint(model, trial)

    def get_decay_parameter_names(self, model) -> list[str]:
        # learned loss weights are log-variances: decaying them would pull every weight towards 1/2
        return [n for n in super().get_decay_parameter_names(model) if "loss_weighting" not in n]

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
            for name, values in self._components.items():  # mean since the previous log
                logs[name] = round(sum(values) / len(values), 6)
            self._components = {}
        super().log(logs, start_time)


class MaskingEpochCallback(TrainerCallback):
    """Tells the training collator the epoch, so each epoch draws new masks (and a resumed epoch the same ones)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.collator, "epoch"):  # collators without randomness (SimCSE padding) have none
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
