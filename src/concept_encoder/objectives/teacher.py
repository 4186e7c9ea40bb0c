"""Teacher distillation into any student: the pooled concepts learn a frozen sentence encoder's vectors.

The teacher (all-MiniLM-L6-v2 by default) never runs during training: its L2-normalised sentence vector of
every block is computed once before training and cached on disk (`data/teacher_targets.py`); the collator
hands each batch its rows as `teacher_vectors` [B, D]. Two terms, each a weighted loss component:
- `teacher`: the student's pooled vector s [B, H] (the mean concept; through an optional linear projection
  H -> D when the widths differ) towards the teacher's t [B, D]:
  cosine: mean_b (1 - cos(s_b, t_b));  mse: mean_b ||s_b - t_b||^2 (t is unit-norm, so s learns its norm too).
- `teacher_relational`: the in-batch geometry. S = cos(s_i, s_j) of the *unprojected* pooled vectors (what
  zero-shot cosine reads), T = t_i · t_j; the mean of (S_ij - T_ij)^2 over the B(B-1) pairs i != j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEACHER = "teacher"
RELATIONAL = "teacher_relational"
TEACHER_LOSSES = ("cosine", "mse")


def teacher_vector_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """[B, D] student (already projected) vs [B, D] teacher vectors -> scalar, in float32."""
    student, teacher = student.float(), teacher.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "mse":
        return (student - teacher).pow(2).sum(-1).mean()
    raise ValueError(f"teacher loss must be one of {TEACHER_LOSSES}, got {kind!r}")


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared gap between the student's [B, B] cosine matrix and the teacher's, off the diagonal."""
    batch = student.shape[0]
    if batch < 2:
        return student.float().sum() * 0.0  # no pair to compare; keeps the graph
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    gap = (s @ s.T - t @ t.T).pow(2)  # [B, B]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=gap.device)
    return gap[off_diagonal].mean()


class WithTeacherVectors:
    """Wraps an objective's collator: each batch also carries its blocks' cached teacher vectors [B, D], looked
    up by block index (`vectors` row i is block i of the split, computed before any filtering)."""

    def __init__(self, collator, vectors: torch.Tensor):
        self.collator = collator
        self.vectors = vectors

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collator(features)
        batch["teacher_vectors"] = self.vectors[torch.tensor([f["index"] for f in features])]
        return batch
