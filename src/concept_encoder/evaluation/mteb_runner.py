"""MTEB through the real `mteb` package, online or on the local data folder.

The task classes are mteb's own (`STSBenchmark`, `SICK-R`) or mteb task classes over GLUE files
(`GlueSST2`: classification, `GlueMRPC`: pair classification). With a data folder set, each task's dataset is
filled from the local files (the same loader as `evaluate`) and mteb's `load_data` is skipped; without one, mteb
loads the Hub dataset its metadata names. Either way mteb's own evaluator scores the vectors.

Local splits are what the data folder holds: STS-B's GLUE dev file (the STS Benchmark dev split) and SICK's
SemEval trial split, both as `validation`; their labelled test splits are not in the folder. mteb's published
numbers are on `test`, so a local number is not one of them: it is the same code on another split, and it
equals `zero-shot` on the same file (the test pins this on all-MiniLM-L6-v2).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..data.tasks import TaskError, get_task, load_split
from ..inference.encoder import EncoderError
from ..reporting import bars_shown
from ..rundir import write_atomic

# mteb name -> (our task, the split of the local data folder it runs on)
LOCAL_TASKS = {"STSBenchmark": ("stsb", "validation"), "SICK-R": ("sick-r", "validation"),
               "GlueSST2": ("sst2", "validation"), "GlueMRPC": ("mrpc", "validation")}
CLASSIFICATION_SAMPLES_PER_LABEL = 256  # mteb's default of 8 makes SST-2 a 16-example few-shot task


def _glue_task_classes():
    """mteb task classes over GLUE files (built on first use: importing mteb takes seconds)."""
    from mteb.abstasks import AbsTaskClassification, AbsTaskPairClassification
    from mteb.abstasks.task_metadata import TaskMetadata

    common = {"eval_langs": ["eng-Latn"], "eval_splits": ["validation"], "modalities": ["text"], "domains": ["Written"]}

    class GlueSST2(AbsTaskClassification):
        metadata = TaskMetadata(
            name="GlueSST2", type="Classification", main_score="accuracy",
            description="GLUE SST-2 sentiment: logistic regression on the embeddings (train -> validation).",
            dataset={"path": "nyu-mll/glue", "name": "sst2", "revision": "main"}, **common)
        samples_per_label = CLASSIFICATION_SAMPLES_PER_LABEL

        def dataset_transform(self, **kwargs):
            self.dataset = self.dataset.rename_column("sentence", "text")

    class GlueMRPC(AbsTaskPairClassification):
        metadata = TaskMetadata(
            name="GlueMRPC", type="PairClassification", main_score="max_ap",
            description="GLUE MRPC paraphrase: similarity threshold on the two sentences' embeddings.",
            dataset={"path": "nyu-mll/glue", "name": "mrpc", "revision": "main"}, **common)

        def dataset_transform(self, **kwargs):
            self.dataset = self.dataset.rename_column("label", "labels")

    return {"GlueSST2": GlueSST2, "GlueMRPC": GlueMRPC}


def mteb_task(name: str, data_dir: Path | None, max_examples: int | None = None):
    """An mteb task object; with `data_dir`, its dataset already filled from the local files (the first
    `max_examples` rows of each split, for quick runs)."""
    import mteb

    glue = _glue_task_classes()
    if name in glue:
        task = glue[name]()
    else:
        try:
            task = mteb.get_task(name)
        except (KeyError, ValueError) as error:  # mteb's own message suggests close names
            raise TaskError(f"mteb task {name!r}: {error}") from None
    if data_dir is None:
        return task
    if name not in LOCAL_TASKS:
        raise TaskError(f"mteb task {name!r} has no local data; local tasks: {sorted(LOCAL_TASKS)} "
                        "(unset the data folder to load it from the Hub)")
    ours, split = LOCAL_TASKS[name]
    task.filter_eval_splits([split])
    task.dataset = _local_dataset(task, get_task(ours), split, data_dir)
    if max_examples:
        for key, rows in task.dataset.items():
            task.dataset[key] = rows.select(range(min(max_examples, len(rows))))
    task.data_loaded = True
    return task


def _local_dataset(task, ours, split: str, data_dir: Path):
    from datasets import Dataset, DatasetDict

    def rows(which: str) -> dict[str, list]:
        examples = load_split(ours, which, data_dir)
        if task.metadata.type == "STS":
            return {"sentence1": [e["text_a"] for e in examples], "sentence2": [e["text_b"] for e in examples],
                    "score": [float(e["label"]) for e in examples]}
        if task.metadata.type == "PairClassification":
            return {"sentence1": [e["text_a"] for e in examples], "sentence2": [e["text_b"] for e in examples],
                    "labels": [int(e["label"]) for e in examples]}
        return {"text": [e["text_a"] for e in examples], "label": [int(e["label"]) for e in examples]}

    splits = {split: Dataset.from_dict(rows(split))}
    if task.metadata.type == "Classification":
        splits["train"] = Dataset.from_dict(rows("train"))
    return DatasetDict(splits)


def mteb_model(model_path: str | Path, pooling: str = "mean", trust_remote_code: bool = False):
    """A concept encoder as the exported sentence-transformers model; any other encoder loads as itself.

    This package's own export (`is_own_export`) is built from the installed classes and runs none of its folder's
    code; any other saved sentence-transformers folder runs code outside sentence-transformers only if the user
    passed `trust_remote_code`."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    from ..inference.encoder import model_source
    from ..inference.sentence_transformers import is_own_export, load_own_export, sentence_transformer

    source = model_source(model_path)
    if (Path(source) / "modules.json").exists():  # an `export` folder (or any saved sentence-transformers model)
        own = is_own_export(source)
        try:
            if own:
                return load_own_export(source)
            return SentenceTransformer(source, device="cpu", trust_remote_code=trust_remote_code, local_files_only=True)
        except (ImportError, OSError, ValueError) as error:
            hint = "" if own or trust_remote_code else (
                " It names code outside sentence-transformers and has not the layout of this package's export: "
                "pass --trust-remote-code only if you trust that code.")
            raise EncoderError(f"{model_path}: not loadable as a sentence-transformers model "
                               f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).{hint}"
                               ) from None
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError):
        model_type = None  # an exported sentence-transformers folder, or a Hub name offline
    if model_type == "concept_encoder":
        return sentence_transformer(model_path, pooling)
    try:
        return SentenceTransformer(source, device="cpu")
    except (OSError, ValueError) as error:
        raise EncoderError(f"{model_path}: not loadable as a sentence-transformers model ({error})") from None


def run_mteb(model_path: str | Path, task_names: list[str], data_dir: Path | None, output: Path | None = None,
             pooling: str = "mean", batch_size: int = 64, max_examples: int | None = None,
             trust_remote_code: bool = False) -> dict:
    """Evaluate through `mteb.evaluate`; results.json (and mteb's own result per task) under `output`."""
    import mteb

    if max_examples and data_dir is None:
        raise TaskError("--max-examples slices the local files; it needs a data folder")
    tasks = [mteb_task(name, data_dir, max_examples) for name in task_names]  # bad names fail before the model loads
    model = mteb_model(model_path, pooling, trust_remote_code)
    start = time.perf_counter()
    result = mteb.evaluate(model, tasks, cache=None, encode_kwargs={"batch_size": batch_size},
                           show_progress_bar=bars_shown())
    seconds = time.perf_counter() - start
    if result.exceptions:
        raise TaskError(f"mteb failed: {result.exceptions}")
    summary = {"model": str(model_path), "mode": "mteb", "pooling": pooling, "seconds": round(seconds, 2),
               "data": "local" if data_dir else "hub", "max_examples": max_examples, "mteb_version": mteb.__version__, "tasks": {}}
    for task_result in result.task_results:
        # the main score averaged over every split and subset mteb ran (locally: one split, one subset); the
        # other scores of the first of them
        first = next(iter(task_result.scores.values()))[0]
        summary["tasks"][task_result.task_name] = {
            "split": ",".join(task_result.scores), "main_score_name": _main_score_name(task_result.task_name, tasks),
            "main_score": task_result.get_score(),
            "scores": {k: v for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        if output is not None:
            write_atomic(output / "mteb" / f"{task_result.task_name}.json",
                         json.dumps(task_result.model_dump(mode="json"), indent=2, default=str))
    if output is not None:
        write_atomic(output / "results.json", json.dumps(summary, indent=2))
    return summary


def _main_score_name(name: str, tasks) -> str:
    return next(t.metadata.main_score for t in tasks if t.metadata.name == name)

