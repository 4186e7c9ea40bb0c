"""Forward+backward time and peak memory against sequence length: concept encoder vs full-attention BERT (SDPA).

    python benchmarks/seq_scaling.py [--quick] [--max-bert-tokens 8192]
    python benchmarks/seq_scaling.py --token-layers 2 --max-bert-tokens 0   # + contextualised tokens (w = 128)

Batch 1, N = 512, 2K, 8K, 32K, one MLM training forward+backward (15% labelled) per point, each point in a
fresh subprocess (clean memory high-water mark). BERT stops at --max-bert-tokens (its attention is O(N²):
at 32K one step is minutes on a CPU) or where memory does. The growth exponent is the least-squares slope
of log(value) on log(N); for memory it is fitted on the activation memory (peak minus the memory held
after the model and its gradients exist), which is what grows with N.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
from _common import in_subprocess, markdown_table, peak_rss_bytes, timed, write_section
from models import FULL, QUICK, Shape, bert, concept_encoder, mlm_batch, training_step


def child(kind: str, shape: Shape, repeats: int) -> None:
    if kind.startswith("concept"):  # "concept" or "concept:K": K sliding-window token layers (w = 128) before
        layers = int(kind.partition(":")[2] or 0)
        model = concept_encoder(shape, position_embedding_type="rotary", token_layers=layers, token_window=128)
    else:
        model = bert(shape)
    batch = mlm_batch(shape)
    # a tiny step first, so parameter gradients exist before the baseline is read
    small = mlm_batch(dataclasses.replace(shape, tokens=64))
    training_step(model, small)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = peak_rss_bytes()
    seconds = sorted(timed(lambda: training_step(model, batch)) for _ in range(repeats))[repeats // 2]
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss_bytes()
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "activation_bytes": max(peak - base, 1)}))


def slope(points: list[tuple[int, float]]) -> float:
    xs, ys = [math.log(n) for n, _ in points], [math.log(v) for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 4K, small shapes")
    parser.add_argument("--max-bert-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--token-layers", type=int, default=0,
                        help="also the concept encoder with this many sliding-window token layers (window 128)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SHAPE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Shape(**json.loads(args.child[1])), int(args.child[2]))

    base = QUICK if args.quick else FULL
    lengths = [256, 1024, 4096] if args.quick else [512, 2048, 8192, 32768]
    kinds = [("concept encoder", "concept")]
    if args.token_layers:
        kinds.append((f"concept encoder + {args.token_layers} token layers (w 128)", f"concept:{args.token_layers}"))
    kinds.append(("BERT (SDPA)", "bert"))
    results: dict[str, list[tuple[int, dict]]] = {name: [] for name, _ in kinds}
    for n in lengths:
        shape = dataclasses.replace(base, tokens=n, batch=1)
        for name, kind in kinds:
            if kind == "bert" and n > args.max_bert_tokens:
                continue
            result = in_subprocess(Path(__file__), kind, json.dumps(dataclasses.asdict(shape)), str(args.repeats))
            results[name].append((n, result))
            print(name, n, result, flush=True)

    rows = []
    for name, points in results.items():
        for n, r in points:
            rows.append([name, f"{n:,}", "failed: " + r["error"] if "error" in r else f"{r['seconds']:.3f}",
                         "" if "error" in r else f"{r['peak_bytes'] / 2**30:.2f}",
                         "" if "error" in r else f"{r['activation_bytes'] / 2**30:.3f}"])
    fits = []
    for name, points in results.items():
        ok = [(n, r) for n, r in points if "error" not in r]
        if len(ok) >= 2:
            fits.append([name, f"{slope([(n, r['seconds']) for n, r in ok]):.2f}",
                         f"{slope([(n, r['activation_bytes']) for n, r in ok]):.2f}",
                         f"{ok[0][0]:,}–{ok[-1][0]:,}"])
    body = (f"Shape: H{base.hidden} L{base.layers} C{base.concepts} FFN {base.ffn} V {base.vocab:,}, batch 1, MLM "
            f"forward+backward with {int(100 * base.mask_rate)}% labelled (the concept encoder with rotary positions; "
            f"BERT with a position table as long as N). Command: "
            f"`python benchmarks/seq_scaling.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["model", "N", "s / fwd+bwd", "peak memory GiB", "activation memory GiB"], rows)
            + "\n\nFitted growth exponents (value ∝ N^k):\n\n"
            + markdown_table(["model", "time k", "activation memory k", "N range"], fits))
    extra = " --token-layers {} --max-bert-tokens {}".format(args.token_layers, args.max_bert_tokens) if args.token_layers else ""
    body = body.replace("`python benchmarks/seq_scaling.py", f"`python benchmarks/seq_scaling.py{extra}", 1)
    name = "seq_scaling" + ("_token_layers" if args.token_layers else "") + ("_quick" if args.quick else "")
    title = "Sequence-length scaling" + (" with token layers" if args.token_layers else "")
    write_section(name, title, body)


if __name__ == "__main__":
    main()
