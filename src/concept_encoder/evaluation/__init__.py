"""Evaluation: metrics, baselines and zero-shot similarity and the fine-tuning protocol (finetune.py)."""

from .baselines import majority_baseline, tfidf_cosine_baseline, tfidf_linear_baseline
from .metrics import compute_metrics
from .zero_shot import encode, load_encoder, zero_shot_sts, zero_shot_task

__all__ = ["compute_metrics", "encode", "load_encoder", "majority_baseline", "tfidf_cosine_baseline",
           "tfidf_linear_baseline", "zero_shot_sts", "zero_shot_task"]
