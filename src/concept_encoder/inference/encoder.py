"""Loading an encoder and turning texts into vectors: the one path the zero-shot evaluation, the corpus
encoder (`encode`), the sentence-transformers export and the MTEB runner all share.

Works for concept encoders and for any Hugging Face encoder (masked mean over tokens). Concept-encoder pooling:
- `mean`: the mean of the C concepts;
- `weighted`: the learned weighted concept pooling of a fine-tuned checkpoint (from
  `evaluate --keep-models`, weighted or pair heads): z = LN(sum_k softmax_k(w·c_k + b) c_k);
- `decoder`: the pretrained decoder (loaded from the checkpoint) decodes every real position from the
  concepts with position-only queries (no token bypass); the masked mean of its states.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from ..data.tasks import TaskError
from ..data.tokenizer import model_source, special_tokens_around
from ..modeling import ConceptEncoderForSentencePairClassification
from ..modeling.heads import POOLINGS
from ..reporting import progress
from ..rundir import tokenizer_folder
from .static import StaticEncoder, is_static_folder


class EncoderError(TaskError):
    """A model path that is neither a concept encoder nor a loadable HF encoder."""


def model_tokenizer(source: str | Path):
    """The tokenizer of a model folder, run folder or Hub name (`rundir.tokenizer_folder` says where it is)."""
    return AutoTokenizer.from_pretrained(tokenizer_folder(source))


def check_loadable(path: str | Path) -> None:
    """One line (EncoderError) unless `path` is a model folder, run folder or Hub name whose config loads; cheap:
    the weights are not read."""
    source = model_source(path)
    if is_static_folder(source):
        return
    try:
        AutoConfig.from_pretrained(source)
    except Exception as error:  # not a model folder, an offline Hub name, a broken config.json
        raise EncoderError(f"{path}: not a model folder, run folder or reachable Hub model "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def load_encoder(path: str | Path, pooling: str = "mean"):
    """(model, tokenizer) for a concept-encoder checkpoint or any HF encoder folder / Hub name."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    source = model_source(path)
    if is_static_folder(source):  # a model2vec student: no tokenizer or torch module of ours
        if pooling != "mean":
            raise EncoderError(f"{path}: a static (model2vec) model has mean pooling only, got --pooling {pooling}")
        return StaticEncoder(source), None
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


def max_tokens(model, max_length: int | None = None) -> int:
    """The truncation length: the caller's, else the model's position table (rotary models have no limit of
    their own; they keep the configured size as the default)."""
    return max_length or getattr(model.config, "max_position_embeddings", 512)


def pool(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One batch's pooled vectors [B, H], not normalised (pooling chosen by `load_encoder`)."""
    mode = getattr(model, "pooling_mode", "mean")
    if mode == "decoder":
        return model(input_ids=input_ids, attention_mask=attention_mask).pooled  # decoded positions, masked mean
    if mode == "weighted":
        return model.embed(input_ids, attention_mask)  # learned softmax weighting of the concepts
    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if getattr(model, "is_concept_encoder", False):
        return hidden.mean(dim=1)  # [B, C, H] -> [B, H]
    mask = attention_mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # masked mean over tokens


def concept_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One batch's concepts [B, C, H] (a concept encoder's; every pooling mode keeps its encoder in
    `base_model`)."""
    if not getattr(model, "is_concept_encoder", False):
        raise EncoderError(f"{model.name_or_path}: not a concept encoder, so it has no concepts to write")
    return model.base_model(input_ids, attention_mask=attention_mask).last_hidden_state


def length_sorted_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Row indices in batches of texts of similar length, so a batch pads little; callers put results back by
    these indices (every path here is padding-invariant, so the vectors do not depend on the grouping)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def encode(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int | None = None,
           normalize: bool = True) -> torch.Tensor:
    """Pooled vectors [len(texts), H] in the order of `texts`, L2-normalised unless `normalize=False`."""
    if isinstance(model, StaticEncoder):  # reads the whole text: a static model has no length limit
        return model.encode(texts, normalize=normalize)
    pooled = lambda batch: pool(model, batch["input_ids"], batch["attention_mask"]).float()
    return _in_order(model, tokenizer, texts, batch_size, max_length, pooled, normalize, "encode")


def _in_order(model, tokenizer, texts: list[str], batch_size: int, max_length: int | None, compute,
              normalize: bool, desc: str) -> torch.Tensor:
    """`compute(batch)` over length-sorted batches of `texts`, put back in the order of `texts` [len(texts), ...],
    L2-normalised along the last dimension unless `normalize=False`."""
    vectors: torch.Tensor | None = None
    for rows in progress(length_sorted_batches(texts, batch_size), desc):
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                          max_length=max_tokens(model, max_length), return_tensors="pt")
        out = compute(batch)
        if vectors is None:
            vectors = out.new_empty(len(texts), *out.shape[1:])
        vectors[rows] = F.normalize(out, dim=-1) if normalize else out
    return vectors


@torch.no_grad()
def encode_concepts(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int | None = None,
                    normalize: bool = True) -> torch.Tensor:
    """Concepts [len(texts), C, H] in the order of `texts`, each concept L2-normalised unless `normalize=False`
    (what `inference.scoring.late_interaction` compares)."""
    states = lambda batch: concept_states(model, batch["input_ids"], batch["attention_mask"]).float()
    return _in_order(model, tokenizer, texts, batch_size, max_length, states, normalize, "encode concepts")


@torch.no_grad()
def encode_chunked(model, tokenizer, texts: list[str], chunk_tokens: int = 256, batch_size: int = 64,
                   normalize: bool = True) -> torch.Tensor:
    """Chunk-and-average, how a short-context encoder reads a long text: each text's tokens cut into consecutive
    chunks of `chunk_tokens` (special tokens included), each chunk pooled and L2-normalised as `encode` does,
    the text's vector the mean of its chunks' weighted by the text tokens each holds [len(texts), H]
    (L2-normalised unless `normalize=False`). Weighting keeps a short tail chunk from counting as much as a full
    one: with equal weights, 256-token halves read in 254-token chunks scored 78.0 on `article_halves` at
    N = 512 against 96.0 for the same model truncated at 256 (one chunk of 254 tokens and one of 2)."""
    head, tail = special_tokens_around(tokenizer)
    room = chunk_tokens - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens} leaves no room beside the tokenizer's special tokens")
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # long on purpose: no warning
    chunks, owner, weight = [], [], []  # every chunk's ids with special tokens, its text, its text tokens
    for row, text_ids in enumerate(ids):
        for start in range(0, max(len(text_ids), 1), room):
            piece = text_ids[start : start + room]
            chunks.append(head + piece + tail)
            owner.append(row)
            weight.append(max(len(piece), 1))  # an empty text still gets its one (special-tokens-only) chunk
    vectors: torch.Tensor | None = None
    for rows in progress(length_sorted_batches(chunks, batch_size), "encode chunks"):
        batch = tokenizer.pad({"input_ids": [chunks[i] for i in rows]}, return_tensors="pt")
        pooled = F.normalize(pool(model, batch["input_ids"], batch["attention_mask"]).float(), dim=-1)
        if vectors is None:
            vectors = pooled.new_zeros(len(texts), pooled.shape[-1])
        vectors.index_add_(0, torch.tensor([owner[i] for i in rows]), pooled * torch.tensor(
            [float(weight[i]) for i in rows])[:, None])
    totals = torch.zeros(len(texts)).index_add_(0, torch.tensor(owner), torch.tensor(weight, dtype=torch.float))
    vectors = vectors / totals[:, None]
    return F.normalize(vectors, dim=-1) if normalize else vectors


def teacher_vectors(path: str | Path, texts: list[str], pooling: str = "mean", chunk_tokens: int = 256,
                    batch_size: int = 64) -> torch.Tensor:
    """A teacher's targets (`data.teacher_targets`): [len(texts), D] unit vectors, each text read whole when it
    fits in `chunk_tokens` of the teacher's tokens, else as the mean of consecutive chunks that long."""
    model, tokenizer = load_encoder(path, pooling=pooling)
    return encode_chunked(model, tokenizer, texts, chunk_tokens=chunk_tokens, batch_size=batch_size)
