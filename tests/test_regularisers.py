"""Concept regularisers: exact values on hand-computed inputs, finite gradients at the extremes, a real MST."""

import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import minimum_spanning_tree as scipy_mst
from scipy.spatial.distance import cdist

from concept_encoder.objectives.regularisers import (
    REGULARISERS,
    covariance,
    minimum_spanning_tree,
    orthogonality,
    regulariser,
    soft_orthogonality,
    t_regs,
    uniformity,
    variance,
)

HALF_DIAGONAL = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # one sample, two concepts at 45 degrees


def test_orthogonality_by_hand():
    assert orthogonality(HALF_DIAGONAL).item() == pytest.approx(0.5)  # cos² 45° on both off-diagonal entries
    assert orthogonality(torch.eye(3)[None]).item() == pytest.approx(0.0)
    assert orthogonality(torch.ones(1, 4, 3)).item() == pytest.approx(1.0)


def test_soft_orthogonality_by_hand():
    expected = (1 / math.sqrt(2) - 0.1) ** 2
    assert soft_orthogonality(HALF_DIAGONAL, margin=0.1).item() == pytest.approx(expected, rel=1e-6)
    small_angle = torch.tensor([[[1.0, 0.0], [1.0, 0.05]]])  # |cos| = 0.9988 > 0.1
    assert soft_orthogonality(small_angle, margin=0.999).item() == pytest.approx(0.0)


def test_uniformity_by_hand():
    assert uniformity(torch.eye(2)[None]).item() == pytest.approx(-4.0)  # ‖a−b‖² = 2, t = 2
    assert uniformity(torch.ones(1, 3, 2)).item() == pytest.approx(0.0, abs=1e-6)
    triangle = torch.tensor([[[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]])
    assert uniformity(triangle).item() == pytest.approx(-6.0, rel=1e-5)  # ‖a−b‖² = 3 for every pair


@pytest.mark.parametrize("scope", ["sample", "batch"])
def test_uniformity_matches_scipy_pairwise_distances(scope):
    concepts = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    groups = concepts.numpy().reshape((3, 5, 4) if scope == "sample" else (1, 15, 4))
    expected = []
    for group in groups:
        unit = group / np.linalg.norm(group, axis=1, keepdims=True)
        squared = cdist(unit, unit, "sqeuclidean")[~np.eye(len(unit), dtype=bool)]
        expected.append(np.log(np.mean(np.exp(-2.0 * squared))))
    assert uniformity(concepts, scope=scope).item() == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize("scope", ["sample", "batch"])
def test_uniformity_gradient_matches_the_pairwise_formula(scope):
    """The fast form (diagonal masked inside the GEMM output) against the plain pairwise logsumexp, by autograd."""
    concepts = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)

    def pairwise(x):
        groups = x if scope == "sample" else x.reshape(1, -1, x.shape[-1])
        unit = groups / groups.norm(dim=-1, keepdim=True)
        off = ~torch.eye(groups.shape[1], dtype=torch.bool)
        squared = torch.cdist(unit, unit).pow(2)[:, off]
        return (torch.logsumexp(-2.0 * squared, dim=-1) - math.log(squared.shape[-1])).mean()

    fast = torch.autograd.grad(uniformity(concepts, scope=scope), concepts)[0]
    plain = torch.autograd.grad(pairwise(concepts), concepts)[0]
    torch.testing.assert_close(fast, plain.to(fast.dtype), rtol=1e-4, atol=1e-6)


def test_variance_and_covariance_by_hand():
    x = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]]])  # two samples, one concept each; batch scope
    assert variance(x).item() == pytest.approx((0 + (1 - math.sqrt(1e-4))) / 2, rel=1e-6)
    y = torch.tensor([[[1.0, 1.0]], [[-1.0, -1.0]]])  # Cov = [[2, 2], [2, 2]]
    assert covariance(y).item() == pytest.approx((4 + 4) / 2)


def test_scope_separates_within_sample_from_across_batch_collapse():
    same_basis = torch.eye(4).expand(3, 4, 4)  # orthogonal within a sample, identical across samples
    assert orthogonality(same_basis, scope="sample").item() == pytest.approx(0.0)
    assert orthogonality(same_basis, scope="batch").item() > 0.1


@pytest.mark.parametrize("seed", range(5))
def test_prim_mst_matches_scipy(seed):
    points = np.random.default_rng(seed).normal(size=(2, 12, 5))
    distances = torch.tensor(np.stack([cdist(p, p) for p in points]))
    edges = minimum_spanning_tree(distances)
    for g in range(2):
        ours = sum(distances[g, i, j].item() for i, j in edges[g].tolist())
        assert ours == pytest.approx(scipy_mst(distances[g].numpy()).sum(), rel=1e-9)
        assert len({tuple(sorted(e)) for e in edges[g].tolist()}) == 11  # a tree: n − 1 distinct edges


def test_t_regs_is_minus_the_mean_mst_edge_of_unit_vectors():
    square = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]])  # MST: 3 sides of length √2
    assert t_regs(square).item() == pytest.approx(-math.sqrt(2), rel=1e-6)
    assert t_regs(torch.ones(1, 5, 3)).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(REGULARISERS))
@pytest.mark.parametrize("case", ["collapse", "orthogonal", "random"])
def test_finite_gradients(name, case):
    if case == "collapse":
        concepts = torch.ones(2, 6, 8)
    elif case == "orthogonal":
        concepts = torch.eye(8)[:6].expand(2, 6, 8).clone()
    else:
        concepts = torch.randn(2, 6, 8)
    concepts.requires_grad_(True)
    value = regulariser(name)(concepts)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(concepts.grad).all()


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown concept regulariser 'orthogonal'"):
        regulariser("orthogonal")
