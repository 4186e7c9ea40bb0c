"""`ConceptEncoderConfig`: every hyperparameter that changes the model's computation.

The config is a Hugging Face `PreTrainedConfig` (a dataclass in transformers 5), saved as
`config.json` beside the weights. Construction validates field types and cross-field
constraints and raises `ValueError` / `TypeError` naming the offending field, so an impossible
model never reaches `torch`.
"""

# no `from __future__ import annotations`: field annotations must stay real types for `_check_type`
import dataclasses
import types
import typing
from typing import Any, ClassVar

from transformers import PretrainedConfig
from transformers.generation.configuration_utils import GenerationConfig

LAYER_TYPES = ("stacked", "bixt")
DECODER_TYPES = ("perceiver_io", "position_only", "diffusion", "autoregressive")
DIFFUSION_MIXING = ("conv", "full", "none")
FFN_TYPES = ("geglu", "gelu")
POSITION_EMBEDDING_TYPES = ("absolute", "rotary")
CONCEPT_POSITION_TYPES = ("none", "sinusoidal", "learned")

# Keys that transformers itself passes through `__init__` (loading, Trainer, Hub metadata).
# Anything else that is not a field is a typo and must not be silently stored.
_HF_PASSTHROUGH_KEYS = frozenset(
    {
        "num_labels",
        "name_or_path",
        "_name_or_path",
        "torch_dtype",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "_attn_implementation_internal",
        "_experts_implementation_internal",
        "_commit_hash",
        "auto_map",
        "per_layer_config",
        "model_type",  # written by to_dict; checked against ours below
    }
)


class ConceptEncoderConfig(PretrainedConfig):
    r"""Configuration of a concept encoder: C learnable concepts cross-attending to N tokens.

    Example:
        >>> from concept_encoder import ConceptEncoderConfig, ConceptEncoderModel
        >>> config = ConceptEncoderConfig(num_concepts=32, hidden_size=128, num_hidden_layers=2,
        ...                               num_attention_heads=4, intermediate_size=256)
        >>> model = ConceptEncoderModel(config)
    """

    model_type: ClassVar[str] = "concept_encoder"

    # --- vocabulary and special tokens (defaults: the BERT uncased / MiniLM vocabulary) ---
    vocab_size: int = 30522
    pad_token_id: int | None = 0
    mask_token_id: int | None = 103
    cls_token_id: int | None = 101
    sep_token_id: int | None = 102
    unk_token_id: int | None = 100
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    # --- concepts: the C x H bottleneck ---
    num_concepts: int = 128
    hidden_size: int = 512  # concept width H; also the attention and decoder width
    concept_position_type: str = "none"  # added to the concept table: none | sinusoidal | learned

    # --- tokens ---
    token_dim: int | None = None  # token embedding width; None means hidden_size ("dimension inversion" when smaller)
    max_position_embeddings: int = 512
    position_embedding_type: str = "absolute"  # absolute (learned table) | rotary (no table, any length)
    rotary_base: float = 10000.0
    # contextualised tokens before compression (layers.TokenLayer): k sliding-window self-attention blocks over
    # the tokens, each token reading those at most token_window positions away; cost linear in N
    token_layers: int = 0
    token_window: int = 128

    # --- pretrained token backbone (ConceptEncoderForMaskedLM.from_backbone) ---
    # the HF config (dict) of a pretrained transformer whose embeddings and first `num_hidden_layers` layers
    # produce the tokens the concepts read (token_dim = its hidden size); None: a plain embedding table
    backbone_config: dict | None = None
    backbone_name: str | None = None  # a Hub name or folder: where its weights and tokenizer come from
    backbone_layers: int | None = None  # k: how many of its layers feed the concepts
    backbone_freeze: str = "none"  # none | embeddings | all: which backbone parameters stay fixed
    backbone_frozen_layers: int = 0  # partial freezing: the embeddings and the lowest n backbone layers fixed

    # --- encoder layers ---
    layer_type: str = "stacked"  # stacked: concepts read static tokens | bixt: tokens refined too
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int = 1024
    ffn_type: str = "geglu"
    weight_sharing: bool = False  # recursive encoder: one layer applied num_iterations times
    num_iterations: int | None = None  # None means num_hidden_layers; only with weight_sharing
    # TRM-style recursion training (Jolicoeur-Martineau, 2025), only with weight_sharing: the K iterations
    # form `deep_supervision_segments` equal segments; each segment's end state is decoded and supervised
    # and then detached, and the first `recursion_no_grad_iterations` of each segment run without gradient.
    # Inference always runs all K (or num_iterations=) iterations as one chain.
    deep_supervision_segments: int = 1
    recursion_no_grad_iterations: int = 0

    # --- pretraining decoder ---
    # perceiver_io: token + position queries | position_only | diffusion (MDLM denoiser)
    # | autoregressive (the TSDAE paper's left-to-right decoder; needs dense labels)
    decoder_type: str = "perceiver_io"
    num_decoder_layers: int = 1
    # masked diffusion decoder (decoder_type="diffusion", MDLM-style): token mixing + concept cross-attention
    # none: no token mixing, each position reads its own (noised) token, its position and the concepts, so the
    # concepts are the only source of the masked content | conv: depthwise convolution over positions, O(N) |
    # full: self-attention over tokens, O(N²) (both add a neighbour prior; see docs/objectives.md)
    diffusion_mixing: str = "none"
    diffusion_kernel_size: int = 7  # conv mixing window (odd)
    diffusion_timestep_conditioning: bool = False  # AdaLN-Zero on the noise level t
    diffusion_t_min: float = 0.3  # t ~ U(t_min, 1) per sample
    diffusion_elbo_weighting: bool = True  # weight token losses by 1/t (MDLM)
    label_smoothing: float = 0.0

    # --- classification head (fine-tuning) ---
    classifier_pooling: str = "weighted"  # weighted: softmax-weighted concepts | via_decoder: the pretrained decoder
    # via_decoder with perceiver_io queries: True also feeds the token embeddings to the head around the
    # concepts (the original's bypass, an explicit option); False: position queries, only the concepts
    classifier_token_bypass: bool = False

    # --- regularisation, numerics, initialisation ---
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        generation_keys = set(GenerationConfig._get_default_generation_params())
        unknown = sorted(set(kwargs) - _HF_PASSTHROUGH_KEYS - generation_keys)
        if unknown:
            raise ValueError(
                f"ConceptEncoderConfig: unknown key(s) {unknown}. Valid keys: {sorted(self.field_names())}"
            )
        model_type = kwargs.pop("model_type", self.model_type)
        if model_type != self.model_type:
            raise ValueError(f"ConceptEncoderConfig: model_type {model_type!r} is not {self.model_type!r}")
        super().__post_init__(**kwargs)
        if self.token_dim is None:
            self.token_dim = self.hidden_size
        self.check()

    # ------------------------------------------------------------------ validation
    @classmethod
    def field_names(cls) -> "set[str]":
        """Names of the fields this class adds to `PretrainedConfig`."""
        base = {f.name for f in dataclasses.fields(PretrainedConfig)}
        return {f.name for f in dataclasses.fields(cls)} - base

    def check(self) -> None:
        """Raise `TypeError` / `ValueError` naming the field if the config cannot build a model."""
        own = self.field_names()
        for field in dataclasses.fields(self):
            if field.name in own:
                _check_type(field.name, getattr(self, field.name), field.type)

        def require(condition: bool, field: str, message: str) -> None:
            if not condition:
                raise ValueError(f"ConceptEncoderConfig.{field}: {message}")

        for field, allowed in (
            ("layer_type", LAYER_TYPES),
            ("decoder_type", DECODER_TYPES),
            ("ffn_type", FFN_TYPES),
            ("position_embedding_type", POSITION_EMBEDDING_TYPES),
            ("concept_position_type", CONCEPT_POSITION_TYPES),
        ):
            require(getattr(self, field) in allowed, field, f"{getattr(self, field)!r} is not one of {allowed}")
        for field in (
            "vocab_size",
            "num_concepts",
            "hidden_size",
            "token_dim",
            "max_position_embeddings",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "num_decoder_layers",
        ):
            require(getattr(self, field) > 0, field, f"must be positive, got {getattr(self, field)}")
        require(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size",
            f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}",
        )
        head_dim = self.hidden_size // self.num_attention_heads
        require(
            self.position_embedding_type != "rotary" or head_dim % 2 == 0,
            "position_embedding_type",
            f"rotary needs an even head dimension, got hidden_size/num_attention_heads={head_dim}",
        )
        require(
            self.num_iterations is None or self.weight_sharing,
            "num_iterations",
            "is only meaningful with weight_sharing=True (the recursive encoder)",
        )
        require(
            self.num_iterations is None or self.num_iterations > 0,
            "num_iterations",
            f"must be positive, got {self.num_iterations}",
        )
        segments = self.deep_supervision_segments
        require(segments >= 1, "deep_supervision_segments", f"must be >= 1, got {segments}")
        require(self.recursion_no_grad_iterations >= 0, "recursion_no_grad_iterations",
                f"must be >= 0, got {self.recursion_no_grad_iterations}")
        if segments > 1 or self.recursion_no_grad_iterations > 0:
            require(self.weight_sharing, "deep_supervision_segments",
                    "deep supervision and no-grad iterations need weight_sharing=True (the recursive encoder)")
            require(self.encoder_steps % segments == 0, "deep_supervision_segments",
                    f"{segments} segments do not divide the {self.encoder_steps} iterations")
            require(self.recursion_no_grad_iterations < self.encoder_steps // segments, "recursion_no_grad_iterations",
                    f"must leave at least one iteration with gradient in each segment of "
                    f"{self.encoder_steps // segments}, got {self.recursion_no_grad_iterations}")
            require(self.recursion_no_grad_iterations == 0 or self.layer_type == "stacked", "recursion_no_grad_iterations",
                    "BiXT refines the tokens: a no-grad first iteration would cut the embeddings off from every loss")
        require(self.token_layers >= 0, "token_layers", f"must be >= 0, got {self.token_layers}")
        require(self.token_window >= 1, "token_window", f"must be >= 1, got {self.token_window}")
        if self.token_layers:
            require(self.token_dim % self.num_attention_heads == 0, "token_layers",
                    f"token_dim={self.token_dim} is not divisible by num_attention_heads={self.num_attention_heads}")
            require(self.position_embedding_type != "rotary" or (self.token_dim // self.num_attention_heads) % 2 == 0,
                    "token_layers", "rotary token layers need an even token head dimension")
            require(self.backbone_config is None, "token_layers",
                    "a pretrained backbone's layers already contextualise the tokens")
        require((self.backbone_name is None) == (self.backbone_layers is None), "backbone_layers",
                "backbone_name and backbone_layers go together")
        require(self.backbone_freeze in ("none", "embeddings", "all"), "backbone_freeze",
                f"{self.backbone_freeze!r} is not one of none, embeddings, all")
        require(self.backbone_frozen_layers == 0 or (
            self.backbone_layers is not None and self.backbone_freeze != "all"
            and 0 < self.backbone_frozen_layers <= self.backbone_layers),
            "backbone_frozen_layers", "needs a backbone, backbone_freeze other than 'all', and at most its "
            f"layer count; got {self.backbone_frozen_layers}")
        if self.backbone_config is not None:
            width = self.backbone_config.get("hidden_size")
            require(width == self.token_dim, "token_dim",
                    f"must equal the backbone's hidden_size ({width}), got {self.token_dim}")
            require(self.layer_type == "stacked", "layer_type", "a pretrained backbone feeds stacked concept layers")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            require(0.0 <= getattr(self, field) < 1.0, field, f"must be in [0, 1), got {getattr(self, field)}")
        require(self.initializer_range > 0, "initializer_range", "must be positive")
        require(self.layer_norm_eps > 0, "layer_norm_eps", "must be positive")
        require(self.classifier_pooling in ("weighted", "via_decoder"), "classifier_pooling",
                f"{self.classifier_pooling!r} is not 'weighted' or 'via_decoder'")
        require(self.classifier_pooling != "via_decoder" or self.decoder_type in ("perceiver_io", "position_only"),
                "classifier_pooling", "via_decoder needs a perceiver_io or position_only decoder")
        require(self.diffusion_mixing in DIFFUSION_MIXING, "diffusion_mixing",
                f"{self.diffusion_mixing!r} is not one of {DIFFUSION_MIXING}")
        require(self.diffusion_kernel_size > 0 and self.diffusion_kernel_size % 2 == 1, "diffusion_kernel_size",
                f"must be a positive odd number, got {self.diffusion_kernel_size}")
        require(0.0 < self.diffusion_t_min < 1.0, "diffusion_t_min", f"must be in (0, 1), got {self.diffusion_t_min}")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        for field in ("pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id", "unk_token_id",
                      "bos_token_id", "eos_token_id"):
            value = getattr(self, field)
            require(value is None or 0 <= value < self.vocab_size, field,
                    f"{value} is outside the vocabulary [0, {self.vocab_size})")

    # ------------------------------------------------------------------ derived values
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def encoder_steps(self) -> int:
        """How many concept layers the encoder applies (K for the recursive encoder)."""
        if self.weight_sharing:
            return self.num_iterations or self.num_hidden_layers
        return self.num_hidden_layers

    @property
    def num_unique_layers(self) -> int:
        return 1 if self.weight_sharing else self.num_hidden_layers

    @property
    def short_name(self) -> str:
        """`H{H}L{L}C{C}` as used in run names (L is K for the recursive encoder)."""
        return f"H{self.hidden_size}L{self.encoder_steps}C{self.num_concepts}"


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Strict isinstance check for the simple annotations the config uses (int, float, str, bool, X | None)."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return
        if kind is bool and isinstance(value, bool):
            return
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if kind is str and isinstance(value, str):
            return
        if kind is dict and isinstance(value, dict):
            return
    expected = " | ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise TypeError(f"ConceptEncoderConfig.{name}: expected {expected}, got {type(value).__name__} ({value!r})")
