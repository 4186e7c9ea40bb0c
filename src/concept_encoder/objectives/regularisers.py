"""Concept regularisers: penalties on the geometry of the concept vectors [B, C, H].

Each regulariser works on groups of vectors [G, n, H]:
- scope "sample": one group per input (G = B, n = C): collapse *within* an input is penalised;
- scope "batch": one group of every concept of every input (G = 1, n = B·C).
Variance and covariance are statistics over the n vectors of a group, per dimension.

Notation: ĉ = c / ‖c‖, S = Ĉ Ĉᵀ (cosine similarities, n × n), P = G · n · (n − 1) off-diagonal pairs.

| name | value |
|---|---|
| orthogonality | Σ_{i≠j} S_ij² / P |
| soft_orthogonality | Σ_{i≠j} relu(|S_ij| − τ)² / P (τ = margin, default 0.1) |
| uniformity | mean over groups of log( Σ_{i≠j} exp(−t ‖ĉ_i − ĉ_j‖²) / (n(n−1)) ), t = 2 (Wang & Isola, 2020) |
| variance | mean_d relu(γ − sqrt(Var_d + ε)), γ = 1, ε = 1e-4 (VICReg) |
| covariance | Σ_{d≠e} Cov_de² / H (VICReg) |
| vicreg | variance + covariance |
| combined | variance + uniformity |
| t_regs | −(mean edge length of the Euclidean minimum spanning tree of the ĉ) (T-REGS) |

The MST is found with Prim's algorithm on the dense n × n distance matrix, vectorised over groups:
n − 1 steps of O(n) work each, O(n²) time and memory per group (C = 128: 16k distances). The tree's
edges are chosen without gradient; its length is then a differentiable sum of those edge lengths.
Distances are sqrt(d² + 1e-12), so every regulariser has finite gradients at total collapse (all
concepts equal) and at perfect orthogonality. t_regs works on unit vectors, so it is bounded below
by −2 (the original's nearest-neighbour proxy was unbounded with learned weighting).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCOPES = ("sample", "batch")
_EPS = 1e-12


def _groups(concepts: torch.Tensor, scope: str) -> torch.Tensor:
    """[B, C, H] -> [G, n, H] by scope, in float32."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    concepts = concepts.float()
    return concepts if scope == "sample" else concepts.reshape(1, -1, concepts.shape[-1])


def _cosines(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine matrix S [G, n, n] and the diagonal mask [n, n]. Off-diagonal sums mask the diagonal out rather
    than gather the n(n-1) pairs: at batch scope (n = B·C, 4k+) a gather and its scatter-backward are costly."""
    unit = F.normalize(groups, dim=-1, eps=1e-8)
    diagonal = torch.eye(groups.shape[1], dtype=torch.bool, device=groups.device)
    return unit @ unit.transpose(-2, -1), diagonal


def _off_diagonal_mean(values: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Mean of values [G, n, n] over the G·n(n-1) off-diagonal entries."""
    G, n, _ = values.shape
    return values.masked_fill(diagonal, 0).sum() / (G * n * (n - 1))


def orthogonality(concepts: torch.Tensor, scope: str = "sample") -> torch.Tensor:
    S, diagonal = _cosines(_groups(concepts, scope))
    return _off_diagonal_mean(S.pow(2), diagonal)


def soft_orthogonality(concepts: torch.Tensor, scope: str = "sample", margin: float = 0.1) -> torch.Tensor:
    S, diagonal = _cosines(_groups(concepts, scope))
    return _off_diagonal_mean(F.relu(S.abs() - margin).pow(2), diagonal)


def uniformity(concepts: torch.Tensor, scope: str = "sample", temperature: float = 2.0) -> torch.Tensor:
    unit = F.normalize(_groups(concepts, scope), dim=-1, eps=1e-8)
    n = unit.shape[1]
    # −t‖ĉi − ĉj‖² = 2t(S − 1) ∈ [−4t, 0]: exp cannot overflow, so no max shift is needed (for moderate t).
    # Scale and shift ride in the GEMM, the diagonal is set to −inf (excluded exactly, zero gradient) and exp
    # runs in place: at batch scope (n = B·C) these [n, n] passes are the cost, so each one counts.
    scores = torch.baddbmm(unit.new_full((1, 1, 1), -2 * temperature), unit, unit.transpose(-2, -1),
                           alpha=2 * temperature)
    scores.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
    return (torch.log(scores.exp_().sum(dim=(-2, -1))) - math.log(n * (n - 1))).mean()


def variance(concepts: torch.Tensor, scope: str = "batch", target_std: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    groups = _groups(concepts, scope)
    std = torch.sqrt(groups.var(dim=1, unbiased=True) + eps)  # [G, H]
    return F.relu(target_std - std).mean()


def covariance(concepts: torch.Tensor, scope: str = "batch") -> torch.Tensor:
    groups = _groups(concepts, scope)
    _, n, H = groups.shape
    centred = groups - groups.mean(dim=1, keepdim=True)
    cov = centred.transpose(-2, -1) @ centred / (n - 1)  # [G, H, H]
    off = ~torch.eye(H, dtype=torch.bool, device=groups.device)
    return (cov.pow(2)[:, off].sum(dim=-1) / H).mean()


def vicreg(concepts: torch.Tensor, scope: str = "batch") -> torch.Tensor:
    return variance(concepts, scope) + covariance(concepts, scope)


def combined(concepts: torch.Tensor, scope: str = "sample") -> torch.Tensor:
    """Variance across the batch plus uniformity in the configured scope."""
    return variance(concepts, "batch") + uniformity(concepts, scope)


def minimum_spanning_tree(distances: torch.Tensor) -> torch.Tensor:
    """Prim's algorithm on dense symmetric distances [G, n, n] -> edges [G, n-1, 2] (long)."""
    G, n, _ = distances.shape
    arange = torch.arange(G, device=distances.device)
    in_tree = torch.zeros(G, n, dtype=torch.bool, device=distances.device)
    in_tree[:, 0] = True
    best = distances[:, 0].clone()  # cheapest link of every vertex into the tree
    parent = torch.zeros(G, n, dtype=torch.long, device=distances.device)
    edges = []
    for _ in range(n - 1):
        vertex = best.masked_fill(in_tree, float("inf")).argmin(dim=1)  # [G]
        edges.append(torch.stack([parent[arange, vertex], vertex], dim=-1))
        in_tree[arange, vertex] = True
        closer = distances[arange, vertex] < best
        best = torch.where(closer, distances[arange, vertex], best)
        parent = torch.where(closer, vertex[:, None], parent)
    return torch.stack(edges, dim=1)


def t_regs(concepts: torch.Tensor, scope: str = "sample") -> torch.Tensor:
    """Minus the mean MST edge length of the unit concept vectors: maximising it spreads them out."""
    unit = F.normalize(_groups(concepts, scope), dim=-1, eps=1e-8)
    distances = torch.sqrt(torch.cdist(unit, unit).pow(2) + _EPS)  # [G, n, n]
    with torch.no_grad():
        edges = minimum_spanning_tree(distances)  # [G, n-1, 2]
    rows = torch.arange(distances.shape[0], device=distances.device)[:, None]
    return -distances[rows, edges[..., 0], edges[..., 1]].mean()


REGULARISERS = {
    "orthogonality": orthogonality,
    "soft_orthogonality": soft_orthogonality,
    "uniformity": uniformity,
    "variance": variance,
    "covariance": covariance,
    "vicreg": vicreg,
    "combined": combined,
    "t_regs": t_regs,
}


def regulariser(name: str):
    """The regulariser function of a name; unknown names are a clear error."""
    if name not in REGULARISERS:
        raise ValueError(f"unknown concept regulariser {name!r}; choose from {sorted(REGULARISERS)}")
    return REGULARISERS[name]
