"""Evaluation throughput: zero-shot STS encoding (sentences/s) and fine-tuning (examples/s), ours vs MiniLM.

    CONCEPT_ENCODER_DATA=../shared/data python benchmarks/eval_throughput.py [--quick]

Zero-shot: every STS-B dev sentence (3,000) encoded in batches of 64 through `evaluation.zero_shot.encode`
(the code `concept-encoder zero-shot` runs). Fine-tuning: one epoch of the `evaluate` protocol's Trainer
on a fixed STS-B slice. Models: the plan's L6 concept encoder (random weights: speed does not depend on
training) with the MiniLM tokenizer, and all-MiniLM-L6-v2 (22M, the uncompressed reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from _common import markdown_table, write_section
from models import FULL, QUICK, concept_encoder
from transformers import AutoTokenizer

from concept_encoder.data import resolve_data_dir
from concept_encoder.data.tasks import get_task, load_split
from concept_encoder.evaluation.finetune import FinetuneSettings, finetune_task
from concept_encoder.evaluation.zero_shot import encode, load_encoder
from concept_encoder.offline import offline_folder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    shape = QUICK if args.quick else FULL
    data_dir = resolve_data_dir()
    task = get_task("stsb")
    pairs = load_split(task, "validation", data_dir)
    sentences = [p["text_a"] for p in pairs] + [p["text_b"] for p in pairs]
    if args.quick:
        sentences = sentences[:512]
    train_examples = 128 if args.quick else 512

    with tempfile.TemporaryDirectory() as folder:
        ours = Path(folder) / "concept"
        tokenizer_source = offline_folder(MINILM) or MINILM
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        model = concept_encoder(dataclasses.replace(shape, vocab=len(tokenizer)), pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
        model.save_pretrained(ours)
        tokenizer.save_pretrained(ours)
        rows = []
        for name, source in ((f"concept encoder H{shape.hidden} L{shape.layers} C{shape.concepts}", ours),
                             ("all-MiniLM-L6-v2", MINILM)):
            encoder, tok = load_encoder(source)
            encode(encoder, tok, sentences[:64])  # warm-up
            start = time.perf_counter()
            encode(encoder, tok, sentences, batch_size=64)
            zero_shot = len(sentences) / (time.perf_counter() - start)
            settings = FinetuneSettings(num_train_epochs=1, max_train_examples=train_examples, max_eval_examples=64,
                                        per_device_train_batch_size=32)
            result = finetune_task(source, task, data_dir, Path(folder) / "work", [1], settings)
            finetune = result["sizes"]["train"] / result["runs"][0]["seconds"]
            rows.append([name, f"{zero_shot:,.0f}", f"{finetune:,.1f}"])
    body = (f"Zero-shot: {len(sentences):,} STS-B dev sentences, batch 64; fine-tuning: {train_examples} STS-B "
            "training pairs, one epoch, batch 32, including per-epoch selection evaluation and the final "
            f"prediction. Command: `python benchmarks/eval_throughput.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["model", "zero-shot sentences/s", "fine-tuning examples/s"], rows))
    write_section("eval_throughput" + ("_quick" if args.quick else ""), "Evaluation throughput", body)


if __name__ == "__main__":
    main()
