"""Task metrics from scipy / sklearn (no metric downloads at run time)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from ..data.tasks import Task


def compute_metrics(task: Task, predictions, labels) -> dict[str, float]:
    """Every metric of the task. STS predictions are squeezed to 1-D (the original's STS-B bug was [N, 1])."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if task.is_regression:
        predictions = predictions.reshape(-1).astype(np.float64)
        labels = labels.reshape(-1).astype(np.float64)
        return {"pearson": float(pearsonr(predictions, labels)[0]), "spearman": float(spearmanr(predictions, labels)[0])}
    predictions = predictions.reshape(-1).astype(np.int64)
    binary = task.num_labels == 2
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="binary" if binary else "macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
    }
