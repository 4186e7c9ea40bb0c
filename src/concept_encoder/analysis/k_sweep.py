"""Recursive test-time scaling: a weight-shared encoder evaluated at several iteration counts K.

`concept-encoder k-sweep RUN --ks 2 4 6 8 12 --tasks stsb sick-r` runs zero-shot STS at every K (the
trained weights are the same; only the number of applications of the shared layer changes), writes
`analysis/k_sweep.json` and `analysis/k_sweep.png`, and the gain of K = 12 over K = 6 that the plan's
Gate 3 reads (`analysis.k_sweep_gain_12_over_6`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..data.tasks import Task, TaskError
from ..evaluation.zero_shot import load_encoder, require_similarity_tasks, zero_shot_task
from ..rundir import ANALYSIS_DIR, locate, write_json
from . import plots


def k_sweep(path: str | Path, ks: list[int], tasks: list[Task], data_dir: Path | None, split: str = "validation",
            pooling: str = "mean") -> dict:
    """Zero-shot Spearman of every task at every K; the headline is their mean per K."""
    run_dir, model_dir = locate(path)
    require_similarity_tasks(tasks)
    if not ks or min(ks) < 1:
        raise TaskError(f"--ks {ks}: iteration counts must be positive")
    model, tokenizer = load_encoder(model_dir, pooling)
    if not getattr(model.config, "weight_sharing", False):
        raise TaskError(f"{model_dir}: not a weight-shared (recursive) concept encoder; K cannot change")
    trained_k = model.config.encoder_steps
    by_task: dict[str, dict[int, float]] = {task.name: {} for task in tasks}
    for k in sorted(set(ks)):
        model.config.num_iterations = k  # the shared layer is applied k times
        for task in tasks:
            by_task[task.name][k] = zero_shot_task(model, tokenizer, task, data_dir, split)["summary"]["spearman"]["mean"]
    model.config.num_iterations = trained_k
    points = {k: statistics.fmean(by_task[t][k] for t in by_task) for k in sorted(set(ks))}
    output = (run_dir or model_dir) / ANALYSIS_DIR
    record = {
        "model": str(model_dir), "trained_k": trained_k, "split": split, "pooling": pooling,
        "metric": f"zero-shot Spearman, mean of {', '.join(by_task)}",
        "points": points, "by_task": by_task,
        "plot": plots.line(list(points.items()), output / "k_sweep.png", "iterations K at test time",
                           "zero-shot Spearman", f"Recursive encoder trained at K = {trained_k}").name,
    }
    if 6 in points and 12 in points:
        record["gain_12_over_6"] = points[12] - points[6]
    write_json(output / "k_sweep.json", record)
    return record
