"""Verbs that read an experiment config: describe, config, pretrain, experiment, study, data mirror."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_data_dir, add_output_root, add_overrides, add_registry, add_verb


def describe(args: argparse.Namespace) -> int:
    """Build the model a config describes and print its parameters and tensor shapes."""
    import torch

    from ..modeling import ConceptEncoderForMaskedLM

    config, vocabulary = _described_config(args.config, args.set)
    model = ConceptEncoderForMaskedLM(config).eval()
    groups: dict[str, int] = {}
    seen = set()
    for name, param in model.named_parameters():  # named_parameters skips tied duplicates
        if id(param) in seen:
            continue
        seen.add(id(param))
        group = ".".join(name.split(".")[:2]) if name.startswith("encoder.") else name.split(".")[0]
        groups[group] = groups.get(group, 0) + param.numel()
    total = sum(groups.values())
    print(f"{type(model).__name__}  {config.short_name}  layer_type={config.layer_type}  "
          f"weight_sharing={config.weight_sharing}  decoder={config.decoder_type}")
    print(f"{'component':<24}{'parameters':>14}")
    for group, count in groups.items():
        print(f"{group:<24}{count:>14,}")
    print(f"{'total':<24}{total:>14,}")

    B, N = 2, min(args.tokens, config.max_position_embeddings)
    ids = torch.randint(0, config.vocab_size, (B, N))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    print(f"\ninput_ids [B={B}, N={N}] -> tokens [B, N, Dt={config.token_dim}] -> "
          f"concepts {list(out.concepts.shape)} (B, C, H) -> logits {list(out.logits.shape)} (B, N, V)")
    print(f"encoder steps: {config.encoder_steps} ({len(out.hidden_states)} hidden states)")
    print(f"vocabulary: V = {config.vocab_size:,} ({vocabulary})")
    return 0


def _described_config(path: str, overrides: list[str]):
    """The model `describe` builds, with the vocabulary the run would have: the size of the tokenizer it trains,
    else the configured tokenizer's own when it loads here, else the config's (said so)."""
    from ..config import build_model_config, load_config, load_experiment
    from ..data.tokenizer import load_tokenizer

    raw = load_config(path, overrides)
    if "data" not in raw:  # a model file (configs/model/): no tokenizer named
        return build_model_config(raw, path), "the config's: the file names no tokenizer"
    experiment = load_experiment(path, overrides)
    data = experiment.data
    if data.train_tokenizer:
        vocab = raw.get("model", {}).get("vocab_size", data.tokenizer_vocab_size)
        return (build_model_config({"model": {**raw.get("model", {}), "vocab_size": vocab}}, path),
                f"the {data.train_tokenizer} tokenizer the run trains, data.tokenizer_vocab_size")
    try:
        tokenizer = load_tokenizer(data.tokenizer)
    except Exception:  # noqa: BLE001  (offline Hub name: describe still works, and says where V came from)
        return build_model_config(raw, path), f"the config's: tokenizer {data.tokenizer!r} is not at hand here"
    return experiment.resolve(tokenizer), f"tokenizer {data.tokenizer!r}"


def show_config(args: argparse.Namespace) -> int:
    """The resolved experiment: bases merged, overrides applied, `!default` gone, every section checked, and the
    model section with what the tokenizer fixes (where the tokenizer is at hand)."""
    import yaml

    from ..config import load_experiment

    experiment = load_experiment(args.config, args.set)  # a typo in any section: one line, exit 2
    resolved = experiment.to_dict()
    if "data" in resolved:
        model, vocabulary = _described_config(args.config, args.set)
        resolved["model"] = {**resolved.get("model", {}), "vocab_size": model.vocab_size}
        print(f"# vocab_size: {vocabulary}")
    print(yaml.safe_dump(resolved, sort_keys=False).rstrip())
    return 0


def pretrain(args: argparse.Namespace) -> int:
    from ..analysis.callbacks import attach_during_training
    from ..training import pretrain as run_pretraining

    run_dir = run_pretraining(args.config, args.set, args.data_dir, args.output_dir, args.resume,
                              attach=attach_during_training)
    print(f"run folder: {run_dir}")
    return 0


def experiment(args: argparse.Namespace) -> int:
    """Pretrain -> analyze -> evaluate -> report -> registry, resumable per stage."""
    from ..analysis.gates import format_verdicts
    from ..experiment import run_experiment

    run_dir, verdicts = run_experiment(args.config, args.set, args.data_dir, args.output_dir, args.resume,
                                       args.registry)
    print("\ndecision gates:")
    print(format_verdicts(verdicts, markdown=False))
    print(f"run folder: {run_dir}")
    print(f"report: {run_dir / 'report' / 'report.html'} (and report.md)")
    return 0


def study(args: argparse.Namespace) -> int:
    """Every contender of a study under one token budget, then the comparison tables in the results file."""
    from ..study import check_study, run_study

    if args.check:  # exit 1 when a config changed (its rows are stale), 0 with a warning when only code did
        configs, code = check_study(args.study)
        for line in configs:
            print(f"stale: {line}")
        for line in code:
            print(f"warning: {line}")
        if not configs and not code:
            print(f"{args.study}: every row is up to date with today's configs and code")
        return 1 if configs else 0

    results = run_study(args.study, args.data_dir, args.only, args.tables_only)
    print(f"results: {results}")
    return 0


def data_mirror(args: argparse.Namespace) -> int:
    from ..data.corpus import mirror

    for path in mirror(args.names, Path(args.to), max_documents=args.max_documents):
        print(f"wrote {path}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, sections: str, resume_help: str) -> None:
    """A verb that starts a run from a config, or resumes one."""
    p.add_argument("config", nargs="?", help=f"experiment YAML (sections {sections}); not needed with --resume")
    add_overrides(p)
    add_data_dir(p)
    add_output_root(p)
    p.add_argument("--resume", metavar="RUN_DIR", help=resume_help)


def register(verbs) -> None:
    p = add_verb(verbs, "describe", "build a model from a config; print parameters and shapes",
                 "concept-encoder describe configs/plan/perceiver_mlm_L6.yaml --tokens 512")
    p.add_argument("config", help="experiment YAML (its `model` section is used) or a model YAML")
    add_overrides(p)
    p.add_argument("--tokens", type=int, default=128, help="sequence length of the shape trace")
    p.set_defaults(run_verb=describe)

    p = add_verb(verbs, "config", "print the resolved experiment (bases, overrides, defaults), every section checked",
                 "concept-encoder config configs/demo.yaml --set training.max_steps=10")
    p.add_argument("config", help="experiment YAML")
    add_overrides(p)
    p.set_defaults(run_verb=show_config)

    p = add_verb(verbs, "pretrain", "pretrain a concept encoder from an experiment config",
                 ["concept-encoder pretrain configs/micro/teacher_L6.yaml --set training.max_steps=50",
                  "torchrun --nproc_per_node 4 -m concept_encoder.cli pretrain configs/plan/perceiver_mlm_L6.yaml"])
    _add_run_options(p, "model, data, objective, training", "continue a run from its last complete checkpoint")
    p.set_defaults(run_verb=pretrain)

    p = add_verb(verbs, "experiment", "pretrain -> analyze -> evaluate -> report -> registry, resumable",
                 ["concept-encoder experiment configs/demo.yaml",
                  "concept-encoder experiment --resume runs/demo_20261206_120000"])
    _add_run_options(p, "model, data, objective, training, analysis, evaluation", "finish an interrupted experiment")
    add_registry(p)
    p.set_defaults(run_verb=experiment)

    p = add_verb(verbs, "study", "run a study's contenders under one token budget and write its tables",
                 ["concept-encoder study configs/study/cpu_hour_v2_pilot.yaml",
                  "concept-encoder study configs/study/cpu_hour_v2_pilot.yaml --check"])
    p.add_argument("study", help="study YAML, e.g. configs/study/cpu.yaml")
    add_data_dir(p)
    p.add_argument("--only", nargs="+", metavar="CONTENDER", help="run only these contenders (tables cover all)")
    p.add_argument("--tables-only", action="store_true", help="run nothing; rewrite the tables from the run folders")
    p.add_argument("--check", action="store_true", help="run nothing; list the rows whose config changed (exit 1) "
                   "or whose code changed (a warning) since they ran")
    p.set_defaults(run_verb=study)

    data = verbs.add_parser("data", help="local data folder tools", description="local data folder tools")
    data_verbs = data.add_subparsers(dest="data_verb", required=True)
    p = add_verb(data_verbs, "mirror", "copy Hub corpora into a local data folder (for offline clusters)",
                 "concept-encoder data mirror wikitext-103-raw-v1 --to /shared/concept-data --max-documents 10000")
    p.add_argument("names", nargs="+", help="corpus names, optionally NAME:SPLIT (e.g. wikitext-103-raw-v1)")
    p.add_argument("--to", required=True, help="the local data folder to fill")
    p.add_argument("--max-documents", type=int, help="only the first documents of each split (unset: all)")
    p.set_defaults(run_verb=data_mirror)
