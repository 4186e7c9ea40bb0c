"""One training loss from the objective config: task (or distillation) + teacher + concept regularisers + SimCSE,
weighted.

Everything runs in one forward of the (possibly DDP-wrapped) model. With SimCSE, the batch is encoded
twice in that forward (the rows duplicated, so dropout differs): the second copy carries no labels, so
the task loss is unchanged, and the two halves of the concepts are the two views. With a cutoff rate, the
second view also hides that share of each text's tokens from the concepts (token cutoff, Shen et al.
2020): a harder positive than dropout alone. Regularisers and the teacher terms read the first view's
concepts [B, C, H]; the teacher's vectors come in the batch (`teacher_vectors`, never through the model).
"""

from __future__ import annotations

import torch
from torch import nn

from .contrastive import pool_concepts, simcse_loss
from .distillation import distillation_loss
from .regularisers import regulariser
from .teacher import RELATIONAL, TEACHER, relational_loss, teacher_vector_loss
from .weighting import TASK, LossWeighting

SIMCSE = "simcse"
DISTILL = "distill"


def cut_off_tokens(attention_mask: torch.Tensor, rate: float) -> torch.Tensor:
    """The attention mask [B, N] with a `rate` share of each row's visible tokens hidden at random; every row
    keeps at least one token (a text with nothing to read has no concepts to compare)."""
    visible = attention_mask.bool()
    keep = visible & (torch.rand(visible.shape, device=visible.device) >= rate)
    first_visible = visible.int().argmax(dim=1, keepdim=True)
    empty = ~keep.any(dim=1, keepdim=True)
    keep = keep | (empty & (torch.arange(visible.shape[1], device=visible.device) == first_visible))
    return keep.to(attention_mask.dtype)


class ObjectiveLoss(nn.Module):
    def __init__(
        self,
        task: bool = True,
        regularisers: list[str] = (),
        regulariser_weight: float = 0.1,
        regulariser_scope: str = "sample",
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.05,
        contrastive_cutoff: float = 0.0,
        weighting: str = "fixed",
        log_variance_bounds: tuple[float, float] = (-2.0, 2.0),
        warmup_steps: int = 0,
        distill: bool = False,
        teacher_weight: float = 0.0,
        teacher_relational_weight: float = 0.0,
        teacher_loss: str = "cosine",
    ):
        super().__init__()
        self.task = task
        self.regularisers = {name: regulariser(name) for name in regularisers}
        self.scope = regulariser_scope
        self.distill = distill
        self.teacher = teacher_weight > 0 or teacher_relational_weight > 0
        self.teacher_loss = teacher_loss
        self.contrastive = contrastive_weight > 0 or not (task or distill or self.teacher)
        self.temperature = contrastive_temperature
        self.cutoff = contrastive_cutoff
        names = ([TASK] if task else []) + ([DISTILL] if distill else [])
        names += ([TEACHER] if teacher_weight > 0 else []) + ([RELATIONAL] if teacher_relational_weight > 0 else [])
        names += list(self.regularisers) + ([SIMCSE] if self.contrastive else [])
        fixed = {name: regulariser_weight / max(len(self.regularisers), 1) for name in self.regularisers}
        fixed[SIMCSE] = contrastive_weight if task or distill or self.teacher else 1.0
        fixed.update({DISTILL: 1.0, TEACHER: teacher_weight, RELATIONAL: teacher_relational_weight})
        self.weighting = LossWeighting(names, fixed, weighting, log_variance_bounds, warmup_steps,
                                       unramped=(TASK, TEACHER, RELATIONAL))

    @property
    def main(self) -> str:
        """The component that stands for the objective in evaluation: the task, else distillation, else the
        teacher's vector term (its relational term when that is the only one), else SimCSE."""
        if self.task or self.distill:
            return TASK if self.task else DISTILL
        if self.teacher:
            return TEACHER if TEACHER in self.weighting.names else RELATIONAL
        return SIMCSE

    @property
    def learns_weights(self) -> bool:
        return self.weighting.strategy == "kendall_gal"

    def forward(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], step: int, num_items_in_batch=None
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        """(total loss, component values, effective weights)."""
        inputs = dict(inputs)
        targets = inputs.pop("teacher_vectors", None)  # [B, D]; the model never sees them
        if self.teacher and targets is None:
            raise ValueError("the objective has a teacher term but the batch carries no teacher_vectors "
                             "(wrap the collator in objectives.teacher.WithTeacherVectors)")
        batch = inputs["input_ids"].shape[0]
        if self.contrastive:  # two dropout views in one forward
            cutoff = self.cutoff > 0 and model.training  # evaluation stays deterministic (fixed validation loss)
            if cutoff and "attention_mask" not in inputs:  # packed blocks: every token visible
                inputs = dict(inputs, attention_mask=torch.ones_like(inputs["input_ids"]))
            second = dict(inputs)
            if "labels" in inputs:  # the second view teaches only the contrastive loss
                second["labels"] = torch.full_like(inputs["labels"], -100)
            if cutoff:
                second["attention_mask"] = cut_off_tokens(inputs["attention_mask"], self.cutoff)
            inputs = {k: torch.cat([v, second[k]]) for k, v in inputs.items()}
        out = model(**inputs, decode=self.task, num_items_in_batch=num_items_in_batch)
        concepts = out.concepts
        losses: dict[str, torch.Tensor] = {}
        if self.task:
            losses[TASK] = out.loss
        if self.distill:
            mask = inputs.get("attention_mask")
            losses[DISTILL] = distillation_loss(concepts[:batch], out.token_states[:batch],
                                                None if mask is None else mask[:batch])
        if self.teacher:
            pooled = pool_concepts(concepts[:batch])  # [B, H]
            if TEACHER in self.weighting.names:
                projection = getattr(getattr(model, "module", model), "teacher_projection", None)  # DDP-wrapped too
                student = projection(pooled) if projection is not None else pooled
                losses[TEACHER] = teacher_vector_loss(student, targets, self.teacher_loss)
            if RELATIONAL in self.weighting.names:
                losses[RELATIONAL] = relational_loss(pooled, targets)
        for name, fn in self.regularisers.items():
            losses[name] = fn(concepts[:batch], scope=self.scope)
        if self.contrastive:
            losses[SIMCSE] = simcse_loss(pool_concepts(concepts[:batch]), pool_concepts(concepts[batch:]), self.temperature)
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise FloatingPointError(f"loss component {name!r} is {value.item()} at step {step}; stopping "
                                         "(the last checkpoint on disk is the last good one)")
        total, weights = self.weighting(losses, step)
        return total, {name: float(value.detach()) for name, value in losses.items()}, weights
