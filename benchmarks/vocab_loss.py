"""Before/after of the chunked vocabulary loss: plain logits + cross-entropy vs `linear_cross_entropy_sum`.

    python benchmarks/vocab_loss.py [--quick]

Forward+backward of the vocabulary projection and cross-entropy over T labelled rows (D 512, V 50,368):
T = 616 is the MLM step (8 × 512 × 15%), T = 4,096 a TSDAE / diffusion step (every or most positions).
Times alternate in one process; peak memory comes from a fresh subprocess per row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import alternate, device, in_subprocess, markdown_table, peak_rss_bytes, write_section

from concept_encoder.modeling.vocab_loss import linear_cross_entropy_sum


def inputs(rows: int, dim: int, vocab: int):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, dim, generator=g).to(device()).requires_grad_()
    weight = (0.02 * torch.randn(vocab, dim, generator=g)).to(device()).requires_grad_()
    bias = torch.zeros(vocab, device=device(), requires_grad=True)
    target = torch.randint(0, vocab, (rows,), generator=g).to(device())
    return hidden, weight, bias, target


def plain(hidden, weight, bias, target):
    F.cross_entropy(F.linear(hidden, weight, bias).float(), target, reduction="sum").backward()


def chunked(hidden, weight, bias, target):
    linear_cross_entropy_sum(hidden, weight, bias, target).backward()


PATHS = {"plain (full logits)": plain, "chunked": chunked}


def child(path: str, rows: int, dim: int, vocab: int) -> None:
    tensors = inputs(rows, dim, vocab)
    for t in tensors[:3]:  # the gradient buffers exist before the high-water mark is read
        t.grad = torch.zeros_like(t)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_rss_bytes()
    PATHS[path](*tensors)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss_bytes()
    print(json.dumps({"extra_bytes": max(peak - before, 0)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], *map(int, args.child[1:]))
    torch.set_flush_denormal(True)
    dim, vocab = (256, 30522) if args.quick else (512, 50368)
    rows = []
    for count in (616, 4096):
        tensors = inputs(count, dim, vocab)
        seconds = alternate({name: (lambda fn=fn, t=tensors: fn(*t)) for name, fn in PATHS.items()}, args.repeats)
        for name in PATHS:
            memory = in_subprocess(Path(__file__), name, str(count), str(dim), str(vocab))
            rows.append([f"{count:,}", name, f"{1000 * seconds[name]:.1f}",
                         f"{memory.get('extra_bytes', float('nan')) / 2**20:,.0f}"])
    body = (f"D {dim}, V {vocab:,}; forward + backward. Command: "
            f"`python benchmarks/vocab_loss.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["labelled rows T", "path", "ms", "peak memory above inputs (MiB; CPU: RSS growth)"], rows))
    write_section("vocab_loss" + ("_quick" if args.quick else ""), "Vocabulary loss: plain vs chunked", body)


if __name__ == "__main__":
    main()
