"""`concept-encoder analyze`: diagnostics of a trained encoder on a probe set, gate verdicts, plots, analysis.json."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from ..config import TASKLESS_OBJECTIVES, AnalysisConfig, ConfigError, ExperimentConfig, load_experiment
from ..modeling import ConceptEncoderForMaskedLM
from ..objectives import build_collator
from ..rundir import ANALYSIS_DIR, EXPERIMENT_FILE, locate, write_json
from . import plots
from .ablation import collated_batches, concept_ablation
from .probe import ProbeError, probe, read_probe_file, validation_documents


def load_concept_encoder(model_dir: Path, with_decoder: bool = False):
    """The encoder alone (`ConceptEncoderModel`), or with its decoder (`ConceptEncoderForMaskedLM`), and the
    tokenizer beside it."""
    from ..evaluation.zero_shot import model_tokenizer

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "concept_encoder":
        raise ConfigError(f"{model_dir}: model_type {config.model_type!r} is not a concept encoder")
    model_class = ConceptEncoderForMaskedLM if with_decoder else AutoModel
    try:
        model = model_class.from_pretrained(model_dir).eval()
    except Exception as error:  # a truncated or foreign weights file: one line naming the folder
        raise ConfigError(f"{model_dir}: its weights do not load ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return model, model_tokenizer(model_dir)


def ablate(model: ConceptEncoderForMaskedLM, tokenizer, texts: list[str], objective, max_length: int,
           batch_size: int, floor_steps: int = 0) -> dict:
    """The concept ablation (`ablation.py`) on the probe texts, noised by the objective's evaluation collator,
    with the no-concept floor fitted in `floor_steps` steps."""
    collator = build_collator(objective, tokenizer, objective.eval_seed, model.config)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    if objective.name == "prefix_suffix":  # texts too short to split have no suffix to decode
        ids = [row for row in ids if collator.splittable(len(row))]
    return concept_ablation(model, collated_batches(collator, [{"input_ids": row, "index": i} for i, row in
                                                               enumerate(ids)], batch_size), floor_steps)


@torch.no_grad()
def attention_picture(encoder, tokenizer, texts: list[str], path: Path, count: int = 3, max_tokens: int = 48) -> Path:
    """The cross-attention heatmap of the first `count` probe texts (their first `max_tokens` tokens)."""
    maps, words = [], []
    for text in texts[:count]:
        batch = tokenizer([text], truncation=True, max_length=min(max_tokens, encoder.config.max_position_embeddings),
                          return_tensors="pt")
        out = encoder(batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
        maps.append(out.cross_attentions[-1][0].mean(0))  # [C, N], mean over heads
        words.append(tokenizer.convert_ids_to_tokens(batch["input_ids"][0]))
    return plots.concept_attention(maps, words, path)


def analyze(path: str | Path, settings: AnalysisConfig | None = None, data_dir: Path | None = None,
            output_dir: Path | None = None, experiment: ExperimentConfig | None = None) -> dict:
    """Probe the model, write analysis.json and the PNG plots; returns the analysis record.

    `experiment`: the run's parsed config, when the caller holds it (the pipeline); else the run folder's
    experiment.yaml is read."""
    run_dir, model_dir = locate(path)
    if experiment is None and run_dir is not None:
        experiment = load_experiment(run_dir / EXPERIMENT_FILE)
    settings = settings or (experiment.analysis if experiment else AnalysisConfig())
    if settings.probe_file:
        texts, source = read_probe_file(settings.probe_file), f"file {settings.probe_file}"
    elif experiment is not None:
        texts = validation_documents(experiment.data, data_dir, settings.probe_documents)
        source = f"first {len(texts)} held-out validation documents of {experiment.data.corpus}"
    else:
        raise ProbeError(f"{model_dir}: not inside a run folder, so there is no corpus to probe; give a probe file")
    decodes = experiment is not None and experiment.objective.name not in TASKLESS_OBJECTIVES
    loaded, tokenizer = load_concept_encoder(model_dir, with_decoder=decodes)  # one load for probe and ablation
    model = loaded.encoder if decodes else loaded
    max_length = settings.probe_max_length or (experiment.data.block_size if experiment else 128)
    max_length = min(max_length, model.config.max_position_embeddings)
    result = probe(model, tokenizer, texts, max_length, settings.batch_size)
    if decodes:
        result["diagnostics"].update(ablate(loaded, tokenizer, texts, experiment.objective, max_length,
                                            settings.batch_size, settings.floor_steps))

    output_dir = output_dir or (run_dir or model_dir) / ANALYSIS_DIR
    record = {
        "model": str(model_dir),
        "probe": {"source": source, "texts": len(texts), "max_length": max_length},
        "diagnostics": result["diagnostics"],
        "attention_entropy_by_step": result["entropy_by_step"],
        "plots": {  # file names inside the analysis folder (the folder may move)
            "similarity": plots.similarity_heatmap(result["concepts"], output_dir / "similarity.png").name,
            "spectrum": plots.singular_value_spectrum(result["concepts"], output_dir / "spectrum.png").name,
            "concept_attention": attention_picture(model, tokenizer, texts, output_dir / "concept_attention.png").name,
        },
    }
    write_json(output_dir / "analysis.json", record)
    return {**record, "output_dir": str(output_dir)}
