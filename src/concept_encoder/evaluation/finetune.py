"""Fine-tuning protocol: select on a split held out from training, report on another, several seeds.

- The training split is divided once, by a hash of each example's text, into `train` (90%) and
  `selection` (10%). The Trainer evaluates on `selection` every epoch and keeps the best checkpoint by
  the task's headline metric (F1 for MRPC/QQP/PAWS, MCC for CoLA, Spearman for STS, else accuracy),
  the metric that is reported. The reported split (`validation`) is never seen before the final
  prediction.
- `learning_rate` may be a grid: each seed then fine-tunes once per rate and keeps the rate whose best
  `selection` score is highest, so the reported split chooses nothing. Every rate's selection score is
  recorded beside the chosen one.
- Similarity tasks (STS-B, SICK-R) also report on a held-out split: the labelled test file where the data
  folder has it, else a hashed 20% of train that is removed from training and selection. Dev chose
  recipes (pilots were compared on it); the held-out split chose nothing, so its number is the honest one.
- PAWS has no training split in the local folder: a fixed half of its dev split (by hash) fine-tunes
  (with its own selection part), the other half is reported. Results say so (`protocol` field).
- Pairs are encoded jointly ([CLS] a [SEP] b [SEP]), as in GLUE practice.
- Concept encoders get `ConceptEncoderForSequenceClassification` (weighted concept pooling); any other
  HF encoder its own `AutoModelForSequenceClassification` head, so references run through the same code.
- Baselines (majority class or TF-IDF cosine, and TF-IDF + linear model) on the same train/report splits
  are stored beside the model's numbers.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..config import ConfigError, build_section, read_yaml_mapping
from ..data.tasks import Task, TaskError, has_heldout, heldout_split, load_split, pair_hash
from ..modeling import ConceptEncoderForSentencePairClassification
from ..precision import resolve_precision
from ..reporting import bars_shown, format_results
from ..rundir import safe_folder_name, write_atomic, write_json
from .baselines import majority_baseline, tfidf_cosine_baseline, tfidf_linear_baseline
from .metrics import compute_metrics
from .zero_shot import model_source, model_tokenizer


@dataclass
class FinetuneSettings:
    learning_rate: float | list[float] = 5e-5  # a list: a grid, chosen per seed on the selection split
    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 32
    weight_decay: float = 0.01
    warmup_steps: float = 0.1
    max_length: int = 128
    selection_fraction: float = 0.1
    max_train_examples: int | None = None  # a fixed slice for quick runs
    max_eval_examples: int | None = None
    head: str = "weighted"  # concept encoders: weighted | via_decoder | via_decoder_bypass | pair | pair_cosine

    def check(self) -> None:
        if self.head not in (*HEADS, *PAIR_HEADS):
            raise ValueError(f"head: {self.head!r} is not one of {[*HEADS, *PAIR_HEADS]}")
        if not self.learning_rates or min(self.learning_rates) <= 0 or self.num_train_epochs <= 0:
            raise ValueError("learning_rate (every rate of a grid) and num_train_epochs must be positive")
        if len(set(self.learning_rates)) != len(self.learning_rates):
            raise ValueError(f"learning_rate: the grid {self.learning_rate} repeats a rate")

    @property
    def learning_rates(self) -> list[float]:
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]


HEADS = {
    "weighted": {"classifier_pooling": "weighted"},
    "via_decoder": {"classifier_pooling": "via_decoder", "classifier_token_bypass": False},  # only concepts
    "via_decoder_bypass": {"classifier_pooling": "via_decoder", "classifier_token_bypass": True},  # tokens too
}
PAIR_HEADS = ("pair", "pair_cosine")  # sentences encoded separately
RUN_BOOKKEEPING = ("seed", "selection_best", "seconds", "learning_rate", "selection_by_learning_rate")  # not metrics


def load_settings(path: str | Path | None, task_names: list[str], **overrides) -> dict[str, FinetuneSettings]:
    """Per-task settings: the file's `defaults`, then its `tasks.<name>` keys, then command-line overrides."""
    raw = {}
    if path is not None:
        raw = read_yaml_mapping(path)
        unknown = sorted(set(raw) - {"defaults", "tasks"})
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; valid: ['defaults', 'tasks']")
    per_task = raw.get("tasks") or {}
    settings = {}
    for name in task_names:
        body = {**(raw.get("defaults") or {}), **(per_task.get(name) or {}),
                **{k: v for k, v in overrides.items() if v is not None}}
        settings[name] = build_section(FinetuneSettings, f"tasks.{name}", body, path or "<command line>")
    return settings


def hash_split(examples: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """(rest, held out): an example is held out when a hash of its texts falls below `fraction`."""
    held = [pair_hash(e) < fraction for e in examples]
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


@dataclass
class Splits:
    train: list[dict]
    selection: list[dict]  # chooses the checkpoint and the learning rate
    report: list[dict]  # validation (dev)
    protocol: str
    extra: dict[str, list[dict]] = field(default_factory=dict)  # more reported splits: heldout, mismatched


def protocol_splits(task: Task, data_dir: Path | None, settings: FinetuneSettings) -> Splits:
    """Train, selection, report (dev) and extra reported splits, with the protocol in words.

    Tasks whose data has no training split (PAWS in the local folder, a user file) fine-tune on a hashed
    half of their evaluation split and report on the other half; any other missing split is an error.
    Similarity tasks also report on a held-out split that no recipe was chosen on (`heldout_split`).
    """
    single_split = task.name == "paws" or "train" not in task.files
    extra = {}
    try:
        full_train = load_split(task, "train", data_dir)
        report = load_split(task, "validation", data_dir)
        protocol = "train split minus a hashed 10% for selection; reported on validation"
        if has_heldout(task):
            full_train, extra["heldout"], how = heldout_split(task, full_train, data_dir)
            protocol += f"; {how}"
    except TaskError:
        if not single_split:
            raise
        report, full_train = hash_split(load_split(task, "validation", data_dir), 0.5)
        protocol = "no train split: a hashed half of dev fine-tunes (10% of it for selection); the other half is reported"
    if "validation_mismatched" in task.files:
        try:
            extra["mismatched"] = load_split(task, "validation_mismatched", data_dir)
            protocol += "; mismatched reported from the same fine-tuning"
        except TaskError as error:
            protocol += f"; mismatched not reported ({error})"
    train, selection = hash_split(full_train, settings.selection_fraction)
    if settings.max_train_examples:
        train = train[: settings.max_train_examples]
        selection = selection[: max(16, settings.max_train_examples // 8)]
    if settings.max_eval_examples:
        report = report[: settings.max_eval_examples]
        extra = {name: part[: settings.max_eval_examples] for name, part in extra.items()}
    for name, part in (("train", train), ("selection", selection), ("report", report), *extra.items()):
        if not part:
            raise TaskError(f"{task.name}: the {name} split is empty")
    return Splits(train, selection, report, protocol, extra)


def position_limit(model_path) -> int | None:
    """The longest input a model's position table holds (None: no table, e.g. rotary positions)."""
    try:
        config = AutoConfig.from_pretrained(model_source(model_path))
    except Exception:  # not a model: `load_classifier` says so in one line
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    return getattr(config, "max_position_embeddings", None)


def check_evaluation(task: Task, settings: FinetuneSettings, data_dir: Path | None) -> None:
    """Everything about a task's fine-tuning that can be wrong before a model exists: its files, its head."""
    if settings.head == "pair_cosine" and not task.is_regression:
        raise TaskError(f"{task.name}: the pair_cosine head regresses similarity; use it on sts tasks")
    if settings.head in PAIR_HEADS and task.text_b is None:
        raise TaskError(f"{task.name}: the {settings.head} head needs a sentence-pair task")
    protocol_splits(task, data_dir, settings)  # every split it reads exists and is non-empty


def _dataset(examples: list[dict], tokenizer, max_length: int, separate: bool = False,
             label_scale: float = 1.0) -> Dataset:
    """Joint encoding ([CLS] a [SEP] b [SEP]), or each sentence on its own (`separate`, pair heads)."""
    texts_a = [e["text_a"] for e in examples]
    texts_b = [e["text_b"] for e in examples] if examples[0]["text_b"] is not None else None
    # class ids stay integers: HF heads infer multi-label BCE from float labels
    columns = {"labels": [e["label"] / label_scale if label_scale != 1.0 else e["label"] for e in examples]}
    if separate:
        if texts_b is None:
            raise TaskError("the pair heads need a sentence-pair task")
        a = tokenizer(texts_a, truncation=True, max_length=max_length)
        b = tokenizer(texts_b, truncation=True, max_length=max_length)
        columns.update(input_ids=a["input_ids"], attention_mask=a["attention_mask"],
                       input_ids_b=b["input_ids"], attention_mask_b=b["attention_mask"])
    else:
        encoded = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
        columns.update(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    return Dataset.from_dict(columns)


class PairCollator:
    """Pads the two sentences of each pair separately."""

    def __init__(self, tokenizer):
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        a = self.pad([{"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]} for f in features])
        b = self.pad([{"input_ids": f["input_ids_b"], "attention_mask": f["attention_mask_b"]} for f in features])
        return {**a, "input_ids_b": b["input_ids"], "attention_mask_b": b["attention_mask"],
                "labels": torch.tensor([f["labels"] for f in features])}


def load_classifier(model_path: str | Path, task: Task, head: str = "weighted"):
    source = model_source(model_path)
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = model_tokenizer(source)
        problem = "regression" if task.is_regression else "single_label_classification"
        if head in PAIR_HEADS:
            if config.model_type != "concept_encoder":
                raise TaskError(f"{model_path}: the {head} head is for concept encoders")
            model = ConceptEncoderForSentencePairClassification.from_pretrained(
                source, num_labels=task.num_labels, problem_type=problem, cosine_only=head == "pair_cosine")
        else:
            head_settings = HEADS[head] if config.model_type == "concept_encoder" else {}
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=task.num_labels, problem_type=problem, **head_settings)
    except TaskError:
        raise
    except Exception as error:  # not a model folder, no classification head for this architecture
        raise TaskError(f"{model_path}: not a concept encoder nor a loadable Hugging Face encoder "
                        f"({type(error).__name__}: {error})") from None
    return model, tokenizer, config.model_type


def _scores(task: Task, prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    predicted = logits.reshape(-1) if task.is_regression else logits.argmax(-1)
    return compute_metrics(task, predicted, prediction.label_ids)


def _finite_or_worst(score: float | None) -> float:
    return score if score is not None and math.isfinite(score) else -math.inf  # e.g. NaN from constant predictions


def _train_once(model_path, task: Task, settings: FinetuneSettings, max_length: int, learning_rate: float, seed: int, *,
                train: list[dict], selection: list[dict], separate: bool, scale: float,
                output_dir: Path) -> tuple[Trainer, float]:
    """One fine-tuning at one rate and seed: (the Trainer, holding the checkpoint best on `selection`; seconds)."""
    set_seed(seed)
    model, tokenizer, _ = load_classifier(model_path, task, settings.head)
    started = time.time()  # after loading: the time of fine-tuning itself
    args = TrainingArguments(
        output_dir=str(output_dir), seed=seed, data_seed=seed,
        learning_rate=learning_rate, num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.per_device_train_batch_size, per_device_eval_batch_size=64,
        weight_decay=settings.weight_decay, warmup_steps=settings.warmup_steps, eval_strategy="epoch",
        save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
        metric_for_best_model=task.metrics[0], greater_is_better=True, report_to="none", logging_steps=50,
        use_cpu=not torch.cuda.is_available(), bf16=resolve_precision("auto") == "bf16",
        disable_tqdm=not bars_shown(), remove_unused_columns=not separate,  # no bars in logs
    )
    trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=_dataset(train, tokenizer, max_length, separate, scale),
                      eval_dataset=_dataset(selection, tokenizer, max_length, separate, scale),
                      data_collator=PairCollator(tokenizer) if separate else DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda prediction: _scores(task, prediction))
    trainer.train()
    return trainer, time.time() - started


def finetune_task(model_path, task: Task, data_dir: Path | None, output_dir: Path, seeds: list[int],
                  settings: FinetuneSettings, keep_models: Path | None = None) -> dict:
    """Fine-tune once per seed, select on the held-out part, report; `keep_models` saves each best model."""
    check_evaluation(task, settings, data_dir)
    splits = protocol_splits(task, data_dir, settings)
    train, selection, report = splits.train, splits.selection, splits.report
    separate = settings.head in PAIR_HEADS
    limit = position_limit(model_path)  # inputs longer than the position table are cut to it
    max_length = settings.max_length if limit is None else min(settings.max_length, limit)
    scale = task.label_range[1] if settings.head == "pair_cosine" else 1.0  # cosines meet scores in [0, 1]
    runs = []
    for seed in seeds:
        seconds, selection_by_rate, best = 0.0, {}, None
        for rate in settings.learning_rates:
            trainer, took = _train_once(model_path, task, settings, max_length, rate, seed, train=train, selection=selection,
                                        separate=separate, scale=scale,
                                        output_dir=output_dir / f"{safe_folder_name(task.name)}_seed{seed}_lr{rate:g}")
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)  # its best weights are loaded in memory
            trainer.optimizer = trainer.lr_scheduler = None  # only the weights are needed to predict
            seconds += took
            selection_by_rate[f"{rate:g}"] = trainer.state.best_metric
            score = _finite_or_worst(trainer.state.best_metric)
            if best is None or score > best[0]:  # a tie keeps the earlier rate
                best = (score, rate, trainer)
        _, rate, trainer = best
        started = time.time()
        tokenizer, model_type = trainer.processing_class, trainer.model.config.model_type
        scores = _scores(task, trainer.predict(_dataset(report, tokenizer, max_length, separate, scale)))
        for split, examples in splits.extra.items():  # held-out, MNLI mismatched: the same fine-tuning
            extra = _scores(task, trainer.predict(_dataset(examples, tokenizer, max_length, separate, scale)))
            scores.update({f"{split}_{name}": value for name, value in extra.items()})
        if keep_models is not None:  # e.g. for `zero-shot --pooling weighted` on the fine-tuned pooling
            kept = keep_models / f"{safe_folder_name(task.name)}_seed{seed}"
            trainer.save_model(kept)
            tokenizer.save_pretrained(kept)
        run = {"seed": seed, **scores, "selection_best": trainer.state.best_metric,
               "seconds": round(seconds + time.time() - started, 1)}
        if len(selection_by_rate) > 1:  # a grid: say what was chosen, and from what
            run |= {"learning_rate": rate, "selection_by_learning_rate": selection_by_rate}
        runs.append(run)
    summary = {name: {"mean": statistics.fmean(r[name] for r in runs),
                      "std": statistics.pstdev(r[name] for r in runs)} for name in runs[0] if name not in RUN_BOOKKEEPING}
    baselines = {"tfidf_linear": tfidf_linear_baseline(task, train, report)}
    if task.is_regression:
        baselines["tfidf_cosine"] = tfidf_cosine_baseline(task, train, report)
    else:
        baselines["majority"] = majority_baseline(task, train, report)
    for split, examples in splits.extra.items():  # the baselines on every reported split, like the model
        for name, baseline in list(baselines.items()):
            fit = {"tfidf_linear": tfidf_linear_baseline, "tfidf_cosine": tfidf_cosine_baseline,
                   "majority": majority_baseline}[name]
            baseline.update({f"{split}_{metric}": value for metric, value in fit(task, train, examples).items()})
    return {"task": task.name, "mode": "finetune", "split": "validation", "model": str(model_path),
            "model_type": model_type, "headline_metric": task.metrics[0],
            "protocol": splits.protocol, "sizes": {"train": len(train), "selection": len(selection), "report": len(report),
                                                   **{split: len(part) for split, part in splits.extra.items()}},
            "settings": asdict(settings), "max_length": max_length, "seeds": seeds, "runs": runs, "summary": summary, "baselines": baselines}


def evaluate_tasks(model_path, tasks: list[Task], data_dir: Path | None, output_dir: Path, seeds: list[int],
                   settings: dict[str, FinetuneSettings], keep_models: bool = False, resume: bool = False) -> Path:
    """Fine-tune and report every task; writes results.json (atomically) and results.md; returns the json path.

    With `resume`, tasks already in the folder's results.json with the same seeds and settings are kept.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {"model": str(model_path), "mode": "finetune", "tasks": {}}
    previous = _previous_results(output_dir / "results.json") if resume else {}
    for task in tasks:
        done = previous.get(task.name)
        if done and done.get("seeds") == seeds and done.get("settings") == asdict(settings[task.name]):
            results["tasks"][task.name] = done  # finished before an interruption, with the same settings
            continue
        results["tasks"][task.name] = finetune_task(model_path, task, data_dir, output_dir / "work", seeds,
                                                    settings[task.name], output_dir / "models" if keep_models else None)
        write_results(output_dir, results)  # after every task: nothing finished is lost
    return output_dir / "results.json"


def zero_shot_tasks(model_path, tasks: list[Task], data_dir: Path | None, output_dir: Path,
                    pooling: str = "mean", split: str = "validation") -> Path:
    """Zero-shot STS on every task into results.json / results.md, in the fine-tuning results' schema."""
    from .zero_shot import check_task_files, load_encoder, zero_shot_task

    check_task_files(tasks, data_dir, split)  # every task and its files checked before the model is loaded
    output_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_encoder(model_path, pooling)
    results = {"model": str(model_path), "mode": "zero-shot", "tasks": {}}
    for task in tasks:
        results["tasks"][task.name] = zero_shot_task(model, tokenizer, task, data_dir, split)
        write_results(output_dir, results)
    return output_dir / "results.json"


def _previous_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("tasks", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_results(output_dir: Path, results: dict) -> None:
    write_json(output_dir / "results.json", results)
    write_atomic(output_dir / "results.md", format_results(results, markdown=True) + "\n")


__all__ = ["FinetuneSettings", "Splits", "evaluate_tasks", "finetune_task", "hash_split", "protocol_splits",
           "zero_shot_tasks"]
