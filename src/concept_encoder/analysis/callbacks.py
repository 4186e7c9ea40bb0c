"""Concept diagnostics and the concept ablation during pretraining, logged beside eval_loss at every evaluation
(and to any tracker). `pretrain` knows nothing of them: the pipeline (the CLI verb, `run_experiment`) hands it
`attach_during_training`, which adds them to the Trainer as `analysis.during_training` says."""

from __future__ import annotations

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..objectives import TASKLESS
from .ablation import collated_batches, concept_ablation
from .probe import probe_batches

logger = logging.get_logger(__name__)

LOGGED = {  # diagnostics key -> logged name
    "effective_rank_per_sample": "concepts/effective_rank_per_sample",
    "effective_rank_global": "concepts/effective_rank_global",
    "sum_max_rank_original": "concepts/sum_max_rank_original",
    "similarity_abs_mean": "concepts/similarity_abs_mean",
    "similarity_max": "concepts/similarity_max",
    "dominance_per_sample": "concepts/dominance_per_sample",
    "participation_ratio": "concepts/participation_ratio",
    "attention_entropy": "concepts/attention_entropy",
    "static_concepts": "concepts/static_concepts",
}


class ConceptDiagnosticsCallback(TrainerCallback):
    """After each evaluation, probe the encoder on fixed validation blocks and `trainer.log` the diagnostics.

    Built with the trainer it logs through (`attach`), so the numbers land in the log history, the
    console and every `report_to` tracker like any other metric.
    """

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 32):
        self.input_ids, self.attention_mask, self.batch_size = input_ids, attention_mask, batch_size
        self.trainer = None

    @classmethod
    def attach(cls, trainer, blocks, count: int, batch_size: int = 32) -> ConceptDiagnosticsCallback | None:
        """Probe on the first `count` blocks of a dataset with an `input_ids` column (padded to one length).
        None (and a warning) when there are fewer than 2 blocks: diagnostics compare inputs."""
        if len(blocks) < 2:
            logger.warning("concept diagnostics during training need >= 2 validation blocks; %d here: off", len(blocks))
            return None
        rows = [blocks[i]["input_ids"] for i in range(min(count, len(blocks)))]
        width = max(len(r) for r in rows)
        pad = trainer.model.config.pad_token_id or 0
        ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        callback = cls(ids, mask, batch_size)
        callback.trainer = trainer
        trainer.add_callback(callback)
        return callback

    def on_evaluate(self, args, state, control, **kwargs):
        if self.trainer is None:
            return
        model = self.trainer.model
        encoder = getattr(model, "encoder", model)
        batches = ((self.input_ids[i : i + self.batch_size], self.attention_mask[i : i + self.batch_size])
                   for i in range(0, len(self.input_ids), self.batch_size))
        diagnostics = probe_batches(encoder, batches)["diagnostics"]
        self.trainer.log({name: round(float(diagnostics[key]), 5) for key, name in LOGGED.items()})


class ConceptAblationCallback(TrainerCallback):
    """After each evaluation, the task loss with own / shuffled / zeroed concepts on fixed validation batches
    of the objective (`analysis/ablation.py`), logged as concepts/ablation_* beside eval_loss."""

    def __init__(self, trainer, batches: list[dict]):
        self.trainer, self.batches = trainer, batches

    @classmethod
    def attach(cls, trainer, blocks, collator, count: int, batch_size: int = 32) -> ConceptAblationCallback | None:
        """Batches of the first `count` validation blocks from the objective's evaluation collator (fixed
        masks); None (and a warning) with fewer than 2 blocks: shuffling needs another sample."""
        if len(blocks) < 2:
            logger.warning("concept ablation during training needs >= 2 validation blocks; %d here: off", len(blocks))
            return None
        features = [blocks[i] for i in range(min(count, len(blocks)))]
        callback = cls(trainer, collated_batches(collator, features, batch_size))
        trainer.add_callback(callback)
        return callback

    def on_evaluate(self, args, state, control, **kwargs):
        device = self.trainer.args.device
        batches = ({k: v.to(device) for k, v in batch.items()} for batch in self.batches)
        result = concept_ablation(self.trainer.model, batches)
        self.trainer.log({f"concepts/{key.removeprefix('concept_')}": round(value, 5) for key, value in result.items()})


def attach_during_training(trainer, prepared) -> None:
    """`pretrain`'s hook (`attach=`): with `analysis.during_training`, the diagnostics of the first
    `during_training_blocks` validation blocks, and for an objective that decodes, their concept ablation under
    the objective's evaluation collator."""
    analysis = prepared.experiment.analysis
    if not analysis.during_training:
        return
    validation = prepared.blocks.validation
    ConceptDiagnosticsCallback.attach(trainer, validation, analysis.during_training_blocks, analysis.batch_size)
    if prepared.experiment.objective.name not in TASKLESS:  # a decoder to ablate the concepts for
        ConceptAblationCallback.attach(trainer, validation, prepared.eval_collator, analysis.during_training_blocks,
                                       analysis.batch_size)
