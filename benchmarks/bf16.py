"""bf16 autocast vs fp32: training step time of ours and a same-size BERT at the plan's L6 MLM config.

    python benchmarks/bf16.py [--quick] [--repeats 5]

On a CPU this is the question `precision: bf16` answers (opt-in there; `auto` stays fp32): bf16 matmuls are
native on AVX512-BF16 / AMX CPUs and emulated, slower, elsewhere. One process, the four candidates measured in
turns (median step time; forward, backward and AdamW), each utilisation against the matmul peak of its own dtype
measured in the same run, and how far the bf16 loss strays from the fp32 loss on the same batch and weights.
Runs unchanged on a GPU, where the comparison is the same question for the GPU's tensor cores.
"""

from __future__ import annotations

import argparse

import torch
from _common import alternate, count_flops, device, markdown_table, matmul_peak, write_section
from models import FULL, QUICK, bert, concept_encoder, mlm_batch, optimizer, training_step

from concept_encoder.precision import cpu_has_native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    shape = QUICK if args.quick else FULL
    peaks = {dtype: matmul_peak(dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    batch = mlm_batch(shape)
    models = {"concept encoder": concept_encoder(shape), "BertForMaskedLM": bert(shape)}
    steps = {}
    for name, model in models.items():
        opt = optimizer(model)
        for bf16 in (False, True):
            steps[(name, bf16)] = lambda m=model, o=opt, b=bf16: training_step(m, batch, o, bf16=b)
    seconds = alternate({f"{name}|{bf16}": fn for (name, bf16), fn in steps.items()}, args.repeats)

    rows = []
    for name, model in models.items():
        flops = count_flops(lambda m=model: training_step(m, batch))
        model.eval()  # the same weights, no dropout: the two losses differ only by precision
        with torch.no_grad():
            exact = training_step(model, batch, bf16=False, backward=False).item()
            low = training_step(model, batch, bf16=True, backward=False).item()
        model.train()
        for bf16 in (False, True):
            s = seconds[f"{name}|{bf16}"]
            peak = peaks[torch.bfloat16 if bf16 else torch.float32]
            rows.append([name, "bf16 autocast" if bf16 else "fp32", f"{s:.3f}",
                         f"{batch['input_ids'].numel() / s:,.0f}", f"{flops / s / 1e9:,.1f}",
                         f"{100 * flops / s / peak:.0f}%", f"{seconds[f'{name}|False'] / s:.2f}×",
                         f"{abs(low - exact) / abs(exact):.1e}" if bf16 else "–"])
    ours, theirs = "concept encoder", "BertForMaskedLM"
    ratio = {bf16: seconds[f"{theirs}|{bf16}"] / seconds[f"{ours}|{bf16}"] for bf16 in (False, True)}
    native = "native" if device().type == "cuda" or cpu_has_native_bf16() else "emulated (no AVX512-BF16/AMX)"
    table = markdown_table(["model", "precision", "s / step", "tokens/s", "GFLOP/s", "of its dtype's matmul peak",
                            "speed-up over fp32", "loss rel. diff"], rows)
    body = (f"Shape: H{shape.hidden} L{shape.layers} C{shape.concepts} FFN {shape.ffn} V {shape.vocab:,}, batch "
            f"{shape.batch}×{shape.tokens}, dropout {shape.dropout}. bf16 here is {native}. Matmul peak measured in "
            f"this run: fp32 {peaks[torch.float32] / 1e9:,.0f}, bf16 {peaks[torch.bfloat16] / 1e9:,.0f} GFLOP/s. "
            f"Command: `python benchmarks/bf16.py{' --quick' if args.quick else ''}`.\n\n{table}\n\n"
            f"**Concept encoder vs BERT: {ratio[False]:.2f}× the tokens/s in fp32, {ratio[True]:.2f}× under bf16 "
            f"autocast.** Loss rel. diff: |bf16 loss − fp32 loss| / fp32 loss on the same batch and weights, "
            "dropout off.")
    write_section("bf16" + ("_quick" if args.quick else ""), "bf16 autocast vs fp32", body)


if __name__ == "__main__":
    main()
