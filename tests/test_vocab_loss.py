"""The chunked vocabulary loss equals the plain one (logits, then F.cross_entropy): loss and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from concept_encoder.modeling.vocab_loss import linear_cross_entropy_sum


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_path(smoothing, weighted, with_bias):
    T, D, V = 37, 16, 101
    hidden = torch.randn(T, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)
    bias = torch.randn(V, requires_grad=True) if with_bias else None
    target = torch.randint(0, V, (T,))
    token_weights = torch.rand(T) + 0.5 if weighted else None

    plain = F.cross_entropy(F.linear(hidden, weight, bias), target, reduction="none", label_smoothing=smoothing)
    plain = (plain * token_weights).sum() if weighted else plain.sum()
    expected = torch.autograd.grad(plain, [hidden, weight] + ([bias] if with_bias else []))

    chunked = linear_cross_entropy_sum(hidden, weight, bias, target, smoothing, token_weights, rows=8)  # 5 chunks
    got = torch.autograd.grad(2.5 * chunked, [hidden, weight] + ([bias] if with_bias else []))  # upstream scale
    torch.testing.assert_close(chunked, plain.detach(), rtol=1e-5, atol=1e-4)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, 2.5 * e, rtol=1e-4, atol=1e-5)


def test_without_gradients_it_is_the_same_sum():
    hidden, weight, target = torch.randn(20, 8), torch.randn(50, 8), torch.randint(0, 50, (20,))
    with torch.no_grad():
        chunked = linear_cross_entropy_sum(hidden, weight, None, target, rows=6)
    torch.testing.assert_close(chunked, F.cross_entropy(hidden @ weight.T, target, reduction="sum"))


def test_many_chunks_under_bf16_autocast_match_float32_and_empty_input_works():
    T, D, V = 300, 16, 1000
    hidden = torch.randn(T, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)
    target = torch.randint(0, V, (T,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = linear_cross_entropy_sum(hidden, weight, None, target, rows=64)  # 5 chunks
    got = torch.autograd.grad(mixed, [hidden, weight])
    assert all(g.dtype == torch.float32 for g in got)
    plain = F.cross_entropy(hidden @ weight.T, target, reduction="sum")
    expected = torch.autograd.grad(plain, [hidden, weight])
    torch.testing.assert_close(mixed, plain.detach(), rtol=2e-2, atol=0)  # bf16 projection
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=5e-2, atol=5e-2)
    empty = linear_cross_entropy_sum(hidden[:0], weight, None, target[:0])
    assert empty.item() == 0.0 and torch.autograd.grad(empty, weight)[0].abs().sum() == 0


def test_a_second_backward_through_the_same_graph_is_refused():
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    loss = linear_cross_entropy_sum(hidden, weight, None, torch.randint(0, 50, (6,))) / 6
    loss.backward(retain_graph=True)  # the [V, D] gradient is scaled in place: reusing it would scale it twice
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
