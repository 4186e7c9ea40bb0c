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

from concept_encoder.modeling.attention import attend
from concept_encoder.modeling.dropout import dropout

P = 0.1


def hidden_case(shape: tuple[int, ...]):
    x = torch.randn(shape, device=device(), requires_grad=True)
    grad = torch.randn(shape, device=device())

    def native():
        F.dropout(x, P, training=True).backward(grad)

    def cheap():
        dropout(x, P).backward(grad)

    return {"PyTorch": native, "cheap": cheap}


def attention_case(batch: int, heads: int, queries: int, keys: int, dim: int):
    q = torch.randn(batch, heads, queries, dim, device=device(), requires_grad=True)
    k = torch.randn(batch, heads, keys, dim, device=device(), requires_grad=True)
    v = torch.randn(batch, heads, keys, dim, device=device(), requires_grad=True)
    grad = torch.randn(batch, heads, queries, dim, device=device())

    def native():
        F.scaled_dot_product_attention(q, k, v, dropout_p=P).backward(grad)

    def cheap():
        attend(q, k, v, dropout_p=P)[0].backward(grad)

    return {"PyTorch": native, "cheap": cheap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    b, n, c, h, ffn, heads = (2, 256, 64, 256, 1024, 4) if args.quick else (8, 512, 128, 512, 2048, 8)
    layers = 2 if args.quick else 6
    cases = [  # (what, shape text, calls per training step, candidates)
        ("hidden: token embeddings", f"{b}×{n}×{h}", 1, hidden_case((b, n, h))),
        ("hidden: concept states", f"{b}×{c}×{h}", 3 * layers, hidden_case((b, c, h))),
        ("hidden: FFN inner", f"{b}×{c}×{ffn}", layers, hidden_case((b, c, ffn))),
        ("attention: concepts <- tokens", f"{b}×{heads}×{c}×{n}", layers, attention_case(b, heads, c, n, h // heads)),
        ("attention: concepts <- concepts", f"{b}×{heads}×{c}×{c}", layers, attention_case(b, heads, c, c, h // heads)),
    ]
    rows, saved = [], 0.0
    for what, shape, calls, candidates in cases:
        seconds = alternate(candidates, args.repeats)
        saved += calls * (seconds["PyTorch"] - seconds["cheap"])
        rows.append([what, shape, calls, f"{1000 * seconds['PyTorch']:.2f}", f"{1000 * seconds['cheap']:.2f}",
                     f"{seconds['PyTorch'] / seconds['cheap']:.2f}×",
                     f"{1000 * calls * (seconds['PyTorch'] - seconds['cheap']):.0f}"])
    body = (f"Dropout p = {P}, forward + backward. Command: `python benchmarks/dropout.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["dropped tensor", "shape", "calls per step", "PyTorch ms", "cheap ms", "speed-up",
                              "ms saved per step"], rows)
            + f"\n\nSaved per training step by the rows above (not every dropout of the step): **{1000 * saved:.0f} ms**.")
    write_section("dropout" + ("_quick" if args.quick else ""), "Dropout: PyTorch vs the cheap CPU mask", body)


if __name__ == "__main__":
    main()
