"""`concept-encoder pretrain`: one validated config -> tokenizer, blocks, objective, model -> Trainer.

Everything that can be wrong with the input (config keys and types, corpus paths, an empty corpus,
a tokenizer without [MASK], a block size above the model's positions, an unwritable output folder)
is checked before the run folder exists, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import TrainingArguments, set_seed

from ..config import TASKLESS_OBJECTIVES, ConfigError, ExperimentConfig, ObjectiveConfig, load_experiment
from ..data import resolve_data_dir
from ..data.blocks import Blocks, build_blocks_cached, build_streaming_blocks, split_documents
from ..data.corpus import CorpusError, corpus_key, load_corpus, stream_corpus
from ..data.teacher_targets import block_texts, teacher_targets
from ..data.tokenizer import load_tokenizer, train_tokenizer
from ..inference.encoder import teacher_vectors
from ..modeling import ConceptEncoderConfig, ConceptEncoderForMaskedLM
from ..objectives import ObjectiveLoss, build_collator
from ..objectives.teacher import WithTeacherVectors
from ..precision import resolve_precision
from ..reporting import bars_shown
from ..rundir import (
    CHECKPOINTS,
    DEFAULT_OUTPUT_ROOT,
    EXPERIMENT_FILE,
    INIT_REPORT_FILE,
    LOG_HISTORY,
    MODEL_DIR,
    TOKENIZER_DIR,
    TRAIN_SUMMARY,
    check_writable,
    last_complete_checkpoint,
    run_name,
    write_json,
    write_yaml,
)
from .trainer import MaskingEpochCallback, PretrainingTrainer, ranks_agree
from .warm_start import WarmStartPlan, apply_warm_start, find_source, plan_warm_start


@dataclass
class Prepared:
    experiment: ExperimentConfig
    tokenizer: object
    blocks: Blocks
    model_config: ConceptEncoderConfig
    train_collator: object  # Masking-, Deletion-, Diffusion- or PaddingCollator
    eval_collator: object
    warm_start: WarmStartPlan | None = None  # model.init_from: what the fresh model takes from the source
    skipped_blocks: dict | None = None  # prefix_suffix: blocks too short to split, per split (None: unknown, streamed)
    teacher_vectors: dict | None = None  # objective.teacher: {"train": [n, D], "validation": [m, D]} by block index
    teacher_cache: dict | None = None  # per split: "read" | "built" | "rebuilt (why)"


def prepare(experiment: ExperimentConfig, data_dir: Path | None, cache_dir: Path, warm_start: bool = True) -> Prepared:
    """Read the corpus, get the tokenizer, pack blocks and build the model config: all checks, no run folder.

    `warm_start=False` (a run resumed from a checkpoint) ignores `model.init_from`: the weights are the checkpoint's.
    """
    data = experiment.data
    init_from = experiment.warm_start.init_from if warm_start else None
    source = find_source(init_from, experiment.source) if init_from else None  # a missing source fails first
    if data.streaming:
        documents = stream_corpus(data.corpus, data_dir, data.text_field)
        if data.max_documents:
            documents = documents.take(data.max_documents)
    else:
        documents = load_corpus(data.corpus, data_dir, data.text_field, data.max_documents)
    if source is not None:  # token ids must mean what they meant to the source: its tokenizer, not a new one
        tokenizer = load_tokenizer(str(source.tokenizer_dir))
    elif data.train_tokenizer:
        # train on the training side of the split only, so validation text stays unseen
        train_docs, _ = split_documents(documents, data.validation_fraction)
        tokenizer = train_tokenizer(train_docs, data.train_tokenizer, data.tokenizer_vocab_size, cache_dir / "tokenizers")
    else:  # a pretrained backbone brings its own tokenizer
        tokenizer = load_tokenizer(experiment.model.backbone_name or data.tokenizer)
    model_config = experiment.resolve(tokenizer)
    plan = (plan_warm_start(source, model_config, experiment.warm_start.init_layer, experiment.source)
            if source is not None else None)

    settings = dict(block_size=data.block_size, packing=data.packing, validation_fraction=data.validation_fraction,
                    max_validation_blocks=data.max_validation_blocks)
    if data.streaming:
        blocks = build_streaming_blocks(documents, tokenizer, **settings)
    else:
        blocks = build_blocks_cached(documents, tokenizer, cache_dir, corpus_key(documents), num_proc=data.num_proc,
                                     **settings)
    objective = experiment.objective
    vectors = cache = None
    if objective.teacher_name is not None:  # before any filtering: targets are looked up by block index
        vectors, cache = teacher_vectors_of(experiment, blocks, tokenizer, cache_dir)
    train_collator = build_collator(objective, tokenizer, objective.seed, model_config)
    skipped = None
    if objective.name == "prefix_suffix":
        blocks, skipped = keep_splittable(blocks, train_collator.splittable, experiment.source)
    return Prepared(
        experiment, tokenizer, blocks, model_config, train_collator,
        build_collator(objective, tokenizer, objective.eval_seed, model_config),
        warm_start=plan, skipped_blocks=skipped, teacher_vectors=vectors, teacher_cache=cache,
    )


def teacher_vectors_of(experiment: ExperimentConfig, blocks: Blocks, tokenizer, cache_dir: Path) -> tuple[dict, dict]:
    """The teacher's vector of every train and validation block, read from the cache or computed into it."""
    objective = experiment.objective
    teacher = experiment.check_teacher()
    vectors, status = {}, {}
    for split in ("train", "validation"):
        texts = block_texts(getattr(blocks, split), tokenizer)
        started = time.perf_counter()
        vectors[split], status[split] = teacher_targets(
            teacher, texts, cache_dir / "teacher", teacher_vectors, pooling=objective.teacher_pooling,
            chunk_tokens=objective.teacher_chunk_tokens)
        print(f"teacher targets ({split}, {len(texts)} blocks, {teacher.name}): {status[split]} in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    return vectors, status


def keep_splittable(blocks: Blocks, splittable: Callable[[int], bool], source: str) -> tuple[Blocks, dict | None]:
    """prefix_suffix: the blocks long enough for a prefix and a suffix, and how many of each split were not.
    A split left with none stops the run here, before any folder exists."""
    def keep(batch):
        return [splittable(n) for n in batch["length"]]

    train, validation = blocks.train.filter(keep, batched=True), blocks.validation.filter(keep, batched=True)
    streamed = isinstance(blocks.train, datasets.IterableDataset)  # filtered lazily: the count is unknown
    skipped = None if streamed else {"train": len(blocks.train) - len(train),
                                     "validation": len(blocks.validation) - len(validation)}
    for name, split in (("train", train), ("validation", validation)):
        if isinstance(split, datasets.Dataset) and len(split) == 0:
            raise CorpusError(f"{source}: [objective] prefix_suffix: no {name} block is long enough to split into a "
                              "prefix and a suffix (objective.min_side_tokens each); use longer texts or packing: concat")
    if skipped and any(skipped.values()):
        print(f"prefix_suffix: skipped {skipped['train']} train and {skipped['validation']} validation blocks too "
              "short to split", flush=True)
    return dataclasses.replace(blocks, train=train, validation=validation), skipped


def build_objective_loss(objective: ObjectiveConfig) -> ObjectiveLoss:
    teacher = objective.teacher_name is not None
    return ObjectiveLoss(
        task=objective.name not in TASKLESS_OBJECTIVES,
        distill=objective.name == "distill",
        regularisers=objective.regularisers,
        regulariser_weight=objective.regulariser_weight,
        regulariser_scope=objective.regulariser_scope,
        contrastive_weight=objective.contrastive_weight,
        contrastive_temperature=objective.contrastive_temperature,
        contrastive_cutoff=objective.contrastive_cutoff,
        weighting=objective.weighting,
        log_variance_bounds=(objective.log_variance_min, objective.log_variance_max),
        warmup_steps=objective.regulariser_warmup_steps,
        teacher_weight=objective.teacher_weight if teacher else 0.0,
        teacher_relational_weight=objective.teacher_relational_weight if teacher else 0.0,
        teacher_loss=objective.teacher_loss,
    )


# TrainingConfig fields that are TrainingArguments fields of the same name and meaning
PASSED_THROUGH = (
    "max_steps", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "lr_scheduler_type", "warmup_steps", "max_grad_norm", "logging_steps", "eval_steps", "save_steps",
    "save_total_limit", "seed", "dataloader_num_workers", "torch_compile",
)


def training_arguments(experiment: ExperimentConfig, run_dir: Path, name: str) -> TrainingArguments:
    t = experiment.training
    cuda = torch.cuda.is_available()
    precision = resolve_precision(t.precision, cuda)
    return TrainingArguments(
        **{field: getattr(t, field) for field in PASSED_THROUGH},
        output_dir=str(run_dir / CHECKPOINTS),
        run_name=name,
        data_seed=t.seed,
        optim="adamw_torch_fused",  # fused AdamW: one kernel per step on GPUs, ~5x faster than the loop on CPUs
        use_cpu=not cuda,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,
        dataloader_pin_memory=cuda,
        logging_first_step=True,
        disable_tqdm=not bars_shown(),  # a bar on a terminal; in logs, the loss lines say how far it got
        eval_strategy="steps",
        save_strategy="steps",
        report_to=t.report_to or "none",
        remove_unused_columns=False,  # the collators need each block's `index`
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy=(
            "group_by_length" if experiment.data.packing == "document" and not experiment.data.streaming else "random"
        ),
        length_column_name="length",
        # parameters with no gradient in a step (the decoder under SimCSE/distillation, the concept table
        # behind no-grad recursion) would make DDP wait forever for their gradients
        ddp_find_unused_parameters=experiment.objective.name in TASKLESS_OBJECTIVES
        or experiment.model.recursion_no_grad_iterations > 0,
    )


def pretrain(
    config: ExperimentConfig | str | Path | None = None,
    overrides: list[str] = (),
    data_dir: str | Path | None = None,
    output_root: str | Path = DEFAULT_OUTPUT_ROOT,
    resume: str | Path | None = None,
    attach: Callable[[PretrainingTrainer, Prepared], None] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Train a concept encoder from a config (or resume a run folder). Returns the run folder.

    `config` is the parsed `ExperimentConfig` (what the pipeline passes: the file is read once) or a file path,
    read here with `overrides`.

    `attach(trainer, prepared)` may add callbacks before training starts: the pipeline passes
    `analysis.callbacks.attach_during_training` (concept diagnostics and ablation at every evaluation).

    Tokenizers, blocks and teacher targets are cached under `cache_dir` (default `<output_root>/.cache`); a study
    shares one among its contenders, so a corpus is tokenised and a teacher run once per study.
    """
    started = time.time()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / EXPERIMENT_FILE).exists():
            raise ConfigError(f"--resume {run_dir}: no {EXPERIMENT_FILE} (not a run folder)")
        experiment = load_experiment(run_dir / EXPERIMENT_FILE, overrides)
        experiment.data.tokenizer, experiment.data.train_tokenizer = str(run_dir / TOKENIZER_DIR), None
        output_root = run_dir.parent
        checkpoint = last_complete_checkpoint(run_dir)
        print(f"resuming {run_dir} from {checkpoint}" if checkpoint else
              f"resuming {run_dir}: no complete checkpoint yet, training from step 0", flush=True)
    elif config is None:
        raise ConfigError("pretrain needs a CONFIG file or --resume RUN_DIR")
    elif isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError(f"{config.source}: pretrain takes --set overrides with a config file, not a parsed config")
        experiment, checkpoint = config, None
    else:
        experiment = load_experiment(config, overrides)
        checkpoint = None
    output_root = Path(output_root)
    data_path = resolve_data_dir(data_dir, required=False)
    if resume is None and experiment.training.run_name and (output_root / experiment.training.run_name).exists():
        raise ConfigError(f"training.run_name: {output_root / experiment.training.run_name} exists; resume it with "
                          "--resume, or choose another run name")
    new_root = not output_root.exists()
    check_writable(output_root)

    # joins the process group under torchrun / accelerate launch (gloo on CPU-only machines)
    state = PartialState(cpu=not torch.cuda.is_available())
    torch.set_flush_denormal(True)  # denormal floats run several times slower on CPUs; flushing costs nothing
    try:
        with state.main_process_first():  # rank 0 fills the caches, the others read them
            prepared = prepare(experiment, data_path, Path(cache_dir) if cache_dir else output_root / ".cache",
                               warm_start=checkpoint is None)
    except BaseException:
        if new_root and state.is_main_process and not any(p.is_file() for p in output_root.rglob("*")):
            shutil.rmtree(output_root, ignore_errors=True)  # a failed start leaves no empty output folder behind
        raise

    if resume is None:
        name = experiment.training.run_name or run_name(prepared.model_config, experiment.objective.name)
        name = broadcast_object_list([name])[0]  # one timestamp for all ranks
        run_dir = output_root / name
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=resume is not None)
        record = experiment.to_dict()
        write_yaml(run_dir / EXPERIMENT_FILE, record)
        prepared.tokenizer.save_pretrained(run_dir / TOKENIZER_DIR)
    state.wait_for_everyone()

    set_seed(experiment.training.seed)  # the initial weights depend on the seed alone
    model = ConceptEncoderForMaskedLM(prepared.model_config)
    if prepared.model_config.backbone_config is not None and checkpoint is None and prepared.warm_start is None:
        model.load_backbone_weights()  # a resumed run gets them from its checkpoint, a warm start from its source
    init_report = None
    if prepared.warm_start is not None:  # a fresh run only: prepare leaves it out when resuming from a checkpoint
        init_report = apply_warm_start(model, prepared.warm_start)
        if state.is_main_process:
            write_json(run_dir / INIT_REPORT_FILE, init_report)
            print(prepared.warm_start.summary(), flush=True)
    objective_loss = build_objective_loss(experiment.objective)
    if objective_loss.learns_weights:  # a submodule, so the optimiser, checkpoints and resume carry it
        model.loss_weighting = objective_loss.weighting
    train_collator, eval_collator = prepared.train_collator, prepared.eval_collator
    if prepared.teacher_vectors is not None:
        train_collator = WithTeacherVectors(train_collator, prepared.teacher_vectors["train"])
        eval_collator = WithTeacherVectors(eval_collator, prepared.teacher_vectors["validation"])
        if experiment.objective.teacher_projection:  # a submodule too (after the model's init); loading ignores it
            model.teacher_projection = torch.nn.Linear(
                prepared.model_config.hidden_size, prepared.teacher_vectors["train"].shape[1])
    args = training_arguments(experiment, run_dir, run_dir.name)
    trainer = PretrainingTrainer(
        model=model,
        args=args,
        train_dataset=prepared.blocks.train,
        eval_dataset=prepared.blocks.validation,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        processing_class=prepared.tokenizer,
        objective_loss=objective_loss,
        callbacks=[MaskingEpochCallback(prepared.train_collator)],
    )
    if attach is not None:
        attach(trainer, prepared)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final_eval = trainer.evaluate()
    agree, fingerprints = ranks_agree(trainer.model)
    if state.is_main_process:
        trainer.save_model(str(run_dir / MODEL_DIR))
        write_json(run_dir / LOG_HISTORY, {"log_history": trainer.state.log_history})
        write_json(run_dir / TRAIN_SUMMARY, {
            "run": run_dir.name,
            "resumed_from": str(checkpoint) if checkpoint else None,
            "init_from": init_report,
            "global_step": trainer.state.global_step,
            "train_loss": result.training_loss,
            "eval_loss": final_eval.get("eval_loss"),
            "train_blocks": len(prepared.blocks.train) if hasattr(prepared.blocks.train, "__len__") else None,
            "validation_blocks": len(prepared.blocks.validation),
            "train_documents": prepared.blocks.train_documents,
            "validation_documents": prepared.blocks.validation_documents,
            "skipped_blocks": prepared.skipped_blocks,
            "teacher_cache": prepared.teacher_cache,
            "tokens_seen": trainer.state.num_input_tokens_seen,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "wall_clock_s": round(time.time() - started, 1),
            "world_size": state.num_processes,
            "ranks_agree": agree,
            "rank_fingerprints": fingerprints,
            "device": str(args.device),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "model_config": prepared.model_config.to_diff_dict(),
            "objective": dataclasses.asdict(experiment.objective),
        })
    state.wait_for_everyone()
    return run_dir
