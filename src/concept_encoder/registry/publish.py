"""`concept-encoder publish RUN --repo-id ID [--format F] [--dry-run]`: a Hub folder that loads without this
package.

`--format transformers` (default): the weights (safetensors), the tokenizer, the modelling code
(`trust_remote_code`: the config's `auto_map` points at it) and a model card whose numbers come from the run's
files: pretraining, concept diagnostics, benchmarks beside their baselines, gates.
`--format sentence-transformers`: the `export` folder (module code inside) with the card of `export_card`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..rundir import EXPERIMENT_FILE, MODEL_DIR, locate, write_atomic, write_json
from .collect import read_run, run_metrics
from .report import verdicts_for
from .store import RegistryError

MARKER = ".concept-encoder-publish"
AUTO_MAP = {
    "AutoConfig": "configuration.ConceptEncoderConfig",
    "AutoModel": "modeling_concept_encoder.ConceptEncoderModel",
    "AutoModelForMaskedLM": "modeling_concept_encoder.ConceptEncoderForMaskedLM",
    "AutoModelForSequenceClassification": "heads.ConceptEncoderForSequenceClassification",
}


FORMATS = ("transformers", "sentence-transformers")


def prepare_folder(run_dir: str | Path, repo_id: str, folder: Path, format: str = "transformers",
                   pooling: str = "mean") -> Path:
    """Fill `folder` (replaced if present) with everything the Hub repository needs; returns it."""
    if format not in FORMATS:
        raise RegistryError(f"publish format must be one of {FORMATS}, got {format!r}")
    run_dir = Path(run_dir)
    model_dir = run_dir / MODEL_DIR
    if not (run_dir / EXPERIMENT_FILE).exists() or not (model_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"{run_dir}: no finished model to publish (model/model.safetensors missing)")
    folder = folder.resolve()
    if folder == run_dir.resolve() or folder in run_dir.resolve().parents:
        raise RegistryError(f"--folder {folder}: is the run folder or holds it; it would be replaced")
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise RegistryError(f"--folder {folder}: exists and was not made by publish; choose an empty or new folder")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if format == "sentence-transformers":
        from ..inference.sentence_transformers import export

        export(run_dir, staging, pooling=pooling, card=export_card(run_dir, pooling, repo_id))
    else:
        _fill_transformers_folder(run_dir, repo_id, staging)
    (staging / MARKER).write_text(f"{run_dir.resolve()}\n", encoding="utf-8")  # lets a rerun replace it
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)  # the folder appears whole or not at all
    return folder


def _fill_transformers_folder(run_dir: Path, repo_id: str, staging: Path) -> None:
    from ..inference.sentence_transformers import copy_modelling_code  # loads sentence-transformers: on use only

    model_dir = run_dir / MODEL_DIR
    staging.mkdir(parents=True)
    for item in model_dir.iterdir():  # weights, config, tokenizer files saved with the model
        if item.is_file() and item.suffix in (".safetensors", ".json", ".txt", ".model"):
            shutil.copy2(item, staging / item.name)
    copy_modelling_code(staging)
    config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = AUTO_MAP
    write_json(staging / "config.json", config)
    write_atomic(staging / "README.md", model_card(run_dir, repo_id))


def model_card(run_dir: Path, repo_id: str) -> str:
    metrics = run_metrics(run_dir)
    lines = ["---", "library_name: transformers", "tags: [concept-encoder, sentence-embeddings]", "---", "",
             f"# {repo_id}", "",
             (f"A concept encoder (C learned concepts cross-attending to the tokens) from run `{run_dir.name}`, "
              "trained and evaluated with the `concept-encoder` framework. Load it with plain transformers:"),
             "", "```python", "from transformers import AutoModel, AutoTokenizer",
             f"model = AutoModel.from_pretrained('{repo_id}', trust_remote_code=True)",
             # transformers 5 reads config.json (auto_map) for the tokenizer too: without the flag a terminal asks
             f"tokenizer = AutoTokenizer.from_pretrained('{repo_id}', trust_remote_code=True)",
             "concepts = model(**tokenizer('a sentence', return_tensors='pt')).last_hidden_state  # [1, C, H]",
             "```", ""]
    for stage, title in (("pretrain", "Pretraining"), ("analysis", "Concept diagnostics"),
                         ("finetune", "Fine-tuned benchmarks (validation, mean ± std over seeds)"),
                         ("zero_shot", "Zero-shot STS (validation)"), ("baseline", "Baselines on the same splits")):
        if metrics.get(stage):
            lines += [f"## {title}", "", "| metric | value |", "|---|---|"]
            for key, (value, std) in sorted(metrics[stage].items()):
                lines.append(f"| {key} | {value:.4g}{'' if not std else f' ± {std:.2g}'} |")
            lines.append("")
    verdicts = verdicts_for(run_dir)
    if verdicts:
        lines += ["## Decision gates", "", "| gate | verdict | next step |", "|---|---|---|"]
        lines += [f"| {v.gate.name} | {v.verdict} | {v.next} |" for v in verdicts] + [""]
    return "\n".join(lines)


def export_card(source: str | Path, pooling: str, name: str | None = None) -> str:
    """The model card of a sentence-transformers export: how to load it, the source run, the pooling, and the
    run's measured zero-shot scores (x 100, beside the TF-IDF cosine on the same split) where it has them."""
    run_dir = locate(source)[0] if Path(source).is_dir() else None  # a run's model/ folder names its run too
    source = run_dir or Path(source)
    name = name or f"concept encoder `{source.name}`"
    lines = ["---", "library_name: sentence-transformers",
             "tags: [concept-encoder, sentence-transformers, sentence-similarity]", "pipeline_tag: sentence-similarity",
             "---", "", f"# {name}", "",
             (f"A concept encoder (C learned concepts cross-attending to the tokens), exported by `concept-encoder "
              f"export` from run `{source.name}`, with **{pooling}** pooling of its concepts into one vector, "
              "L2-normalised. The folder carries its module code, so the `concept-encoder` package need not be "
              "installed:"),
             "", "```python", "from sentence_transformers import SentenceTransformer",
             f"model = SentenceTransformer('{name if '/' in name else 'PATH'}', trust_remote_code=True)",
             "vectors = model.encode(['A man is playing a guitar.', 'Someone plays an instrument.'])",
             "print(model.similarity(vectors[:1], vectors[1:]))", "```", ""]
    zero_shot = read_run(run_dir).zero_shot if run_dir else None
    if not zero_shot:
        return "\n".join(lines + ["No zero-shot scores were measured for this model "
                                  "(`concept-encoder zero-shot` measures them).", ""])
    lines += ["## Zero-shot similarity (Spearman x 100, cosine of pooled vectors, no training)", "",
              "| task | split | pooling | this model | TF-IDF cosine |", "|---|---|---|--:|--:|"]
    for task, result in zero_shot.get("tasks", {}).items():
        summary, tfidf = result["summary"], result["baselines"].get("tfidf_cosine", {})
        for prefix, split in (("", result.get("split", "validation")), ("heldout_", "held-out part of train")):
            if f"{prefix}spearman" in summary:
                baseline = tfidf.get(f"{prefix}spearman")
                lines.append(f"| {task} | {split} | {result.get('pooling', 'mean')} | "
                             f"{100 * summary[f'{prefix}spearman']['mean']:.1f} | "
                             f"{'–' if baseline is None else f'{100 * baseline:.1f}'} |")
    measured = {result.get("pooling", "mean") for result in zero_shot.get("tasks", {}).values()}
    if pooling not in measured:
        lines += ["", f"These scores were measured with {', '.join(sorted(measured))} pooling; this export uses "
                      f"{pooling}."]
    return "\n".join(lines + [""])


def push(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the repository if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        return str(api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="concept-encoder publish",
                                     ignore_patterns=[MARKER]))
    except Exception as error:  # noqa: BLE001  (offline, no token, no rights, network: all one message)
        raise RegistryError(f"push to {repo_id} failed ({type(error).__name__}: {error}); "
                            f"the prepared folder {folder} is kept") from None
