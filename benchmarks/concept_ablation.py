"""Do the concepts carry the text? The concept ablation of a pretraining config over seeds, and its noise.

    python benchmarks/concept_ablation.py [--config configs/micro/diffusion_L2.yaml] [--seeds 42 43 44]
                                          [--variant NAME=SECTION.KEY=VALUE ...] [--output-dir runs/concept_ablation]

Every (variant, seed) run is pretrained (or reused, or resumed), then `analyze`d: `concept_ablation_gain` is
the task loss with another sample's concepts minus with its own, on the probe texts under the objective's
evaluation collator (analysis/ablation.py), the metric of the `concepts_used` gate. Its sample standard
deviation over the seeds is that gate's `noise` (src/concept_encoder/analysis/gates.yaml). For a diffusion
config the table adds the gain at fixed noise levels t = 0.3 / 0.6 / 0.9 on the held-out validation blocks, and
`reconstruct` (8 rounds) against always guessing the training blocks' most frequent token. The default
variants are the micro diffusion twin as configured (no token mixing) and with the depthwise-conv mixer.
Needs the local data folder (--data-dir or $CONCEPT_ENCODER_DATA). Minutes per run on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _common import ROOT, markdown_table, pretrained_at_seed, write_section

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.analysis.ablation import concept_ablation, noised_batch, reconstruction_against_frequency
from concept_encoder.analysis.analyze import analyze
from concept_encoder.config import load_experiment
from concept_encoder.data import resolve_data_dir

NOISE_LEVELS = (0.3, 0.6, 0.9)


def held_out_measures(run_dir: Path) -> dict[str, float]:
    """Diffusion only: gains at fixed t on the validation blocks, and reconstruct against the frequency guess."""
    from datasets import load_from_disk

    blocks = next((run_dir.parent / ".cache").glob("blocks_*"))  # one corpus per output folder
    train, held_out = (torch.tensor(load_from_disk(str(blocks / split))["input_ids"]) for split in ("train", "validation"))
    model = ConceptEncoderForMaskedLM.from_pretrained(run_dir / "model").eval()
    result = {f"gain_t{t}": concept_ablation(model, [noised_batch(held_out, model.config, t, seed=1)])[
        "concept_ablation_gain"] for t in NOISE_LEVELS}
    return {**result, **reconstruction_against_frequency(model, train, held_out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/micro/diffusion_L2.yaml", help="relative to the repository root or absolute")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="pretraining seeds (>= 2)")
    parser.add_argument("--variant", action="append", metavar="NAME=SECTION.KEY=VALUE",
                        help="a variant with one override (repeatable); default: as configured, and conv mixing")
    parser.add_argument("--output-dir", default=str(ROOT / "runs" / "concept_ablation"))
    parser.add_argument("--data-dir", help="local data folder (default: $CONCEPT_ENCODER_DATA)")
    args = parser.parse_args()
    if len(set(args.seeds)) < 2:
        parser.error("--seeds: a standard deviation needs at least two different seeds")
    variants = {"as configured": []}
    for item in args.variant or ["conv mixing=model.diffusion_mixing=conv"]:
        name, _, override = item.partition("=")
        variants[name] = [override]
    data_dir = resolve_data_dir(args.data_dir)
    diffusion = load_experiment(args.config).objective.name == "diffusion"

    rows, gains = [], {}
    for index, (variant, overrides) in enumerate(variants.items()):
        output = Path(args.output_dir) / f"variant{index}"
        for seed in args.seeds:
            run_dir = pretrained_at_seed(args.config, seed, overrides, data_dir, output)
            diagnostics = analyze(run_dir, data_dir=data_dir)["diagnostics"]
            gains.setdefault(variant, []).append(diagnostics["concept_ablation_gain"])
            row = [variant, seed, f"{diagnostics['concept_ablation_own']:.3f}",
                   f"{diagnostics['concept_ablation_shuffled']:.3f}", f"{diagnostics['concept_ablation_zeroed']:.3f}",
                   f"{diagnostics['concept_ablation_gain']:+.3f}"]
            if diffusion:
                held = held_out_measures(run_dir)
                row += [" / ".join(f"{held[f'gain_t{t}']:+.3f}" for t in NOISE_LEVELS),
                        f"{100 * held['reconstruct_accuracy']:.2f} vs {100 * held['frequency_accuracy']:.2f}",
                        f"{held['cross_entropy']:.3f} vs {held['unigram_cross_entropy']:.3f}"]
            rows.append(row)
            print(" | ".join(map(str, row)), flush=True)

    header = ["variant", "seed", "own", "shuffled", "zeroed", "gain (probe)"]
    if diffusion:
        header += ["gain at t=0.3/0.6/0.9 (held out)", "reconstruct % vs frequency guess %", "CE t=0.6 vs unigram CE"]
    summary = [f"- {variant}: gain {statistics.fmean(values):+.3f} ± {statistics.stdev(values):.3f} "
               f"(mean ± std over seeds {args.seeds})" for variant, values in gains.items()]
    body = (f"`python benchmarks/concept_ablation.py --config {args.config}`: task loss "
            "(nats per labelled token) with each sample's own concepts, another sample's (shuffled) and zeros, on the "
            "probe texts (`analyze`); the std of the gain is the `concepts_used` gate's noise.\n\n"
            + markdown_table(header, rows) + "\n\n" + "\n".join(summary))
    write_section(f"concept_ablation_{Path(args.config).stem}", f"Concept ablation: {Path(args.config).stem}", body)


if __name__ == "__main__":
    main()
