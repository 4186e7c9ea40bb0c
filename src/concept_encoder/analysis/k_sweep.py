"""Recursive test-time scaling: a weight-shared encoder evaluated at several iteration counts K.

`concept-encoder k-sweep RUN --ks 2 4 6 8 12 --tasks stsb sick-r` runs zero-shot STS at every K (the
trained weights are the same; only the number of applications of the shared layer changes), writes
`analysis/k_sweep.json` and `analysis/k_sweep.png`, and the gain of K = 12 over K = 6 that the plan's
Gate 3 reads (`analysis.k_sweep_gain_12_over_6`). With `--finetune stsb`, each K is also fine-tuned and reported
by the evaluation protocol (`evaluation.finetune`: selection split, seeds, held-out split): the model runs at K
while it fine-tunes and while it is scored, so the column says what a user gets who fine-tunes at that K.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..data.tasks import Task, TaskError
from ..evaluation.finetune import FinetuneSettings, check_evaluation, finetune_task
from ..evaluation.zero_shot import load_encoder, require_similarity_tasks, zero_shot_task
from ..rundir import ANALYSIS_DIR, locate, read_json, tokenizer_folder, write_json
from . import plots


def k_sweep(path: str | Path, ks: list[int], tasks: list[Task], data_dir: Path | None, split: str = "validation",
            pooling: str = "mean", finetune: list[tuple[Task, FinetuneSettings]] = (),
            seeds: list[int] = (1,)) -> dict:
    """Zero-shot Spearman of every task at every K; the headline is their mean per K. `finetune`, (task,
    settings) pairs: each such task also fine-tuned and reported at every K (`finetuned[task][K]`: the mean over
    `seeds` of its headline metric, and the held-out split's where the task has one)."""
    run_dir, model_dir = locate(path)
    require_similarity_tasks(tasks)
    if not ks or min(ks) < 1:
        raise TaskError(f"--ks {ks}: iteration counts must be positive")
    for task, settings in finetune:  # every task's files before the first K is scored
        check_evaluation(task, settings, data_dir)
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
    earlier = read_json(output / "k_sweep.json") if not finetune else None
    if earlier and earlier.get("model") == str(model_dir):
        # a zero-shot-only rerun keeps the fine-tuned rows an earlier sweep of this model measured, at the Ks kept
        kept = {task: {int(k): v for k, v in by_k.items() if int(k) in points}
                for task, by_k in earlier.get("finetuned", {}).items()}
        if kept := {task: by_k for task, by_k in kept.items() if by_k}:
            record["finetuned"] = kept
            record |= {key: earlier[key] for key in ("finetune_seeds", "finetune_settings") if key in earlier}
    if finetune:
        record["finetuned"] = {task.name: {} for task, _ in finetune}
        record["finetune_seeds"] = list(seeds)
        record["finetune_settings"] = sweep_settings(finetune)
        for k in sorted(set(ks)):
            with _model_at(model_dir, k) as folder:
                for task, settings in finetune:
                    result = finetune_task(folder, task, data_dir, folder / "work", list(seeds), settings)
                    summary = result["summary"]  # the headline metric, then its held-out twin where there is one
                    record["finetuned"][task.name][k] = {name: summary[name]["mean"] for name in
                                                         (task.metrics[0], f"heldout_{task.metrics[0]}") if name in summary}
            write_json(output / "k_sweep.json", record)  # after every K: a long sweep keeps what it measured
    write_json(output / "k_sweep.json", record)
    return record


def finetuned_metrics(by_k: dict) -> list[str]:
    """The metrics a fine-tuned row (`finetuned[task]`: K -> scores) has at any of its Ks, in order."""
    return list(dict.fromkeys(metric for scores in by_k.values() for metric in scores))


def sweep_settings(finetune: list[tuple[Task, FinetuneSettings]]) -> dict:
    """{task: its settings} as k_sweep.json records them (so a study can tell a sweep made otherwise)."""
    return json.loads(json.dumps({task.name: asdict(settings) for task, settings in finetune}))


@contextlib.contextmanager
def _model_at(model_dir: Path, k: int):
    """A temporary model folder (in the system's temp folder) that runs the shared layer `k` times: the weights
    and tokenizer linked (copied where links fail), config.json with `num_iterations: k`; removed on exit. The
    pretraining-only TRM schedule (deep supervision segments, no-grad iterations: ignored outside pretraining)
    is reset, since its values need not divide another K."""
    folder = Path(tempfile.mkdtemp(prefix=f"concept_encoder_k{k}_"))
    try:
        for source in [*Path(model_dir).iterdir(), *Path(tokenizer_folder(model_dir)).iterdir()]:
            target = folder / source.name
            if source.is_file() and source.name != "config.json" and not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        config |= {"num_iterations": k, "deep_supervision_segments": 1, "recursion_no_grad_iterations": 0}
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
