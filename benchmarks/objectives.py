"""One training step per objective at the same L6 shape: tokens/s and FLOPs utilisation against the MLM step.

    python benchmarks/objectives.py [--quick] [--repeats 5]

Each objective runs through the real pretraining pieces (its collator from `build_collator`, its loss from
`build_objective_loss`, the model its config needs) on the same packed synthetic blocks; measured in turns,
median step (forward, backward, AdamW). FLOPs are counted per objective, so diffusion (which predicts at
about 65% of positions) and TSDAE (all positions) are charged for what they compute. The teacher rows read
cached teacher vectors (random unit vectors of the teacher's width 384 here: the teacher never runs in a
step; `benchmarks/teacher_cache.py` measures its one pass), through the linear projection from H.
"""

from __future__ import annotations

import argparse

import torch
from _common import alternate, count_flops, device, markdown_table, matmul_peak, write_section
from models import FULL, QUICK, Shape, concept_encoder, optimizer

from concept_encoder.config import ObjectiveConfig
from concept_encoder.data.teacher_targets import DEFAULT_TEACHER
from concept_encoder.training.pretrain import build_collator, build_objective_loss

OBJECTIVES = {  # name -> (model overrides, objective config)
    "MLM (15%)": ({}, ObjectiveConfig(name="mlm")),
    "span MLM (30%)": ({}, ObjectiveConfig(name="span")),
    "TSDAE (60% deleted, position-only)": ({"decoder_type": "position_only"}, ObjectiveConfig(name="tsdae")),
    "masked diffusion": ({"decoder_type": "diffusion"}, ObjectiveConfig(name="diffusion")),
    "SimCSE": ({}, ObjectiveConfig(name="simcse", contrastive_weight=1.0)),
    "teacher (cached vectors)": ({}, ObjectiveConfig(name="teacher", teacher_projection=True)),
    "MLM + teacher": ({}, ObjectiveConfig(name="mlm", teacher=DEFAULT_TEACHER, teacher_projection=True)),
}
TEACHER_WIDTH = 384  # all-MiniLM-L6-v2


class Vocabulary:
    """The tokenizer facts the collators read (ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK])."""

    pad_token_id, mask_token_id, all_special_ids = 0, 4, [0, 1, 2, 3, 4]

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def blocks(shape: Shape) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, shape.vocab, (shape.batch, shape.tokens), generator=g)
    return [{"input_ids": row.tolist(), "index": i} for i, row in enumerate(ids)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    shape = QUICK if args.quick else FULL
    vocabulary = Vocabulary(shape.vocab)
    peak = matmul_peak()

    steps, counted, tokens = {}, {}, shape.batch * shape.tokens
    for name, (overrides, objective) in OBJECTIVES.items():
        model = concept_encoder(shape, **overrides)
        collator = build_collator(objective, vocabulary, 0, model.config)
        batch = {k: v.to(device()) for k, v in collator(blocks(shape)).items() if k != "index"}
        if objective.teacher_name is not None:
            targets = torch.nn.functional.normalize(torch.randn(shape.batch, TEACHER_WIDTH), dim=-1)
            batch["teacher_vectors"] = targets.to(device())
            model.teacher_projection = torch.nn.Linear(shape.hidden, TEACHER_WIDTH).to(device())
        loss_fn, opt = build_objective_loss(objective), optimizer(model)

        def step(model=model, batch=batch, loss_fn=loss_fn, opt=opt, update=True):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
                total, _, _ = loss_fn(model, batch, 0)
            total.backward()
            if update:
                opt.step()
            opt.zero_grad(set_to_none=True)

        steps[name] = step
        counted[name] = count_flops(lambda step=step: step(update=False))
    seconds = alternate(steps, args.repeats)

    mlm = counted["MLM (15%)"] / seconds["MLM (15%)"]
    rows = [[name, f"{seconds[name]:.3f}", f"{tokens / seconds[name]:,.0f}", f"{counted[name] / 1e9:,.1f}",
             f"{100 * counted[name] / seconds[name] / peak:.0f}%", f"{counted[name] / seconds[name] / mlm:.2f}"]
            for name in OBJECTIVES]
    body = (f"Shape: H{shape.hidden} L{shape.layers} C{shape.concepts} FFN {shape.ffn} V {shape.vocab:,}, batch "
            f"{shape.batch} × N {shape.tokens}; matmul peak measured here {peak / 1e9:,.0f} GFLOP/s. Command: "
            f"`python benchmarks/objectives.py{' --quick' if args.quick else ''}`.\n\n"
            + markdown_table(["objective", "s / step", "tokens/s", "GFLOP / step", "of matmul peak",
                              "utilisation / MLM's"], rows))
    write_section("objectives" + ("_quick" if args.quick else ""), "Training step per objective", body)


if __name__ == "__main__":
    main()
