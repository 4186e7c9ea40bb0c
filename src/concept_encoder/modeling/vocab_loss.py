"""Vocabulary projection + cross-entropy in row chunks, gradients computed on the way: no [T, V] logits kept.

With V = 50k, the logits of a few thousand labelled positions are hundreds of MB in float32, and autograd
would keep them (and their softmax) until the backward pass. Here each chunk of rows is projected, its
loss summed and its gradient  dL/dlogits = w · (softmax − (1 − ε)·onehot − ε/V)  pushed straight through
the projection into dL/dhidden, dL/dweight and dL/dbias; the chunk's logits are then freed. Memory stays
flat in T, and the FLOPs equal those of the plain path (one forward and two backward matmuls per chunk).
The plain path (`F.cross_entropy` on full logits) is the reference the tests compare against.
"""

from __future__ import annotations

import torch

LOGITS_BYTES_PER_CHUNK = 1 << 25  # 32 MiB of float32 logits per chunk


def chunk_rows(vocab_size: int) -> int:
    return max(64, LOGITS_BYTES_PER_CHUNK // (4 * vocab_size))


def _chunk_loss(h, weight, bias, target, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row loss [t], log-probabilities [t, V] float32) of one chunk, as F.cross_entropy defines them."""
    log_p = torch.nn.functional.linear(h, weight, bias).float().log_softmax(-1)  # one fused pass
    loss = -log_p.gather(1, target[:, None]).squeeze(1)
    if smoothing > 0:  # (1 − ε)·nll + ε·mean_v(−log p_v)
        loss = (1 - smoothing) * loss - smoothing * log_p.mean(-1)
    return loss, log_p


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, token_weights, smoothing: float, rows: int):
        # hidden [T, D], weight [V, D], bias [V] | None, target [T], token_weights [T] | None
        vocab = weight.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = None  # [V, D] float32: the first chunk's product, then accumulated (no 100 MB zero fill)
        grad_bias = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if bias is not None else None
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], target[start : start + rows]
            # the projection follows the ambient autocast (bf16 on GPUs); the softmax is float32
            loss, log_p = _chunk_loss(h, weight, bias, t, smoothing)  # [t], [t, V]
            grad = log_p.exp_()  # softmax, in the log-probabilities' memory
            grad[torch.arange(len(t), device=grad.device), t] -= 1 - smoothing
            if smoothing > 0:
                grad -= smoothing / vocab
            if token_weights is not None:
                w = token_weights[start : start + rows].float()
                loss, grad = loss * w, grad.mul_(w[:, None])
            total += loss.sum()
            # gradients accumulate in float32 whatever autocast does (an in-place bf16/fp32 mix would fail)
            with torch.autocast(hidden.device.type, enabled=False):
                grad_hidden[start : start + rows] = (grad @ weight.float()).to(hidden.dtype)  # [t, D]
                if grad_weight is None:
                    grad_weight = grad.T @ h.float()  # [V, D]
                else:
                    grad_weight.addmm_(grad.T, h.float())
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        if grad_weight is None:  # no rows
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.used = False
        return total

    @staticmethod
    def backward(ctx, grad_total):
        if ctx.used:  # the [V, D] gradient is scaled in place below, so it can serve one backward only
            raise RuntimeError("the chunked vocabulary loss supports one backward pass (no retain_graph reuse)")
        ctx.used = True
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_total.to(grad_hidden.dtype)
        return (grad_hidden * scale, grad_weight.mul_(grad_total).to(ctx.weight_dtype),
                None if grad_bias is None else grad_bias * grad_total, None, None, None, None)


def linear_cross_entropy_sum(
    hidden: torch.Tensor,  # [T, D]
    weight: torch.Tensor,  # [V, D]
    bias: torch.Tensor | None,  # [V]
    target: torch.Tensor,  # [T], every row labelled
    smoothing: float = 0.0,
    token_weights: torch.Tensor | None = None,  # [T]
    rows: int | None = None,
) -> torch.Tensor:
    """Σ_i w_i · CE(hidden_i Wᵀ + b, target_i), in float32, chunked over rows; differentiable in hidden, W, b."""
    rows = rows or chunk_rows(weight.shape[0])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, bias, target, token_weights, smoothing, rows)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):  # evaluation: the same sum, no gradients
        loss, _ = _chunk_loss(hidden[start : start + rows], weight, bias, target[start : start + rows], smoothing)
        if token_weights is not None:
            loss = loss * token_weights[start : start + rows].float()
        total += loss.sum()
    return total
