"""Zero-shot similarity: cosine of pooled representations, Spearman x 100 (as MTEB reports STS).

The encoder is loaded and pooled by `inference.encoder` (concept encoders and any Hugging Face encoder
alike), so references run beside concept encoders through the same code.
"""

from __future__ import annotations

import time

import numpy as np
import torch.nn.functional as F

from ..data.tasks import Task, TaskError, has_heldout, heldout_split, load_split
from ..inference.encoder import (
    POOLINGS,
    EncoderError,
    encode,
    encode_concepts,
    load_encoder,
    model_source,
    model_tokenizer,
)
from ..inference.scoring import late_interaction
from ..reporting import markdown_table
from ..rundir import code_version
from .baselines import tfidf_cosine_baseline
from .metrics import compute_metrics

__all__ = ["POOLINGS", "EncoderError", "encode", "load_encoder", "model_source", "model_tokenizer",
           "require_similarity_tasks", "zero_shot_sts", "zero_shot_table", "zero_shot_task"]


def zero_shot_sts(model, tokenizer, task: Task, examples: list[dict]) -> dict[str, float]:
    """Cosine similarity of the two sentences' vectors against the gold scores, metrics x 100. A concept encoder
    is also scored at the concept level (`maxsim_*`: symmetric late interaction, `inference.scoring`)."""
    texts = [e["text_a"] for e in examples], [e["text_b"] for e in examples]
    gold = np.array([e["label"] for e in examples])
    scores, concepts = {}, None
    if getattr(model, "is_concept_encoder", False):
        concepts = [encode_concepts(model, tokenizer, side, normalize=False) for side in texts]  # one pass per side
        maxsim = late_interaction(*concepts).numpy()
        scores = {f"maxsim_{name}": 100 * value for name, value in compute_metrics(task, maxsim, gold).items()}
    if concepts is not None and model.pooling_mode == "mean":  # the mean of the concepts just computed
        a, b = (F.normalize(c.mean(dim=1), dim=-1) for c in concepts)
    else:
        a, b = (encode(model, tokenizer, side) for side in texts)
    cosine = (a * b).sum(-1).numpy()
    return {name: 100 * value for name, value in compute_metrics(task, cosine, gold).items()} | scores


def require_similarity_tasks(tasks: list[Task]) -> None:
    """Zero-shot scoring compares cosines with similarity scores: classification tasks are an error."""
    for task in tasks:
        if not task.is_regression:
            raise TaskError(f"{task.name} is not a similarity task; zero-shot takes sts tasks")


def check_task_files(tasks: list[Task], data_dir, split: str = "validation") -> None:
    """Read every split the zero-shot tasks will score (and their train split) now, so that a missing or bad
    file is one line before any model is loaded."""
    require_similarity_tasks(tasks)
    for task in tasks:
        for name in dict.fromkeys(("train", split) if "train" in task.files else (split,)):
            load_split(task, name, data_dir)


def zero_shot_task(model, tokenizer, task: Task, data_dir, split: str = "validation") -> dict:
    """One task's zero-shot result in the schema of `results.json` (metrics as fractions), baseline beside.

    On validation, a similarity task with a train split is also scored on its held-out split
    (`heldout_*` metrics; see `data.tasks.heldout_split`), the TF-IDF baseline too.
    """
    require_similarity_tasks([task])
    train = load_split(task, "train", data_dir) if "train" in task.files else []
    reported = {"": (load_split(task, split, data_dir), train)}  # prefix -> (examples, the baseline's IDF texts)
    protocol = f"cosine of pooled vectors on {split}; no training"
    if split == "validation" and has_heldout(task):
        rest, heldout, how = heldout_split(task, train, data_dir)
        reported["heldout_"] = (heldout, rest)
        protocol += f"; {how}"
    summary, baseline = {}, {}
    for prefix, (examples, idf_texts) in reported.items():
        scores = zero_shot_sts(model, tokenizer, task, examples)
        summary |= {prefix + name: {"mean": value / 100, "std": 0.0} for name, value in scores.items()}
        tfidf = tfidf_cosine_baseline(task, idf_texts, examples)
        baseline |= {prefix + name: value for name, value in tfidf.items()}
        if any(name.startswith("maxsim_") for name in scores):  # late interaction reads against the same bar
            baseline |= {f"{prefix}maxsim_{name}": value for name, value in tfidf.items()}
    return {"task": task.name, "mode": "zero-shot", "split": split, "headline_metric": "spearman",
            "pooling": getattr(model, "pooling_mode", "mean"),
            "sizes": {("report" if not prefix else prefix.rstrip("_")): len(examples)
                      for prefix, (examples, _) in reported.items()},
            "protocol": protocol, "summary": summary, "baselines": {"tfidf_cosine": baseline}}


def zero_shot_table(results: dict[str, list[dict]], digits: int = 2) -> str:
    """Several encoders' zero-shot STS side by side, Spearman x 100: a TF-IDF row, each encoder's pooled cosine
    and, for concept encoders, late interaction over concepts. Columns: each task's reported split and its
    held-out split, in the order the encoders first list them; a task an encoder did not run is "–". `results`
    maps an encoder's name to its `zero_shot_task` results (the same splits for every encoder)."""
    every = [r for task_results in results.values() for r in task_results]
    sizes = {}  # (task, metric prefix, split shown) -> its size, as the first encoder that ran it says
    for r, prefix in ((r, prefix) for r in every for prefix in ("", "heldout_") if f"{prefix}spearman" in r["summary"]):
        sizes.setdefault((r["task"], prefix, r["split"] if not prefix else "held-out"),
                         r["sizes"][prefix.rstrip("_") or "report"])
    columns = list(sizes)

    def cells(by_task: dict[str, dict], metric: str) -> list[str]:
        values = [by_task.get(task, {}).get(prefix + metric) for task, prefix, _ in columns]
        return ["–" if v is None else f"{100 * (v['mean'] if isinstance(v, dict) else v):.{digits}f}" for v in values]

    baselines = {r["task"]: r["baselines"]["tfidf_cosine"] for r in reversed(every)}  # any encoder's: the same splits
    rows = [["TF-IDF cosine (IDF from the task's train side)", *cells(baselines, "spearman")]]
    for name, task_results in results.items():
        summaries = {r["task"]: r["summary"] for r in task_results}
        rows.append([f"`{name}` (pooled cosine)", *cells(summaries, "spearman")])
        if any("maxsim_spearman" in summary for summary in summaries.values()):
            rows.append([f"`{name}` (late interaction over concepts)", *cells(summaries, "maxsim_spearman")])
    header = ["encoder", *(f"{task} {split} (n={n:,})" for (task, _, split), n in sizes.items())]
    return markdown_table(header, rows, 1)


def zero_shot_section(results: dict[str, list[dict]], command: str) -> str:
    """`zero_shot_table` for docs/results.md, with how it was made."""
    return (f"_Generated by `{command}` on {time.strftime('%Y-%m-%d')} at commit {code_version()}; Spearman × 100 "
            "of the cosine between the two texts' vectors, no training; held-out: the 20% of the task's train split "
            "that no contender chose anything on._\n\n" + zero_shot_table(results) + "\n")
