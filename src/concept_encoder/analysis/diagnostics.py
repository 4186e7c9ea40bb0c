"""Concept diagnostics: is the concept set collapsed, redundant, dead? Formulas in docs/analysis.md.

Inputs are the final concepts of a probe set, `concepts` [S, C, H] (S samples, C concepts, width H), and
optionally the encoder's concept <- token attention maps. All spectra are computed in float64.

- per sample: the C concepts of one input, [C, H]: collapse *within* an input;
- global: all S·C concept vectors stacked, [S·C, H]: how many directions the concept space uses;
- original: the original code's number, sum/max of the singular values of the sample-averaged [C, H]
  matrix (kept for comparison with its reported 5/128, 16/128, 10.1/128).
"""

from __future__ import annotations

import torch

EPS = 1e-12
DEAD_DIMENSION_STD = 1e-4  # as the original: a dimension that never moves
STATIC_CONCEPT_RATIO = 0.01  # a concept whose variation across inputs is < 1% of its size carries no input
UNIFORM_ATTENTION_ENTROPY = 0.98  # normalised entropy: the concept reads all tokens alike


def rankme(singular_values: torch.Tensor) -> torch.Tensor:
    """RankMe (Garrido et al., 2023): exp(entropy of σ / Σσ). [..., k] -> [...]; k for a flat spectrum, 1 for rank 1."""
    p = singular_values / singular_values.sum(-1, keepdim=True).clamp(min=EPS)
    return torch.exp(-(p * torch.log(p.clamp(min=EPS))).sum(-1))


def sum_max_ratio(singular_values: torch.Tensor) -> torch.Tensor:
    """Σσ / max σ: the original's "effective rank" (not an entropy rank; kept for comparability)."""
    return singular_values.sum(-1) / singular_values.amax(-1).clamp(min=EPS)


def dominance(singular_values: torch.Tensor) -> torch.Tensor:
    """σ₁ / Σσ: the share of the largest singular value (1 for rank one, 1/k for a flat spectrum)."""
    return singular_values.amax(-1) / singular_values.sum(-1).clamp(min=EPS)


def participation_ratio(eigenvalues: torch.Tensor) -> torch.Tensor:
    """(Σλ)² / Σλ² of covariance eigenvalues: the number of directions the variance spreads over."""
    return eigenvalues.sum(-1) ** 2 / (eigenvalues**2).sum(-1).clamp(min=EPS)


def pairwise_cosine(concepts: torch.Tensor) -> torch.Tensor:
    """[S, C, H] -> [S, C, C] cosine similarity of every pair of concepts within each sample."""
    unit = torch.nn.functional.normalize(concepts, dim=-1)
    return unit @ unit.transpose(-1, -2)


def concept_diagnostics(concepts: torch.Tensor) -> dict[str, float]:
    """All concept-geometry diagnostics of a probe set. concepts: [S, C, H] (S >= 2, C >= 2)."""
    x = concepts.detach().to(torch.float64)
    S, C, H = x.shape
    k = min(C, H)
    per_sample = torch.linalg.svdvals(x)  # [S, k]
    stacked = x.reshape(S * C, H)
    global_sv = torch.linalg.svdvals(stacked)  # [min(S·C, H)]
    original_sv = torch.linalg.svdvals(x.mean(0))  # [k], the sample-averaged matrix
    centred = stacked - stacked.mean(0)
    variance = torch.linalg.eigvalsh(centred.T @ centred / max(S * C - 1, 1)).clamp(min=0).flip(0)  # descending
    explained = variance / variance.sum().clamp(min=EPS)

    similarity = pairwise_cosine(x)
    off_diagonal = similarity[:, ~torch.eye(C, dtype=torch.bool)].reshape(S, C * (C - 1))
    dimension_std = stacked.std(0)

    variation = x.std(0).pow(2).mean(-1).sqrt()  # [C]: how much each concept moves across inputs
    size = x.pow(2).mean((0, 2)).sqrt()  # [C]: its RMS size
    static = variation < STATIC_CONCEPT_RATIO * size.clamp(min=EPS)

    rank_per_sample = rankme(per_sample)
    return {
        "num_samples": S,
        "num_concepts": C,
        "hidden_size": H,
        "effective_rank_per_sample": rank_per_sample.mean().item(),
        "effective_rank_per_sample_min": rank_per_sample.min().item(),
        "effective_rank_per_sample_fraction": rank_per_sample.mean().item() / k,
        "effective_rank_global": rankme(global_sv).item(),
        "effective_rank_global_fraction": rankme(global_sv).item() / min(S * C, H),
        "sum_max_rank_original": sum_max_ratio(original_sv).item(),
        "sum_max_rank_original_fraction": sum_max_ratio(original_sv).item() / k,
        "dominance_per_sample": dominance(per_sample).mean().item(),
        "dominance_global": dominance(global_sv).item(),
        "participation_ratio": participation_ratio(variance).item(),
        "participation_ratio_fraction": participation_ratio(variance).item() / H,
        "dims_for_95_variance": int((explained.cumsum(0) < 0.95).sum().item()) + 1,
        "similarity_mean": off_diagonal.mean().item(),
        "similarity_abs_mean": off_diagonal.abs().mean().item(),  # the original's "mean similarity"
        "similarity_max": off_diagonal.amax(-1).mean().item(),  # the typical most-similar pair of one input
        "similarity_max_any": off_diagonal.max().item(),  # the original's "max": one pair anywhere
        "similarity_std": off_diagonal.std().item(),
        "dimension_std_mean": dimension_std.mean().item(),
        "dimension_std_min": dimension_std.min().item(),
        "dimension_std_max": dimension_std.max().item(),
        "dead_dimensions": int((dimension_std < DEAD_DIMENSION_STD).sum().item()),
        "static_concepts": int(static.sum().item()),
        "static_concepts_fraction": static.sum().item() / C,
    }


def attention_usage(cross_attention: torch.Tensor, token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample, per-concept reading statistics of one concept <- token map.

    cross_attention: [B, heads, C, N], rows summing to 1 over real tokens (zero at padding);
    token_mask: [B, N], 1 = real token. Returns [B, C] tensors: `entropy` (normalised by log of the
    number of real tokens, 1 = uniform) and `tokens_read` (exp(entropy), the effective number of tokens).
    """
    weights = cross_attention.detach().to(torch.float64).mean(1)  # [B, C, N], heads averaged
    entropy = -(weights * torch.log(weights.clamp(min=EPS))).sum(-1)  # [B, C]
    real = token_mask.to(torch.float64).sum(-1, keepdim=True)  # [B, 1]
    normalised = entropy / torch.log(real.clamp(min=2))
    return {"entropy": normalised, "tokens_read": torch.exp(entropy), "real_tokens": real.expand_as(entropy)}


def summarise_usage(entropy: torch.Tensor, tokens_read: torch.Tensor, real_tokens: torch.Tensor) -> dict[str, float]:
    """[S, C] per-sample statistics -> probe-set usage numbers."""
    per_concept_entropy = entropy.mean(0)  # [C]
    return {
        "attention_entropy": entropy.mean().item(),
        "tokens_read_mean": tokens_read.mean().item(),
        "tokens_read_fraction": (tokens_read / real_tokens).mean().item(),
        "uniform_attention_concepts": int((per_concept_entropy > UNIFORM_ATTENTION_ENTROPY).sum().item()),
    }

