"""How loss components combine into the one loss the optimiser sees.

- fixed: total = Σ_n w_n · L_n, with the task weight 1 and each regulariser's configured weight.
- kendall_gal (Kendall, Gal & Cipolla, 2018): total = Σ_n ½ e^(−s_n) L_n + ½ s_n with a learned
  log-variance s_n per component. Unbounded s lets the optimiser mute the task (the original's MLM
  weight fell to ½/L_task) and, with a negative-valued loss, drive the total to −∞. Here every s_n is
  s_min + (s_max − s_min) · sigmoid(r_n), a smooth map into [s_min, s_max] (default [−2, 2]):
  - the task's effective weight ½ e^(−s) never falls below ½ e^(−s_max) (0.068 by default);
  - a regulariser's weight never exceeds ½ e^(−s_min) (3.69), so the total is bounded below by
    Σ_n (½ e^(−s_min) · min(L_n, 0) + ½ s_min) for losses bounded below (all ours are).
  r_n starts at the value that gives s_n = 0 (weight ½, as in the paper).
Regulariser weights (fixed or learned) are multiplied by a linear warm-up ramp from 0 to 1 over
`warmup_steps` optimiser steps; the task (and the `unramped` components: the teacher's terms) never is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TASK = "task"


class LossWeighting(nn.Module):
    def __init__(
        self,
        names: list[str],
        fixed_weights: dict[str, float],
        strategy: str = "fixed",
        log_variance_bounds: tuple[float, float] = (-2.0, 2.0),
        warmup_steps: int = 0,
        unramped: tuple[str, ...] = (TASK,),
    ):
        super().__init__()
        self.unramped = set(unramped)
        if strategy not in ("fixed", "kendall_gal"):
            raise ValueError(f"loss weighting must be 'fixed' or 'kendall_gal', got {strategy!r}")
        self.names = list(names)
        self.strategy = strategy
        self.fixed_weights = dict(fixed_weights)
        self.low, self.high = log_variance_bounds
        self.warmup_steps = warmup_steps
        if strategy == "kendall_gal":
            start = math.log(-self.low / self.high) if self.low < 0 < self.high else 0.0  # sigmoid(start) gives s = 0
            self.raw = nn.Parameter(torch.full((len(self.names),), start))

    def log_variances(self) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.raw)

    def ramp(self, step: int) -> float:
        return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)

    def forward(self, losses: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, effective weight of every component) for the components in `losses`."""
        ramp = self.ramp(step)
        total = 0.0
        weights: dict[str, float] = {}
        s = self.log_variances() if self.strategy == "kendall_gal" else None
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            scale = 1.0 if name in self.unramped else ramp
            if s is None:
                weight = scale * self.fixed_weights.get(name, 1.0)
                total = total + weight * losses[name]
            else:
                weight = scale * 0.5 * torch.exp(-s[i])
                total = total + weight * losses[name] + scale * 0.5 * s[i]
            weights[name] = float(weight.detach()) if isinstance(weight, torch.Tensor) else float(weight)
        return total, weights
