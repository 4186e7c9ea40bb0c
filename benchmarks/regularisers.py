"""Concept regularisers, forward + backward: each at both scopes, and uniformity before/after its rewrite.

    python benchmarks/regularisers.py [--quick]

Concepts [B, C, H] as the CPU-hour study trains them (B 128, C 32, H 128): scope "sample" works on B groups of
C vectors, scope "batch" on one group of B·C = 4,096 (a 4k × 4k similarity matrix). Each row is the median of
the repeats, candidates alternating in one process. "before" is uniformity as first written (gather the
n(n − 1) off-diagonal distances, logsumexp over them); "after" is `objectives/regularisers.py` (scale and
shift inside the GEMM, the diagonal set to −inf, exp in place), the same value to float32 rounding.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from _common import alternate, device, markdown_table, write_section

from concept_encoder.objectives.regularisers import REGULARISERS, uniformity


def uniformity_before(concepts: torch.Tensor, scope: str, temperature: float = 2.0) -> torch.Tensor:
    groups = concepts.float() if scope == "sample" else concepts.float().reshape(1, -1, concepts.shape[-1])
    unit = F.normalize(groups, dim=-1, eps=1e-8)
    off_diagonal = ~torch.eye(groups.shape[1], dtype=torch.bool, device=groups.device)
    squared_distance = (2 - 2 * unit @ unit.transpose(-2, -1))[:, off_diagonal]
    return (torch.logsumexp(-temperature * squared_distance, dim=-1) - math.log(squared_distance.shape[-1])).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B 32 instead of 128")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (32 if args.quick else 128, 32, 128)
    concepts = torch.randn(shape, device=device(), requires_grad=True)

    def step(fn, scope):
        def run():
            fn(concepts, scope=scope).backward()
            concepts.grad = None
        return run

    rows = []
    for scope in ("sample", "batch"):
        candidates = {"uniformity, before": step(uniformity_before, scope)}
        candidates |= {name: step(fn, scope) for name, fn in REGULARISERS.items()
                       if not (name == "t_regs" and scope == "batch")}  # Prim's loop over 4k vertices: minutes
        seconds = alternate(candidates, args.repeats)
        for name, s in seconds.items():
            rows.append([scope, name, f"{1000 * s:,.1f}"])
        before, after = uniformity_before(concepts, scope).item(), uniformity(concepts, scope).item()
        ratio = seconds["uniformity"] / seconds["uniformity, before"]
        rows.append([scope, "uniformity: after / before", f"{ratio:.2f}× the time, values {after:.6f} vs {before:.6f}"])
    table = markdown_table(["scope", "regulariser", "ms, forward + backward"], rows)
    body = (f"Concepts B {shape[0]} × C {shape[1]} × H {shape[2]}. "
            f"Command: `python benchmarks/regularisers.py{' --quick' if args.quick else ''}`.\n\n{table}")
    write_section("regularisers" + ("_quick" if args.quick else ""), "Concept regularisers", body)


if __name__ == "__main__":
    main()
