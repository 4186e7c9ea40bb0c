"""PNG plots for reports (matplotlib, Agg backend: no display needed). Each function writes one file and returns it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from .diagnostics import pairwise_cosine


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def similarity_heatmap(concepts: torch.Tensor, path: Path) -> Path:
    """Mean over the probe set of the C x C concept cosine matrix ([S, C, H] in)."""
    mean = pairwise_cosine(concepts.double()).mean(0).numpy()
    figure, axis = plt.subplots(figsize=(5.2, 4.4))
    image = axis.imshow(mean, cmap="RdBu_r", vmin=-1, vmax=1)
    axis.set(title="Concept cosine similarity (probe mean)", xlabel="concept", ylabel="concept")
    figure.colorbar(image, ax=axis, shrink=0.85)
    return _save(figure, path)


def singular_value_spectrum(concepts: torch.Tensor, path: Path) -> Path:
    """Normalised singular values: per sample (mean and spread) and of all concept vectors stacked."""
    x = concepts.double()
    per_sample = torch.linalg.svdvals(x)
    per_sample = per_sample / per_sample.sum(-1, keepdim=True)
    stacked = torch.linalg.svdvals(x.reshape(-1, x.shape[-1]))
    stacked = stacked / stacked.sum()
    figure, axis = plt.subplots(figsize=(5.6, 3.8))
    index = torch.arange(1, per_sample.shape[-1] + 1)
    axis.plot(index, per_sample.mean(0), label="per sample (mean)")
    axis.fill_between(index, per_sample.quantile(0.1, 0), per_sample.quantile(0.9, 0), alpha=0.25, label="10–90%")
    axis.plot(torch.arange(1, stacked.numel() + 1), stacked, label="global (all concepts)")
    axis.set(yscale="log", xlabel="singular value index", ylabel="σ / Σσ", title="Singular-value spectrum")
    axis.legend()
    return _save(figure, path)


def training_curves(log_history: list[dict], path: Path) -> Path | None:
    """Every logged loss component (train and eval) against the step; None when nothing was logged."""
    series: dict[str, tuple[list, list]] = {}
    for entry in log_history:
        for key, value in entry.items():
            # `train_loss` is the run's final average, one point: not a curve
            if "loss" in key and key != "train_loss" and isinstance(value, (int, float)) and "step" in entry:
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry["step"])
                values.append(value)
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(6.4, 4))
    for key, (steps, values) in sorted(series.items()):
        axis.plot(steps, values, marker="o" if key.startswith("eval") else None, markersize=3, label=key)
    axis.set(xlabel="step", ylabel="loss", title="Training curves per loss component")
    axis.legend(fontsize=7)
    return _save(figure, path)


def benchmark_bars(rows: list[tuple[str, float, dict[str, float]]], path: Path) -> Path | None:
    """One group per task: the model's headline metric beside each baseline. rows: (label, model, {name: value})."""
    if not rows:
        return None
    names = sorted({name for _, _, baselines in rows for name in baselines})
    width = 0.8 / (1 + len(names))
    figure, axis = plt.subplots(figsize=(max(4.5, 1.6 * len(rows)), 3.8))
    for offset, (series, values) in enumerate(
        [("model", [model for _, model, _ in rows])]
        + [(name, [baselines.get(name, float("nan")) for _, _, baselines in rows]) for name in names]
    ):
        axis.bar([i + offset * width for i in range(len(rows))], [100 * v for v in values], width, label=series)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [label for label, _, _ in rows], fontsize=8)
    axis.set(ylabel="× 100", title="Benchmarks against baselines")
    axis.legend(fontsize=7)
    return _save(figure, path)


def line(points: list[tuple[float, float]], path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """One series of (x, y) points, e.g. a recursive model's metric against K, or concept rank against step."""
    figure, axis = plt.subplots(figsize=(5.4, 3.5))
    axis.plot(*zip(*sorted(points)), marker="o")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _save(figure, path)


def concept_attention(maps: list[torch.Tensor], tokens: list[list[str]], path: Path) -> Path:
    """What the concepts read: for each probe text, its last concept layer's cross-attention (mean over heads)
    as a C x N heatmap, tokens as words along the bottom. Rows alike: every concept reads the text the same way."""
    figure, axes = plt.subplots(len(maps), 1, figsize=(min(2 + 0.22 * max(len(t) for t in tokens), 16),
                                                        1.2 + 0.28 * maps[0].shape[0] * len(maps)), squeeze=False)
    for axis, weights, words in zip(axes[:, 0], maps, tokens):
        image = axis.imshow(weights.float().numpy(), aspect="auto", cmap="viridis", vmin=0)
        axis.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
        axis.set_ylabel("concept")
        figure.colorbar(image, ax=axis, shrink=0.9, pad=0.01)
    axes[0, 0].set_title("Concept <- token attention, last concept layer (held-out probe texts)")
    return _save(figure, path)
