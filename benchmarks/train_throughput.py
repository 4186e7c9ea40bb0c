"""Training tokens/s, FLOPs utilisation and peak memory at the plan's L6 MLM config: ours vs a same-size BERT.

    python benchmarks/train_throughput.py [--quick] [--repeats 5]

One process, the candidates measured in turns (A B A B ...), median step time; a training step is forward,
backward and AdamW. FLOPs are counted by torch's FLOP counter (matmuls and attention, forward and backward)
and divided by the step time and by the matmul peak measured by this script in the same run. Rows:
- ours vs BertForMaskedLM at N = 512 (batch 8), ours at N = 2048 (batch 2: the same tokens per step), with the
  plan's dropout 0.1 and with dropout 0 (CPU dropout is RNG-bound: it costs time and no FLOPs);
- ours vs BertForMaskedLM at N = 8192 (batch 1), without dropout: the only setting where BERT's attention
  fits in this machine's memory (SDPA's fused kernel; attention dropout would materialise N x N maps);
- ours with denormals flushed vs not flushed (the initialisation must leave none to flush).
Peak memory (CPU: max RSS; GPU: max allocated) is taken in a fresh subprocess per row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from _common import (
    alternate,
    count_flops,
    in_subprocess,
    markdown_table,
    matmul_peak,
    peak_rss_bytes,
    write_section,
)
from models import FULL, QUICK, Shape, bert, concept_encoder, mlm_batch, optimizer, training_step


def build(kind: str, shape: Shape):
    model = concept_encoder(shape) if kind.startswith("concept") else bert(shape)
    opt = optimizer(model)
    return (torch.compile(model) if kind.endswith("+compile") else model), opt, mlm_batch(shape)


def child(kind: str, shape: Shape) -> None:
    """Peak memory of one training step, printed as JSON (runs in its own process)."""
    model, opt, batch = build(kind, shape)
    training_step(model, batch, opt)  # optimizer state allocated
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        training_step(model, batch, opt)
        peak = torch.cuda.max_memory_allocated()
    else:
        training_step(model, batch, opt)
        peak = peak_rss_bytes()
    print(json.dumps({"peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also both models under torch.compile (inductor; minutes of compilation on a CPU)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SHAPE_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Shape(**json.loads(args.child[1])))
    torch._dynamo.config.cache_size_limit = 64  # labelled counts vary: shapes become dynamic after one recompile

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    base = QUICK if args.quick else FULL
    long = dataclasses.replace(base, tokens=4 * base.tokens, batch=max(1, base.batch // 4))
    peak = matmul_peak()
    rows = []

    def measure(label, candidates: dict, shapes: dict, repeats: int = args.repeats):
        built = {name: build(kind, shapes[name]) for name, kind in candidates.items()}
        steps = {name: (lambda m=m, o=o, b=b: training_step(m, b, o)) for name, (m, o, b) in built.items()}
        seconds = alternate(steps, repeats)
        for name, (model, _, batch) in built.items():
            eager = getattr(model, "_orig_mod", model)  # a compiled model computes the same FLOPs
            flops = count_flops(lambda m=eager, b=batch: training_step(m, b))
            tokens = batch["input_ids"].numel()
            memory = {} if candidates[name].endswith("+compile") else in_subprocess(
                Path(__file__), candidates[name], json.dumps(dataclasses.asdict(shapes[name])))
            rows.append([label, name, f"{shapes[name].batch}×{shapes[name].tokens}", f"{seconds[name]:.3f}",
                         f"{tokens / seconds[name]:,.0f}", f"{flops / 1e9:,.1f}", f"{flops / seconds[name] / 1e9:,.1f}",
                         f"{100 * flops / seconds[name] / peak:.0f}%",
                         f"{memory['peak_bytes'] / 2**30:.2f}" if "peak_bytes" in memory else "–"])
        return seconds

    speedups = {}
    if args.compile:  # eager and compiled, both models, in one alternating run
        names = {"concept encoder": "concept", "concept encoder, compiled": "concept+compile",
                 "BertForMaskedLM": "bert", "BertForMaskedLM, compiled": "bert+compile"}
        seconds = measure(f"dropout {base.dropout}", names, dict.fromkeys(names, base))
        speedups["compiled vs compiled"] = seconds["BertForMaskedLM, compiled"] / seconds["concept encoder, compiled"]
        speedups["compiled vs eager BERT"] = seconds["BertForMaskedLM"] / seconds["concept encoder, compiled"]
        speedups["eager vs eager"] = seconds["BertForMaskedLM"] / seconds["concept encoder"]
    else:
        for dropout in (base.dropout, 0.0):
            short = dataclasses.replace(base, dropout=dropout)
            label = f"dropout {dropout}"
            pair = measure(label, {"concept encoder": "concept", "BertForMaskedLM": "bert"},
                           {"concept encoder": short, "BertForMaskedLM": short})
            measure(label, {"concept encoder": "concept"},
                    {"concept encoder": dataclasses.replace(long, dropout=dropout)})
            speedups[f"N = {base.tokens}, dropout {dropout}"] = pair["BertForMaskedLM"] / pair["concept encoder"]
        # N = 8192, batch 1: BERT fits in memory only through SDPA's fused kernel, i.e. without attention
        # dropout (with it, SDPA materialises 6 x [8, N, N] probabilities); both models run without dropout
        longest = dataclasses.replace(base, tokens=16 * base.tokens, batch=1, dropout=0.0)
        both = {"concept encoder": "concept", "BertForMaskedLM": "bert"}
        pair = measure("dropout 0.0", both, dict.fromkeys(both, longest), repeats=min(args.repeats, 3))
        speedups[f"N = {longest.tokens}, dropout 0.0"] = pair["BertForMaskedLM"] / pair["concept encoder"]

    model, opt, batch = build("concept", base)

    def step_with(flush: bool):
        def run():
            torch.set_flush_denormal(flush)
            training_step(model, batch, opt)
        return run

    denormal = alternate({"flushed": step_with(True), "not flushed": step_with(False)}, args.repeats)
    torch.set_flush_denormal(True)

    table = markdown_table(["setting", "model", "batch × N", "s / step", "tokens/s", "GFLOP / step", "GFLOP/s",
                            "of matmul peak", "peak memory GiB"], rows)
    body = (f"Shape: H{base.hidden} L{base.layers} C{base.concepts} FFN {base.ffn} V {base.vocab:,}, "
            f"{int(100 * base.mask_rate)}% of positions labelled; matmul peak measured here: {peak / 1e9:,.0f} GFLOP/s. "
            f"Command: `python benchmarks/train_throughput.py{' --quick' if args.quick else ''}`.\n\n{table}\n\n"
            "**Concept encoder vs BERT: "
            + ", ".join(f"{v:.2f}× the tokens/s ({k})" for k, v in speedups.items()) + ".** "
            f"Denormals: step {denormal['flushed']:.3f} s flushed vs {denormal['not flushed']:.3f} s not flushed "
            f"(ratio {denormal['not flushed'] / denormal['flushed']:.2f}).")
    write_section("train_throughput" + ("_quick" if args.quick else "") + ("_compile" if args.compile else ""),
                  "Training throughput" + (" with torch.compile rows" if args.compile else ""), body)


if __name__ == "__main__":
    main()
