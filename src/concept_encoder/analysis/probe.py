"""Probe sets and one pass of a concept encoder over them: concepts and attention usage for diagnostics."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from ..data.blocks import document_hash
from ..data.corpus import CorpusError, load_corpus, stream_corpus
from ..reporting import progress
from .diagnostics import attention_usage, concept_diagnostics, summarise_usage


class ProbeError(CorpusError):
    """A probe set that cannot be read or is empty."""


def read_probe_file(path: str | Path) -> list[str]:
    """One text per non-empty line (plain or .gz)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            texts = [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        raise ProbeError(f"probe file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ProbeError(f"probe file {path}: unreadable ({error})") from None
    if not texts:
        raise ProbeError(f"probe file {path}: empty (no non-blank lines)")
    return texts


def validation_documents(data_config, data_dir: Path | None, count: int) -> list[str]:
    """The first `count` documents of the run's held-out validation side (the same hash split as training)."""
    def held_out(text: str) -> bool:
        return document_hash(text) < data_config.validation_fraction

    if data_config.streaming:
        documents = stream_corpus(data_config.corpus, data_dir, data_config.text_field)
    else:
        documents = load_corpus(data_config.corpus, data_dir, data_config.text_field, data_config.max_documents)
    texts = []
    for row in documents:
        if held_out(row["text"]):
            texts.append(row["text"])
            if len(texts) == count:
                break
    if len(texts) < 2:
        raise ProbeError(f"corpus {data_config.corpus}: fewer than 2 validation documents for the probe set")
    return texts


@torch.no_grad()
def probe_batches(model, batches) -> dict:
    """Run the encoder (`ConceptEncoderModel`) over (input_ids, attention_mask) batches.

    Returns {"diagnostics": {...}, "concepts": [S, C, H] tensor, "entropy_by_step": [mean entropy per step]}.
    """
    was_training = model.training
    model.eval()
    concepts, entropy, tokens_read, real, by_step = [], [], [], [], []
    device = next(model.parameters()).device
    for input_ids, attention_mask in batches:
        out = model(input_ids.to(device), attention_mask=attention_mask.to(device), output_attentions=True)
        concepts.append(out.last_hidden_state.float().cpu())
        usage = [attention_usage(step_map.cpu(), attention_mask) for step_map in out.cross_attentions]
        entropy.append(usage[-1]["entropy"])
        tokens_read.append(usage[-1]["tokens_read"])
        real.append(usage[-1]["real_tokens"])
        by_step.append(torch.stack([u["entropy"].mean(-1) for u in usage], dim=-1))  # [B, steps]
    model.train(was_training)
    stacked = torch.cat(concepts)
    if stacked.shape[0] < 2:
        raise ProbeError(f"the probe set has {stacked.shape[0]} text(s); diagnostics need at least 2")
    diagnostics = concept_diagnostics(stacked)
    diagnostics.update(summarise_usage(torch.cat(entropy), torch.cat(tokens_read), torch.cat(real)))
    return {"diagnostics": diagnostics, "concepts": stacked, "entropy_by_step": torch.cat(by_step).mean(0).tolist()}


def probe(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> dict:
    """`probe_batches` over texts, each truncated to `max_length` tokens."""
    if len(texts) < 2:
        raise ProbeError(f"the probe set has {len(texts)} text(s); diagnostics need at least 2")

    def batches():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            yield batch["input_ids"], batch["attention_mask"]

    return probe_batches(model, progress(batches(), "probe", total=-(-len(texts) // batch_size)))
