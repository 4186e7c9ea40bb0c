"""Experiment YAML files: sections, `--set section.key=value` overrides, validation before any compute.

A file has one section per stage: `model` (validated by `ConceptEncoderConfig`), `data`, `objective`
and `training` (validated by the dataclasses below). Unknown keys, ill-typed values and impossible
values are `ConfigError`s naming the file, the section and the key. The `model` section may also hold
`init_from` / `init_layer` (a warm start, `WarmStart`), which are not model config fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.tasks import TaskError, get_task, resolve_tasks
from .data.teacher_targets import DEFAULT_TEACHER, Teacher, TeacherError
from .errors import ConfigError
from .modeling import ConceptEncoderConfig
from .modeling.backbone import backbone_settings
from .objectives.collators import TASKLESS
from .objectives.regularisers import REGULARISERS, SCOPES
from .objectives.teacher import TEACHER_LOSSES
from .precision import PRECISIONS


# ---------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    # corpus sources: Hub names ("wikitext-103-raw-v1:validation", "JeanKaddour/minipile"), or files / globs,
    # relative paths resolving against the local data folder (--data-dir / CONCEPT_ENCODER_DATA)
    corpus: list[str] = field(default_factory=lambda: ["wikitext-103-raw-v1"])
    text_field: str = "text"  # the text column of .jsonl / .parquet / Hub corpora
    max_documents: int | None = None  # first documents of each source only (quick runs)
    streaming: bool = False  # read the corpus lazily as training goes (huge corpora); needs training.max_steps
    # tokenizer: a Hub name or folder; or train one on the training documents
    tokenizer: str = "answerdotai/ModernBERT-base"
    train_tokenizer: str | None = None  # None | "wordpiece" | "bpe"
    tokenizer_vocab_size: int = 16384
    # blocks
    block_size: int = 512
    packing: str = "concat"  # concat: documents joined by [SEP], cut into full blocks | document: one document per block
    validation_fraction: float = 0.02  # of documents, chosen by a hash of their text (stable, order-free)
    max_validation_blocks: int | None = 512
    num_proc: int = 1

    def check(self) -> None:
        _require(len(self.corpus) > 0, "corpus", "needs at least one source")
        _require(self.train_tokenizer in (None, "wordpiece", "bpe"), "train_tokenizer",
                 f"{self.train_tokenizer!r} is not one of None, 'wordpiece', 'bpe'")
        _require(self.tokenizer_vocab_size >= 256, "tokenizer_vocab_size", "must be at least 256")
        _require(self.block_size >= 8, "block_size", "must be at least 8")
        _require(self.packing in ("concat", "document"), "packing", f"{self.packing!r} is not 'concat' or 'document'")
        _require(0.0 < self.validation_fraction < 1.0, "validation_fraction", "must be in (0, 1)")
        _require(self.max_documents is None or self.max_documents > 0, "max_documents", "must be positive")
        _require(self.num_proc >= 1, "num_proc", "must be >= 1")
        _require(not (self.streaming and self.train_tokenizer), "train_tokenizer",
                 "training a tokenizer needs the corpus in memory; with streaming use a Hub tokenizer or a folder")


SPECIAL_ID_FIELDS = ("pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id", "unk_token_id",
                     "bos_token_id", "eos_token_id")  # set from the tokenizer by ExperimentConfig.resolve
OBJECTIVES = ("mlm", "span", "tsdae", "simcse", "diffusion", "distill", "prefix_suffix", "teacher")
AUTOREGRESSIVE_OBJECTIVES = ("tsdae", "prefix_suffix")  # the objectives whose dense labels a causal decoder reads
TASKLESS_OBJECTIVES = TASKLESS  # nothing is decoded: unmasked batches, no labels, no decoder gradient


@dataclass
class ObjectiveConfig:
    # mlm: token masking | span: contiguous spans | tsdae: deletion + position-only rebuild
    # simcse: contrastive only | diffusion: MDLM noising (t_min, ELBO, smoothing live in the model config)
    # distill: the mean concept regresses the mean token state of a pretrained backbone (its sentence embedding)
    # prefix_suffix: encode the first 35-45% of each block (to a sentence end), decode the rest autoregressively
    # teacher: the pooled concepts learn a frozen sentence encoder's vectors alone (objectives/teacher.py)
    name: str = "mlm"
    mask_rate: float | None = None  # None: 0.15 for mlm, 0.30 for span
    span_min: int = 3
    span_max: int = 10
    mask_token_fraction: float = 0.8  # of selected tokens (spans): replaced by [MASK]
    random_token_fraction: float = 0.1  # replaced by a random token; the rest keep their token
    deletion_rate: float = 0.6  # tsdae: share of (non-special) tokens hidden from the encoder
    # prefix_suffix (objectives/prefix_suffix.py): the prefix's share of a block ~ U(min, max), moved to the
    # nearest sentence end within boundary_window of the block; the decoder's inputs hide word_dropout behind [MASK]
    prefix_share_min: float = 0.35
    prefix_share_max: float = 0.45
    boundary_window: float = 0.1
    decoder_word_dropout: float = 0.2
    min_side_tokens: int = 4  # a block shorter than twice this is too short to split (skipped and counted)
    # teacher distillation (objectives/teacher.py, data/teacher_targets.py), beside any task objective: a Hub
    # name, model folder or run folder; name: teacher without one takes all-MiniLM-L6-v2 (offline package)
    teacher: str | None = None
    teacher_loss: str = "cosine"  # cosine | mse: the pooled concepts towards the teacher's unit vector
    teacher_weight: float = 1.0  # of the vector term (0: the relational term alone)
    teacher_relational_weight: float = 1.0  # in-batch cosine-matrix term (0: none)
    teacher_projection: bool = False  # a linear map hidden_size -> the teacher's width (needed when they differ)
    teacher_pooling: str = "mean"  # how the teacher pools (a concept-encoder teacher: mean | weighted | decoder)
    teacher_chunk_tokens: int = 256  # a text longer than this (teacher tokens) is the mean over chunks this long
    # concept regularisers (objectives/regularisers.py) and SimCSE, added to the task loss
    regularisers: list[str] = field(default_factory=list)
    regulariser_weight: float = 0.1  # fixed weighting: shared equally by the regularisers
    regulariser_scope: str = "sample"  # sample: within each input | batch: across all concepts of the batch
    regulariser_warmup_steps: int = 0  # linear ramp of regulariser weights from 0
    contrastive_weight: float = 0.0  # > 0 adds SimCSE on pooled concepts; name simcse uses it alone
    contrastive_temperature: float = 0.05
    contrastive_cutoff: float = 0.0  # share of tokens the second SimCSE view hides (token cutoff); 0: dropout only
    weighting: str = "fixed"  # fixed | kendall_gal (bounded learned uncertainty weights)
    log_variance_min: float = -2.0
    log_variance_max: float = 2.0
    seed: int = 0  # masking stream of the training set
    eval_seed: int = 1234  # fixed validation masks: the same at every evaluation

    def check(self) -> None:
        _require(self.name in OBJECTIVES, "name", f"{self.name!r} is not one of {OBJECTIVES}")
        _require(0 < self.deletion_rate < 1, "deletion_rate",
                 f"must be in (0, 1) (1 would delete everything), got {self.deletion_rate}")
        _require(self.rate > 0 and self.rate < 1, "mask_rate", f"must be in (0, 1), got {self.rate}")
        _require(1 <= self.span_min <= self.span_max, "span_min", "need 1 <= span_min <= span_max")
        _require(0 < self.prefix_share_min <= self.prefix_share_max < 1, "prefix_share_min",
                 f"need 0 < prefix_share_min <= prefix_share_max < 1, got {self.prefix_share_min}, "
                 f"{self.prefix_share_max}")
        _require(0 <= self.boundary_window < 1, "boundary_window", f"must be in [0, 1), got {self.boundary_window}")
        _require(0 <= self.decoder_word_dropout < 1, "decoder_word_dropout",
                 f"must be in [0, 1), got {self.decoder_word_dropout}")
        _require(self.min_side_tokens >= 1, "min_side_tokens", f"must be >= 1, got {self.min_side_tokens}")
        _require(self.teacher is None or self.teacher.strip() != "", "teacher", "must name a model, or be null")
        _require(self.teacher_loss in TEACHER_LOSSES, "teacher_loss", f"{self.teacher_loss!r} not in {TEACHER_LOSSES}")
        for name in ("teacher_weight", "teacher_relational_weight"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        _require(self.teacher_name is None or self.teacher_weight + self.teacher_relational_weight > 0,
                 "teacher_weight", "teacher_weight and teacher_relational_weight are both 0: the teacher would "
                 "teach nothing")
        _require(not (self.name == "simcse" and self.teacher), "teacher", "name: simcse is SimCSE alone; for SimCSE "
                 "beside a teacher use name: teacher with contrastive_weight > 0")
        _require(self.teacher_pooling in ("mean", "weighted", "decoder"), "teacher_pooling",
                 f"{self.teacher_pooling!r} is not mean, weighted or decoder")
        _require(self.teacher_chunk_tokens >= 8, "teacher_chunk_tokens", f"must be >= 8, got {self.teacher_chunk_tokens}")
        unknown = [r for r in self.regularisers if r not in REGULARISERS]
        _require(not unknown, "regularisers", f"unknown {unknown}; choose from {sorted(REGULARISERS)}")
        for name in ("regulariser_weight", "contrastive_weight"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        _require(self.contrastive_temperature > 0, "contrastive_temperature", "must be positive")
        _require(0 <= self.contrastive_cutoff < 1, "contrastive_cutoff",
                 f"must be in [0, 1), got {self.contrastive_cutoff}")
        _require(self.contrastive_cutoff == 0 or self.contrastive_weight > 0 or self.name == "simcse",
                 "contrastive_cutoff", "cuts tokens from the second SimCSE view: set contrastive_weight > 0 "
                 "(or name: simcse), or leave it 0")
        _require(self.regulariser_scope in SCOPES, "regulariser_scope", f"{self.regulariser_scope!r} not in {SCOPES}")
        _require(self.weighting in ("fixed", "kendall_gal"), "weighting", f"{self.weighting!r} is not fixed or kendall_gal")
        _require(self.log_variance_min < 0 < self.log_variance_max, "log_variance_min",
                 "need log_variance_min < 0 < log_variance_max")
        _require(
            0 <= self.mask_token_fraction and 0 <= self.random_token_fraction
            and self.mask_token_fraction + self.random_token_fraction <= 1,
            "mask_token_fraction", "mask_token_fraction + random_token_fraction must be within [0, 1]",
        )

    @property
    def teacher_name(self) -> str | None:
        """The teacher this objective distils from, or None (name: teacher defaults to all-MiniLM-L6-v2)."""
        return self.teacher or (DEFAULT_TEACHER if self.name == "teacher" else None)

    @property
    def rate(self) -> float:
        if self.mask_rate is not None:
            return self.mask_rate
        return 0.15 if self.name == "mlm" else 0.30


@dataclass
class TrainingConfig:
    max_steps: int = -1  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    lr_scheduler_type: str = "cosine"  # cosine | linear | constant_with_warmup
    warmup_steps: float = 0.05  # an int is steps, a float in [0, 1) a fraction of all steps
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 on GPUs that have it, else fp32 | fp32 | bf16 (GPU; CPU opt-in) | fp16 (GPU)
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int | None = 2
    seed: int = 42
    dataloader_num_workers: int = 0
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    # trackers (HF Trainer integrations): [wandb], [tensorboard], [mlflow] ..., or HF's string form `wandb`;
    # none by default. Each must be installed: pip install "concept-encoder[wandb]" (or tensorboard / mlflow)
    report_to: list[str] | str = field(default_factory=list)
    run_name: str | None = None  # default: {model}_H{H}L{L}C{C}_{timestamp}

    def check(self) -> None:
        _require(self.max_steps > 0 or self.num_train_epochs > 0, "max_steps", "set max_steps or num_train_epochs")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "eval_steps", "save_steps"):
            _require(getattr(self, name) > 0, name, "must be positive")
        _require(self.learning_rate > 0, "learning_rate", "must be positive")
        _require(self.lr_scheduler_type in ("cosine", "linear", "constant_with_warmup"), "lr_scheduler_type",
                 f"{self.lr_scheduler_type!r} is not one of cosine, linear, constant_with_warmup")
        _require(self.precision in PRECISIONS, "precision", f"{self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.precision == "fp16":  # machine-dependent, but still before any compute
            import torch

            _require(torch.cuda.is_available(), "precision", "fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(self.save_steps % self.eval_steps == 0 or self.eval_steps % self.save_steps == 0, "save_steps",
                 "save_steps and eval_steps must divide one another")
        self.report_to = _checked_trackers(self.report_to)
        if self.run_name is not None:
            from .rundir import path_part_problem

            problem = path_part_problem(self.run_name)
            _require(problem is None, "run_name", f"{problem} (a run folder inside --output-dir)")


@dataclass
class AnalysisConfig:
    """Concept diagnostics on a probe set (`concept-encoder analyze`, and during training at each evaluation)."""

    probe_documents: int = 128  # held-out validation documents of the run's corpus
    probe_file: str | None = None  # or one text per line (.txt / .gz), relative to the working folder
    probe_max_length: int | None = None  # tokens per text; default data.block_size
    batch_size: int = 32
    during_training: bool = True  # log diagnostics at every evaluation (probe: the first validation blocks)
    during_training_blocks: int = 64
    # the concept ablation's no-concept floor (analysis/ablation.py): Adam steps fitting the constant concept set
    # for each half of the probe batches (after training; 0: no floor, the gate reads the shuffled gain)
    floor_steps: int = 100
    gates: str | None = None  # a gates YAML; default: the research plan's (concept_encoder/analysis/gates.yaml)

    def check(self) -> None:
        _require(self.probe_documents >= 2, "probe_documents", "must be at least 2")
        _require(self.batch_size >= 2, "batch_size", "must be at least 2 (the concept ablation gives each sample "
                 "another sample's concepts from the same batch)")
        _require(self.during_training_blocks >= 2, "during_training_blocks", "must be at least 2")
        _require(self.floor_steps >= 0, "floor_steps", f"must be >= 0, got {self.floor_steps}")
        _require(self.probe_max_length is None or self.probe_max_length >= 2, "probe_max_length", "must be >= 2")


@dataclass
class EvaluationConfig:
    """What `concept-encoder experiment` evaluates after pretraining (FinetuneSettings per task come from
    `settings`, then the overrides here)."""

    finetune_tasks: list[str] = field(default_factory=lambda: ["stsb", "mrpc"])
    zero_shot_tasks: list[str] = field(default_factory=lambda: ["zero-shot"])
    seeds: list[int] = field(default_factory=lambda: [1])
    settings: str | None = None  # per-task settings YAML, e.g. configs/eval/default.yaml
    head: str | None = None
    pooling: str = "mean"  # zero-shot pooling: mean | decoder
    num_train_epochs: float | None = None
    learning_rate: float | list[float] | None = None  # a list: a grid chosen per seed on the selection split
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    def check(self) -> None:
        _require(len(self.seeds) > 0, "seeds", "needs at least one seed")
        _require(self.pooling in ("mean", "decoder"), "pooling", f"{self.pooling!r} is not 'mean' or 'decoder'")
        for key in ("finetune_tasks", "zero_shot_tasks"):  # the task registry validates names and groups
            try:
                names = resolve_tasks(getattr(self, key))
            except TaskError as error:
                raise ValueError(f"{key}: {error}") from None
            if key == "zero_shot_tasks":
                not_sts = [n for n in names if not get_task(n).is_regression]
                _require(not not_sts, key, f"{not_sts} are not similarity tasks; zero-shot takes sts tasks")


@dataclass
class WarmStart:
    """The first weights of a fresh run from an earlier one (training/warm_start.py). Written in the `model`
    section, but not `ConceptEncoderConfig` fields: they choose where the weights start, not what the model
    computes, so the saved model's config.json does not carry them."""

    init_from: str | None = None  # a run folder (model/ + experiment.yaml) or a model folder (config.json)
    init_layer: int | None = None  # weight-shared run from a stacked source: the source layer that becomes the shared one

    def check(self) -> None:
        _require(self.init_from is None or self.init_from.strip() != "", "init_from", "must be a folder path")
        _require(self.init_layer is None or self.init_layer >= 0, "init_layer", f"must be >= 0, got {self.init_layer}")
        _require(self.init_layer is None or self.init_from is not None, "init_layer",
                 "picks a layer of the model.init_from source; set init_from too")


WARM_START_KEYS = tuple(f.name for f in dataclasses.fields(WarmStart))


def split_model_section(model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `model` section -> (ConceptEncoderConfig fields, WarmStart keys)."""
    return ({k: v for k, v in model.items() if k not in WARM_START_KEYS},
            {k: v for k, v in model.items() if k in WARM_START_KEYS})


SECTION_CLASSES = {"data": DataConfig, "objective": ObjectiveConfig, "training": TrainingConfig,
                   "analysis": AnalysisConfig, "evaluation": EvaluationConfig}
SECTIONS = ("model", *SECTION_CLASSES)


@dataclass
class ExperimentConfig:
    """One validated experiment: the typed model config plus one dataclass per pipeline section, parsed once
    (`load_experiment`) and handed to every stage as this object.

    `model` holds the file's model section as a `ConceptEncoderConfig`; the vocabulary and special token ids
    come from the tokenizer, so `resolve(tokenizer)` gives the config a model is built from. `check()` holds
    every rule that spans sections."""

    model: ConceptEncoderConfig
    data: DataConfig
    objective: ObjectiveConfig
    training: TrainingConfig
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    warm_start: WarmStart = field(default_factory=WarmStart)  # model.init_from / init_layer, kept out of `model`
    model_section: dict[str, Any] = field(default_factory=dict)  # the model keys as the file set them
    source: str = "<config>"

    def to_dict(self) -> dict[str, Any]:
        """The config as a file would state it (what a run folder's experiment.yaml records)."""
        warm = {k: v for k, v in dataclasses.asdict(self.warm_start).items() if v is not None}
        return {
            "model": {**self.model_section, **warm},
            **{name: dataclasses.asdict(getattr(self, name)) for name in SECTION_CLASSES},
        }

    def check(self) -> None:
        """Every rule that spans sections; each a `ConfigError` naming the file, the section and the key."""
        model, objective, data, path = self.model, self.objective, self.data, self.source
        if self.warm_start.init_layer is not None and not model.weight_sharing:
            raise ConfigError(f"{path}: [model] init_layer: picks the source layer that becomes a weight-shared "
                              "run's one layer; this run is stacked (weight_sharing: false), so it takes every layer "
                              "as it is")
        if objective.regularisers and objective.regulariser_scope == "sample" and model.num_concepts < 2:
            raise ConfigError(f"{path}: [objective] regularisers: at regulariser_scope sample they compare the "
                              f"concepts of one input, and model.num_concepts is {model.num_concepts}; use >= 2 "
                              "concepts or regulariser_scope: batch")
        if objective.name == "tsdae" and model.decoder_type not in ("position_only", "autoregressive"):
            raise ConfigError(f"{path}: [model] decoder_type: objective tsdae needs position_only or autoregressive "
                              "decoding (token queries would see the deleted tokens' positions filled in)")
        if model.decoder_type == "autoregressive" and objective.name not in AUTOREGRESSIVE_OBJECTIVES:
            raise ConfigError(f"{path}: [model] decoder_type: autoregressive decoding needs the dense labels of "
                              f"objective {' or '.join(AUTOREGRESSIVE_OBJECTIVES)}")
        if objective.name == "prefix_suffix" and model.decoder_type != "autoregressive":
            raise ConfigError(f"{path}: [model] decoder_type: objective prefix_suffix decodes the suffix left to "
                              "right: set decoder_type: autoregressive")
        if model.decoder_type == "autoregressive" and data.block_size > model.max_position_embeddings:
            raise ConfigError(f"{path}: [data] block_size={data.block_size} is above [model] "
                              f"max_position_embeddings={model.max_position_embeddings}, the autoregressive "
                              "decoder's position table")
        if (objective.name == "diffusion") != (model.decoder_type == "diffusion"):
            raise ConfigError(f"{path}: [model] decoder_type: objective diffusion and decoder_type diffusion go "
                              "together")
        if objective.name in TASKLESS and model.deep_supervision_segments > 1:
            raise ConfigError(f"{path}: [model] deep_supervision_segments: objective {objective.name} decodes "
                              "nothing, so there is nothing to supervise per segment")
        if model.backbone_name and data.train_tokenizer:
            raise ConfigError(f"{path}: [data] train_tokenizer: a backbone comes with its tokenizer")
        if model.position_embedding_type == "absolute" and data.block_size > model.max_position_embeddings:
            raise ConfigError(f"{path}: [data] block_size={data.block_size} is above "
                              f"[model] max_position_embeddings={model.max_position_embeddings}")
        if data.streaming and self.training.max_steps <= 0:
            raise ConfigError(f"{path}: [training] max_steps: a streamed corpus has no length; set max_steps > 0")
        if objective.teacher_name is not None:
            self.check_teacher()

    def check_teacher(self) -> Teacher:
        """The teacher loads (config and tokenizer, not its weights), reads chunks of teacher_chunk_tokens, and
        its width fits the student's; cheap, so it runs before any data is read."""
        model, objective, path = self.model, self.objective, self.source
        if self.data.streaming:
            raise ConfigError(f"{path}: [data] streaming: teacher targets are computed for every block before "
                              "training (and cached); a streamed corpus has no fixed set of blocks")
        try:
            teacher = Teacher.resolve(objective.teacher_name)
            teacher.check_window(objective.teacher_chunk_tokens)
        except TeacherError as error:
            raise ConfigError(f"{path}: [objective] teacher: {error}") from None
        if objective.teacher_pooling != "mean" and teacher.model_type != "concept_encoder":
            raise ConfigError(f"{path}: [objective] teacher_pooling: {objective.teacher_pooling} pools a concept "
                              f"encoder's concepts; teacher {teacher.name!r} is a {teacher.model_type} encoder (mean)")
        if objective.teacher_relational_weight > 0 and self.training.per_device_train_batch_size < 2:
            raise ConfigError(f"{path}: [objective] teacher_relational_weight: the relational term compares the "
                              "texts of one batch (per device); per_device_train_batch_size 1 has no pair")
        if objective.teacher_weight > 0 and teacher.dim != model.hidden_size and not objective.teacher_projection:
            raise ConfigError(f"{path}: [objective] teacher_projection: the teacher's vectors have {teacher.dim} "
                              f"dimensions and model.hidden_size is {model.hidden_size}; set teacher_projection: "
                              f"true (a linear map) or hidden_size: {teacher.dim}")
        return teacher

    def resolve(self, tokenizer) -> ConceptEncoderConfig:
        """The model config to build: the file's model section plus what the tokenizer (vocabulary, special ids)
        and a pretrained backbone (its width and HF config) fix. A value the file sets must agree with them."""
        derived = {"vocab_size": len(tokenizer)}
        derived.update({f: getattr(tokenizer, f) for f in SPECIAL_ID_FIELDS if getattr(tokenizer, f, None) is not None})
        if self.model.backbone_name:
            try:
                derived.update(backbone_settings(self.model.backbone_name, self.model.backbone_layers or 0))
            except (OSError, ValueError) as error:
                raise ConfigError(f"{self.source}: [model] backbone_name: {error}") from None
        for key, value in derived.items():
            if key in self.model_section and self.model_section[key] != value:
                raise ConfigError(f"{self.source}: [model] {key}={self.model_section[key]!r} disagrees with the "
                                  f"tokenizer ({value!r})")
        config = build_model_config({"model": {**derived, **self.model_section}}, self.source)
        if self.objective.name == "distill" and (config.backbone_config is None or config.backbone_freeze != "all"
                                                 or config.hidden_size != config.token_dim):
            raise ConfigError(f"{self.source}: [objective] name=distill needs a frozen pretrained backbone "
                              "(model.backbone_name, backbone_freeze: all: a trained teacher would drift towards the "
                              f"student) and model.hidden_size equal to its width ({config.token_dim})")
        return config


TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "azure_ml": ("azureml",), "flyte": ("flytekit",),
                   "kubeflow": ("kfp",)}  # HF integration -> module(s) it needs


def _checked_trackers(report_to: list[str] | str) -> list[str]:
    """`report_to` as a list of HF Trainer integrations, each known to transformers and installed; else one line
    before any folder exists (HF's own check would raise a traceback from inside the Trainer)."""
    import importlib.util

    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [] if names in (["none"], []) else names
    for name in names:
        _require(name in INTEGRATION_TO_CALLBACK or name == "all", "report_to",
                 f"{name!r} is not a Trainer integration; use one of {sorted(INTEGRATION_TO_CALLBACK)}, or none")
        modules = TRACKER_MODULES.get(name, (name,))
        _require(name == "all" or any(importlib.util.find_spec(m) is not None for m in modules), "report_to",
                 f"{name} is not installed: pip install \"concept-encoder[{name}]\" (or pip install {modules[0]})")
    return names


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


# ---------------------------------------------------------------------------- loading
class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.2), not as the string YAML 1.1 makes of it."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _Default:
    """`!default`: in a file that extends others, remove the key its bases set, so the key's default applies
    (`null` keeps meaning None, as everywhere else)."""

    def __repr__(self) -> str:
        return "!default"


DEFAULT = _Default()
_YamlLoader.add_constructor("!default", lambda loader, node: DEFAULT)


class YamlDumper(yaml.SafeDumper):
    """Writes `!default` back as itself (configs that extend others)."""


YamlDumper.add_representer(_Default, lambda dumper, value: dumper.represent_scalar("!default", ""))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.num_concepts=64` -> (["model", "num_concepts"], 64); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: the key must name a section, e.g. model.num_concepts=64")
    try:
        return path, parse_yaml(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"--set {text!r}: the value {raw!r} is not valid YAML ({problem}); quote a string, "
                          "write a list as [a, b]") from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping (empty file: {}); a missing file, bad YAML or another shape is a ConfigError."""
    path = Path(path)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top of the {what}, got {type(raw).__name__}")
    return raw


BASE_KEY = "base"  # an experiment file may extend others: `base: ../plan/diffusion_L6.yaml` plus what differs


def read_experiment_mapping(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """An experiment file's mapping with its `base` files merged in. `base` is one path or a list, relative to
    the file that names it; the bases merge left to right, then this file's keys over them, section by section
    (a nested mapping merges, any other value replaces, `!default` removes the key so its default applies)."""
    raw = read_yaml_mapping(path)
    if BASE_KEY not in raw:
        return raw  # its `!default`s still apply to whatever it is merged over
    bases = raw.pop(BASE_KEY)
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be the path (or a list of paths) of the configs it extends, "
                          f"got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if base_path.resolve() in {p.resolve() for p in (*chain, path)}:
            raise ConfigError(f"{path}: {BASE_KEY} {base!r} extends itself "
                              f"(chain: {' -> '.join(map(str, (*chain, path)))})")
        if not base_path.exists():
            raise ConfigError(f"{path}: {BASE_KEY} {base!r}: no such config file ({base_path})")
        merged = _merged(merged, read_experiment_mapping(base_path, (*chain, path)))
    return _merged(merged, raw)


def _merged(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if value is DEFAULT:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = _merged(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Read a YAML experiment file (with the files it extends), apply overrides, and check its sections (not yet
    their keys)."""
    path = Path(path)
    raw = _merged({}, read_experiment_mapping(path))  # a `!default` with nothing below it is an absent key
    for text in overrides:
        keys, value = parse_override(text)
        node = raw.setdefault(keys[0], {})
        for depth, key in enumerate(keys[1:-1], 1):
            node = node.setdefault(key, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict):
            where = ".".join(keys[:depth + 1]) if len(keys) > 2 else keys[0]
            raise ConfigError(f"--set {text!r}: {where} is a value, not a section of keys; set {where}=... itself")
        node[keys[-1]] = value
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; valid sections are {list(SECTIONS)}")
    for section, body in raw.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping, got {type(body).__name__}")
    return raw


def build_model_config(config: dict[str, dict[str, Any]], source: str | Path = "<config>") -> ConceptEncoderConfig:
    """The `model` section as a validated `ConceptEncoderConfig`; errors name the file and the key."""
    fields, _ = split_model_section(config.get("model", {}))
    try:
        return ConceptEncoderConfig(**fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: [model] {error}") from None


def build_section(cls: type, name: str, body: dict[str, Any], source: str | Path) -> Any:
    """A section dataclass from its mapping: unknown keys, wrong types and bad values name file/section/key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: [{name}] unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for key, value in body.items():
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"{source}: [{name}] {key}: expected {_type_name(hints[key])}, got {type(value).__name__} ({value!r})"
            )
    section = cls(**body)
    try:
        section.check()
    except ValueError as error:
        raise ConfigError(f"{source}: [{name}] {error}") from None
    return section


def load_experiment(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Load and validate every section of an experiment file (the model section's keys included). An error that
    an override caused names the override, not the file."""
    raw = load_config(path, overrides)
    try:
        return _experiment(path, raw)
    except ConfigError as error:
        for text in reversed(list(overrides)):
            keys, _ = parse_override(text)
            section, key = keys[0], keys[1]
            if f"[{section}] {key}" in str(error) or f"[{section}] unknown key(s) ['{key}']" in str(error):
                raise ConfigError(f"--set {text!r}: {str(error).removeprefix(f'{path}: ')}") from None
        raise


def _experiment(path: str | Path, raw: dict) -> ExperimentConfig:
    model = build_model_config(raw, path)  # fail on model keys now, before any data is read
    sections = {name: build_section(cls, name, raw.get(name, {}), path) for name, cls in SECTION_CLASSES.items()}
    model_fields, warm_fields = split_model_section(raw.get("model", {}))
    warm_start = build_section(WarmStart, "model", warm_fields, path)  # the source itself is checked by prepare
    experiment = ExperimentConfig(model=model, warm_start=warm_start, model_section=model_fields, source=str(path),
                                  **sections)
    experiment.check()
    return experiment


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(annotation)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
