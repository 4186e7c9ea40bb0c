"""Benchmark task registry: GLUE, SICK, PAWS and user files, as lists of {text_a, text_b, label} examples.

Each task names its Hub source and its files in the local data layout (`<folder>/<split>.tsv.gz`, read
with no quoting and a BOM-tolerant decoder, as GLUE's TSVs need). Splits are `train`, `validation` and
`test`; a split missing from the local folder is a clear error (PAWS has only `validation` here).

User tasks: `sts:PATH`, `pair:PATH`, `single:PATH` with a TSV, CSV or JSONL file; columns default to
`sentence1`, `sentence2`, `label` and are renamed with `columns={"text_a": ..., "text_b": ..., "label": ...}`.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("single", "pair", "sts")


from ..errors import TaskError


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # single | pair (classification) | sts (similarity regression)
    metrics: tuple[str, ...]  # the first is the selection and headline metric
    text_a: str
    text_b: str | None = None
    label: str = "label"
    label_names: tuple[str, ...] | None = None  # label strings in id order (None: integer or float labels)
    num_labels: int = 2  # 1 for sts
    label_range: tuple[float, float] | None = None  # sts score range
    folder: str = ""
    files: dict[str, str] = field(default_factory=dict)  # split -> file in the folder
    header: tuple[str, ...] | None = None  # column names of header-less files
    split_headers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a split's own header-less columns
    hub: tuple[str, str | None] | None = None  # (dataset path, config)
    hub_splits: dict[str, str] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.kind == "sts"


GLUE_SPLITS = {"train": "train.tsv.gz", "validation": "dev.tsv.gz"}
NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    "cola": Task("cola", "single", ("mcc", "accuracy"), "sentence", folder="cola", files=GLUE_SPLITS,
                 header=("source", "label", "label_orig", "sentence"), hub=("nyu-mll/glue", "cola")),
    "sst2": Task("sst2", "single", ("accuracy",), "sentence", folder="sst2", files=GLUE_SPLITS,
                 hub=("nyu-mll/glue", "sst2")),
    "mrpc": Task("mrpc", "pair", ("f1", "accuracy"), "#1 String", "#2 String", label="Quality", folder="mrpc",
                 files=GLUE_SPLITS, hub=("nyu-mll/glue", "mrpc")),
    "qqp": Task("qqp", "pair", ("f1", "accuracy"), "question1", "question2", folder="qqp", files=GLUE_SPLITS,
                hub=("nyu-mll/glue", "qqp")),
    # GLUE's STS-B test has no scores; the original STS Benchmark test file has them (HELDOUT_SPLIT)
    "stsb": Task("stsb", "sts", ("spearman", "pearson"), "sentence1", "sentence2", label="score", num_labels=1,
                 label_range=(0.0, 5.0), folder="stsb",
                 files={**GLUE_SPLITS, "test_labelled": "original/sts-test.tsv.gz"},
                 split_headers={"test_labelled": ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")},
                 hub=("nyu-mll/glue", "stsb")),
    "mnli": Task("mnli", "pair", ("accuracy",), "premise", "hypothesis",
                 label_names=("entailment", "neutral", "contradiction"), num_labels=3, folder="mnli",
                 files={"validation": "dev_matched.tsv.gz", "validation_mismatched": "dev_mismatched.tsv.gz",
                        "train": "train.tsv.gz"},
                 hub=("nyu-mll/glue", "mnli"), hub_splits={"validation": "validation_matched"}),
    "qnli": Task("qnli", "pair", ("accuracy",), "question", "sentence", label_names=NLI, folder="qnli",
                 files=GLUE_SPLITS, hub=("nyu-mll/glue", "qnli")),
    "rte": Task("rte", "pair", ("accuracy",), "sentence1", "sentence2", label_names=NLI, folder="rte",
                files=GLUE_SPLITS, hub=("nyu-mll/glue", "rte")),
    "wnli": Task("wnli", "pair", ("accuracy",), "sentence1", "sentence2", folder="wnli", files=GLUE_SPLITS,
                 hub=("nyu-mll/glue", "wnli")),
    "sick-r": Task("sick-r", "sts", ("spearman", "pearson"), "sentence_A", "sentence_B", label="relatedness_score",
                   num_labels=1, label_range=(1.0, 5.0), folder="sick",
                   files={"train": "train.tsv.gz", "validation": "validation.tsv.gz"}, hub=("RobZamp/sick", None)),
    "sick-e": Task("sick-e", "pair", ("accuracy",), "sentence_A", "sentence_B", label="entailment_label",
                   label_names=("ENTAILMENT", "NEUTRAL", "CONTRADICTION"), num_labels=3, folder="sick",
                   files={"train": "train.tsv.gz", "validation": "validation.tsv.gz"}, hub=("RobZamp/sick", None)),
    "paws": Task("paws", "pair", ("f1", "accuracy"), "sentence1", "sentence2", folder="paws_wiki",
                 files={"train": "train.tsv.gz", "validation": "dev.tsv.gz", "test": "test.tsv.gz"},
                 hub=("google-research-datasets/paws", "labeled_final")),
}
GROUPS = {
    "all": ("mrpc", "stsb", "qqp", "mnli"),
    "all-glue": ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"),
    "beyond": ("sick-r", "sick-e", "paws"),
    "zero-shot": ("stsb", "sick-r"),
}


def resolve_tasks(names: list[str]) -> list[str]:
    """Expand groups; unknown names are an error listing the valid ones."""
    out: list[str] = []
    for name in names:
        expanded = GROUPS.get(name, (name,))
        for task in expanded:
            if task not in TASKS and not _is_user_task(task):
                raise TaskError(f"unknown task {task!r}; tasks: {sorted(TASKS)}, groups: {sorted(GROUPS)}, "
                                "or sts:PATH / pair:PATH / single:PATH")
            if task not in out:
                out.append(task)
    return out


def _is_user_task(name: str) -> bool:
    return name.split(":", 1)[0] in KINDS and ":" in name


def user_task(spec: str, columns: dict[str, str] | None = None, num_labels: int | None = None) -> Task:
    """`sts:PATH` / `pair:PATH` / `single:PATH` as a task over one file (its only split: validation)."""
    kind, path = spec.split(":", 1)
    columns = columns or {}
    metrics = {"sts": ("spearman", "pearson"), "pair": ("accuracy", "f1"), "single": ("accuracy", "f1")}[kind]
    return Task(spec, kind, metrics, columns.get("text_a", "sentence1" if kind != "single" else "sentence"),
                None if kind == "single" else columns.get("text_b", "sentence2"), label=columns.get("label", "label"),
                num_labels=1 if kind == "sts" else (num_labels or 2), folder=str(Path(path).resolve().parent),
                files={"validation": Path(path).name})


def get_task(name: str, columns: dict[str, str] | None = None) -> Task:
    if _is_user_task(name):
        return user_task(name, columns)
    if name not in TASKS:
        resolve_tasks([name])  # raises the error listing the valid names
        raise TaskError(f"{name!r} is a group of tasks, not one task")
    return TASKS[name]


HELDOUT_SPLIT = "test_labelled"  # a labelled test file, where the data folder has one
HELDOUT_FRACTION = 0.2  # otherwise: this share of train, by hash, that nothing trains on or selects with


def has_heldout(task: Task) -> bool:
    """Similarity tasks with a training split report on a held-out split beside validation (dev)."""
    return task.is_regression and "train" in task.files


def heldout_split(task: Task, train: list[dict], data_dir: Path | None) -> tuple[list[dict], list[dict], str]:
    """(train without the held-out part, held-out examples, how they were chosen).

    Dev chose recipes (pilots are compared on it), so a result is restated on examples that chose
    nothing: the labelled test file when the local folder has it, else the train examples whose text hash
    is >= 1 - HELDOUT_FRACTION. Selection splits take hashes < their fraction, so the two never meet.
    """
    if data_dir is not None and HELDOUT_SPLIT in task.files and local_path(task, HELDOUT_SPLIT, data_dir).exists():
        return train, load_split(task, HELDOUT_SPLIT, data_dir), f"held-out: the labelled test set ({task.files[HELDOUT_SPLIT]})"
    held = [pair_hash(e) >= 1 - HELDOUT_FRACTION for e in train]
    rest = [e for e, h in zip(train, held) if not h]
    return rest, [e for e, h in zip(train, held) if h], (
        f"held-out: a hashed {HELDOUT_FRACTION:.0%} of train, never trained on nor used for selection")


def pair_hash(example: dict) -> float:
    """A stable number in [0, 1) for an example's texts (hash splits)."""
    from .blocks import document_hash

    return document_hash(f"{example['text_a']}\x00{example['text_b']}")


def load_split(task: Task, split: str, data_dir: Path | None) -> list[dict]:
    """Examples {text_a, text_b, label} of one split, from the local folder (when set) or the Hub."""
    if data_dir is not None or Path(task.folder).is_absolute():
        rows, source = _read_local(task, split, data_dir)
    else:
        rows, source = _read_hub(task, split)
    examples = [_example(task, row, source, number) for number, row in enumerate(rows, 2)]
    if not examples:
        raise TaskError(f"{task.name} {split}: {source} has no examples")
    return examples


def local_path(task: Task, split: str, data_dir: Path | None) -> Path:
    """The file of a split in the local layout (the uncompressed name when only that exists)."""
    folder = Path(task.folder) if Path(task.folder).is_absolute() else Path(data_dir or ".") / task.folder
    path = folder / task.files[split]
    if not path.exists() and path.suffix == ".gz" and path.with_suffix("").exists():
        path = path.with_suffix("")
    return path


def _read_local(task: Task, split: str, data_dir: Path | None) -> tuple[list[dict], str]:
    if split not in task.files:
        raise TaskError(f"{task.name}: no {split!r} split (splits: {sorted(task.files)})")
    path = local_path(task, split, data_dir)
    if not path.exists():
        raise TaskError(f"{task.name} {split}: {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    name = path.name.removesuffix(".gz")
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        if name.endswith(".jsonl"):
            return _jsonl_rows(handle, path), str(path)
        delimiter = "," if name.endswith(".csv") else "\t"
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        header = task.split_headers.get(split, task.header)
        reader = csv.DictReader(handle, fieldnames=header, delimiter=delimiter, quoting=quoting)
        rows = []
        try:
            for row in reader:
                rows.append(row)
        except UnicodeDecodeError as error:
            raise TaskError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({error.reason} at byte "
                            f"{error.start} of the decoded chunk)") from None
        except csv.Error as error:
            raise TaskError(f"{path}, line {reader.line_num}: {error}") from None
        return rows, str(path)


def _jsonl_rows(handle, path: Path) -> list[dict]:
    """One JSON object per line; a line that is not one is an error naming the file and the line."""
    rows, number = [], 0
    try:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}, line {number}: not a JSON object ({error.msg}, column {error.colno})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object")
            rows.append(row)
    except UnicodeDecodeError as error:
        raise TaskError(f"{path}, line {number + 1}: not UTF-8 text ({error.reason})") from None
    return rows


def _read_hub(task: Task, split: str) -> tuple[list[dict], str]:
    import datasets

    if task.hub is None:
        raise TaskError(f"{task.name}: no Hub source; set --data-dir / CONCEPT_ENCODER_DATA")
    path, config = task.hub
    try:
        table = datasets.load_dataset(path, config, split=task.hub_splits.get(split, split))
    except Exception as error:  # network, unknown split: one clear line
        raise TaskError(f"{task.name} {split}: cannot load {path} from the Hub ({type(error).__name__}: {error}); "
                        "offline? set --data-dir / CONCEPT_ENCODER_DATA") from None
    return list(table), f"{path}/{config or ''}:{split}"


def _example(task: Task, row: dict, source: str, number: int) -> dict:
    for column in (task.text_a, task.text_b, task.label):
        if column is not None and column not in row:
            raise TaskError(f"{source}: no column {column!r} (columns: {sorted(k for k in row if k)})")
    raw = row[task.label]
    if task.is_regression:
        try:
            label = float(raw)
        except (TypeError, ValueError):
            raise TaskError(f"{source}, row {number}: {task.label}={raw!r} is not a number") from None
        if not math.isfinite(label):  # float() reads "nan" and "inf": a Spearman of nan would follow
            raise TaskError(f"{source}, row {number}: {task.label}={raw!r} is not a finite number")
        if task.label_range and not task.label_range[0] <= label <= task.label_range[1]:
            raise TaskError(f"{source}, row {number}: {task.label}={label} is outside {task.label_range}")
    elif task.label_names is not None and not isinstance(raw, int):
        if raw not in task.label_names:
            raise TaskError(f"{source}, row {number}: label {raw!r} is not one of {task.label_names}")
        label = task.label_names.index(raw)
    else:
        try:
            label = int(raw)
        except (TypeError, ValueError):
            raise TaskError(f"{source}, row {number}: label {raw!r} is not an integer class") from None
        if not 0 <= label < task.num_labels:
            raise TaskError(f"{source}, row {number}: label {label} is outside 0..{task.num_labels - 1}")
    return {"text_a": row[task.text_a], "text_b": row[task.text_b] if task.text_b else None, "label": label}
