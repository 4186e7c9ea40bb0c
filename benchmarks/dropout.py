"""Before/after of the cheap CPU dropout: PyTorch's dropout vs `modeling/dropout.py`, forward + backward.

    python benchmarks/dropout.py [--quick]

The shapes one L6 training step drops (batch 8 × 512 tokens, C 128, H 512, FFN 2048, 8 heads), each timed
with both implementations alternating in one process, median of the repeats:
- hidden dropout on token embeddings, concept states and the FFN's inner activations (`F.dropout` vs `dropout`);
- attention with dropout 0.1: SDPA (which materialises the probabilities and drops them with the native
  sampler) vs `attend`'s explicit path (`dropout_matmul`), for concept <- token cross-attention.
The last column multiplies by the calls per step, so the saving per training step can be read off.
On a GPU both rows run the native kernels (the cheap mask is CPU-only).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import alternate, device, markdown_table, write_section
from models import FULL, QUICK

from concept_encoder.modeling.attention import attend
from concept_encoder.modeling.dropout import dropout


def hidden_case(shape: tuple[int, ...], p: float):
    x = torch.randn(shape, device=device(), requires_grad=True)
    grad = torch.randn(shape, device=device())

    def native():
        F.dropout(x, p, training=True).backward(grad)

    def cheap():
        dropout(x, p).backward(grad)

    return {"PyTorch": native, "cheap": cheap}


def attention_case(batch: int, heads: int, queries: int, keys: int, dim: int, p: float):
    q = torch.randn(batch, heads, queries, dim, device=device(), requires_grad=True)
    k = torch.randn(batch, heads, keys, dim, device=device(), requires_grad=True)
    v = torch.randn(batch, heads, keys, dim, device=device(), requires_grad=True)
    grad = torch.randn(batch, heads, queries, dim, device=device())

    def native():
        F.scaled_dot_product_attention(q, k, v, dropout_p=p).backward(grad)

    def cheap():
        attend(q, k, v, dropout_p=p)[0].backward(grad)

    return {"PyTorch": native, "cheap": cheap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = QUICK if args.quick else FULL  # the L6 step's shapes (benchmarks/models.py)
    b, n, c, h, ffn, heads, layers, p = (shape.batch, shape.tokens, shape.concepts, shape.hidden, shape.ffn,
                                         shape.heads, shape.layers, shape.dropout)
    cases = [  # (what, shape text, calls per training step, candidates)
        ("hidden: token embeddings", f"{b}×{n}×{h}", 1, hidden_case((b, n, h), p)),
        ("hidden: concept states", f"{b}×{c}×{h}", 3 * layers, hidden_case((b, c, h), p)),
        ("hidden: FFN inner", f"{b}×{c}×{ffn}", layers, hidden_case((b, c, ffn), p)),
        ("attention: concepts <- tokens", f"{b}×{heads}×{c}×{n}", layers, attention_case(b, heads, c, n, h // heads, p)),
        ("attention: concepts <- concepts", f"{b}×{heads}×{c}×{c}", layers, attention_case(b, heads, c, c, h // heads, p)),
    ]
    rows, saved = [], 0.0
    for what, shape, calls, candidates in cases:
        seconds = alternate(candidates, args.repeats)
        saved += calls * (seconds["PyTorch"] - seconds["cheap"])
        rows.append([what, shape, calls, f"{1000 * seconds['PyTorch']:.2f}", f"{1000 * seconds['cheap']:.2f}",
                     f"{seconds['PyTorch'] / seconds['cheap']:.2f}×",
                     f"{1000 * calls * (seconds['PyTorch'] - seconds['cheap']):.0f}"])
    body = (f"Dropout p = {p}, forward + backward. Command: `python benchmarks/dropout.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["dropped tensor", "shape", "calls per step", "PyTorch ms", "cheap ms", "speed-up",
                              "ms saved per step"], rows)
            + f"\n\nSaved per training step by the rows above (not every dropout of the step): **{1000 * saved:.0f} ms**.")
    write_section("dropout" + ("_quick" if args.quick else ""), "Dropout: PyTorch vs the cheap CPU mask", body)


if __name__ == "__main__":
    main()
