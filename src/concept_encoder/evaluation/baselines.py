"""Baselines printed beside every model number, on the same splits.

- majority: the most frequent training label for every example (classification);
- TF-IDF cosine: cosine of the two sentences' unigram TF-IDF vectors (STS). Unsupervised: the IDF is
  fitted on the training and evaluation sentences, no label is used (STS-B dev: Spearman 0.756);
- TF-IDF + linear model: logistic regression (classification) or ridge (STS) on
  [tfidf(a), tfidf(b), |tfidf(a) − tfidf(b)|, tfidf(a) ⊙ tfidf(b)] (or tfidf(a) for single sentences),
  with a 1-2-gram vectoriser fitted on the training texts only (supervised: nothing from evaluation).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge

from ..data.tasks import Task
from .metrics import compute_metrics


def majority_baseline(task: Task, train: list[dict], evaluation: list[dict]) -> dict[str, float]:
    if task.is_regression:
        raise ValueError(f"{task.name}: a majority class needs classes; use the TF-IDF baselines for STS")
    majority = Counter(e["label"] for e in train).most_common(1)[0][0]
    return compute_metrics(task, [majority] * len(evaluation), [e["label"] for e in evaluation])


def _texts(examples: list[dict]) -> list[str]:
    return [e["text_a"] for e in examples] + [e["text_b"] for e in examples if e["text_b"]]


def tfidf_vectoriser(texts: list[str], ngrams: int) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, ngrams), sublinear_tf=True).fit(texts)


def tfidf_cosine_baseline(task: Task, train: list[dict], evaluation: list[dict]) -> dict[str, float]:
    vectoriser = tfidf_vectoriser(_texts(train) + _texts(evaluation), ngrams=1)
    a = vectoriser.transform([e["text_a"] for e in evaluation])
    b = vectoriser.transform([e["text_b"] for e in evaluation])
    cosine = np.asarray(a.multiply(b).sum(axis=1)).reshape(-1)  # rows are L2-normalised
    return compute_metrics(task, cosine, [e["label"] for e in evaluation])


def _features(vectoriser: TfidfVectorizer, examples: list[dict]):
    a = vectoriser.transform([e["text_a"] for e in examples])
    if examples[0]["text_b"] is None:
        return a
    b = vectoriser.transform([e["text_b"] for e in examples])
    return sp.hstack([a, b, abs(a - b), a.multiply(b)]).tocsr()


def tfidf_linear_baseline(task: Task, train: list[dict], evaluation: list[dict]) -> dict[str, float]:
    vectoriser = tfidf_vectoriser(_texts(train), ngrams=2)
    x_train, x_eval = _features(vectoriser, train), _features(vectoriser, evaluation)
    y_train = [e["label"] for e in train]
    model = Ridge(alpha=1.0) if task.is_regression else LogisticRegression(max_iter=2000, C=4.0)
    predictions = model.fit(x_train, y_train).predict(x_eval)
    return compute_metrics(task, predictions, [e["label"] for e in evaluation])
