"""Concept encoder models: the base encoder (tokens -> concepts) and the masked-LM pretraining model.

Shapes: B batch, N tokens, C concepts, H concept width, Dt token width, V vocabulary,
M decoded positions per sample, T labelled positions in the batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .attention import rotary_cos_sin
from .autoregressive import AutoregressiveDecoder
from .backbone import TokenBackbone, backbone_settings, backbone_source
from .configuration import ConceptEncoderConfig
from .decoder import ConceptDecoder
from .decoding import IGNORE_INDEX, TextBatch
from .diffusion import DiffusionDecoder, reconstruct
from .embeddings import ConceptEmbeddings, TokenEmbeddings, default_positions
from .layers import BiXTLayer, ConceptLayer, TokenLayer
from .vocab_loss import linear_cross_entropy_sum


@dataclass
class ConceptEncoderOutput(ModelOutput):
    """
    last_hidden_state: concepts after the final norm [B, C, H].
    hidden_states: concepts before every encoder step and after the last (steps + 1 entries of [B, C, H]).
    attentions: concept self-attention maps, one [B, heads, C, C] per step.
    cross_attentions: concept <- token maps, one [B, heads, C, N] per step (zero at padded tokens).
    token_states: the tokens the first step reads [B, N, Dt] (a pretrained backbone's output).
    segment_states: recursive training with deep supervision: each earlier segment's normalised end state.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    token_states: torch.FloatTensor | None = None
    segment_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ConceptMaskedLMOutput(ModelOutput):
    """
    loss: mean cross-entropy over labelled positions.
    logits: [B, N, V], only when no labels are given or `return_dense_logits=True`; training with labels
        projects only the T labelled positions and returns no logits.
    concepts: the encoder's last_hidden_state [B, C, H].
    token_states: the tokens the concepts read [B, N, Dt] (see ConceptEncoderOutput).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    concepts: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    token_states: torch.FloatTensor | None = None


class ConceptEncoderPreTrainedModel(PreTrainedModel):
    config: ConceptEncoderConfig
    config_class = ConceptEncoderConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ConceptLayer", "BiXTLayer", "DecoderLayer", "TokenLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Explicit initialisation of every module type the family uses.

        Linear and embedding weights ~ N(0, initializer_range), biases 0, LayerNorm (1, 0), the pad row 0.
        Projections that write into a residual stream are scaled by 1/sqrt(2 * depth) (GPT-2), so the
        residual variance does not grow with the number of encoder steps.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and getattr(module, "is_zero_init", False):  # AdaLN-Zero modulation
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            scale = 1.0
            if getattr(module, "is_residual_projection", False):
                scale = 1.0 / math.sqrt(2 * (self.config.encoder_steps + self.config.num_decoder_layers))
            init.normal_(module.weight, mean=0.0, std=std * scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ConceptEmbeddings):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.position is not None:
                init.normal_(module.position, mean=0.0, std=std)
        elif isinstance(module, ConceptDecoder) and module.query_seed is not None:
            init.normal_(module.query_seed, mean=0.0, std=std)
        elif isinstance(module, MaskedLMHead):
            init.zeros_(module.bias)

    # ------------------------------------------------------------------ recursive encoder from a stacked one
    @classmethod
    def from_stacked(
        cls,
        stacked: ConceptEncoderPreTrainedModel | str | os.PathLike,
        layer_index: int = 0,
        num_iterations: int | None = None,
    ):
        """A weight-shared (recursive) model whose one layer is layer `layer_index` of a stacked model.

        Every other weight (embeddings, concepts, final norm, decoder, head) is copied, and loading
        is strict: nothing is left at random. `num_iterations` defaults to the stacked depth.
        """
        if not isinstance(stacked, PreTrainedModel):
            stacked = cls.from_pretrained(stacked)
        source = stacked.config
        if source.weight_sharing:
            raise ValueError("from_stacked: the source model is already weight-shared")
        if not 0 <= layer_index < source.num_hidden_layers:
            raise ValueError(f"from_stacked: layer_index {layer_index} is outside 0..{source.num_hidden_layers - 1}")
        fields = {name: getattr(source, name) for name in ConceptEncoderConfig.field_names()}
        fields.update(weight_sharing=True, num_iterations=num_iterations or source.num_hidden_layers)
        model = cls(ConceptEncoderConfig(**fields))

        prefix = "" if isinstance(model, ConceptEncoderModel) else f"{model.base_model_prefix}."
        model.load_state_dict(shared_layer_state(stacked.state_dict(), layer_index, prefix), strict=True)
        return model


def shared_layer_state(state: dict, layer_index: int, prefix: str = "encoder.") -> dict:
    """A stacked model's state (names -> tensors or shapes) as a weight-shared one's: layer `layer_index`
    becomes the shared layer 0, the other layers are left out, every other entry is kept."""
    layer_key = re.compile(rf"^{re.escape(prefix)}layers\.(\d+)\.")
    shared = {}
    for key, value in state.items():
        match = layer_key.match(key)
        if match is None:
            shared[key] = value
        elif int(match.group(1)) == layer_index:
            shared[layer_key.sub(f"{prefix}layers.0.", key)] = value
    return shared


class ConceptEncoderModel(ConceptEncoderPreTrainedModel):
    """Tokens [B, N] -> concepts [B, C, H].

    layer_type="stacked": each layer's concepts read the same token embeddings.
    layer_type="bixt": tokens and concepts attend to each other and are both refined.
    weight_sharing=True: one layer applied K times (K from the config or the `num_iterations` argument).
    """

    # a shared stacked layer reads the same tokens at every iteration, so their K/V are projected once;
    # False recomputes them each time (the plain path the equivalence tests compare against). Gradient-
    # checkpointed layers always recompute from their own inputs.
    share_token_projection = True

    # loading the encoder out of a pretraining checkpoint drops its decoder and head on purpose
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^lm_head\.", r"^loss_weighting\.", r"^teacher_projection\."]

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        config.check()
        self.embeddings = TokenEmbeddings(config)  # with a backbone: the word table of decoder queries and head
        self.backbone = TokenBackbone(config) if config.backbone_config is not None else None
        self.token_layers = nn.ModuleList(TokenLayer(config) for _ in range(config.token_layers))
        self.concepts = ConceptEmbeddings(config)
        if config.layer_type == "stacked":
            layers = [ConceptLayer(config) for _ in range(config.num_unique_layers)]
        else:  # a stacked BiXT's last layer refines no tokens: nothing would read them
            last = config.num_unique_layers - 1
            layers = [BiXTLayer(config, refine_tokens=config.weight_sharing or i < last) for i in range(last + 1)]
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def layer_schedule(self, num_iterations: int | None = None) -> list[nn.Module]:
        """The layers applied in order: every stacked layer, or the shared layer K times."""
        if not self.config.weight_sharing:
            if num_iterations is not None:
                raise ValueError("num_iterations can only be set on a weight-shared (recursive) encoder")
            return list(self.layers)
        steps = num_iterations if num_iterations is not None else self.config.encoder_steps
        if steps < 1:
            raise ValueError(f"num_iterations must be >= 1, got {steps}")
        return [self.layers[0]] * steps

    def recursion_schedule(self, steps: int, num_iterations: int | None, recursion_training: bool) -> tuple[int, int]:
        """(segment length, no-grad iterations per segment) for this forward: TRM-style only when pretraining
        asks for it, in training mode, at the configured K; otherwise one segment with gradients everywhere
        (evaluation, k-sweep, fine-tuning heads)."""
        if not (recursion_training and self.training) or num_iterations not in (None, self.config.encoder_steps):
            return steps, 0
        return steps // self.config.deep_supervision_segments, self.config.recursion_no_grad_iterations

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, N]
        attention_mask: torch.Tensor | None = None,  # [B, N], 1 = real token, 0 = pad or hidden
        position_ids: torch.Tensor | None = None,  # [B, N]; default 0..N-1 (right padding)
        num_iterations: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted from BERT-style tokenizers; there are no segments
        recursion_training: bool = False,  # pretraining: apply the config's TRM schedule (deep supervision)
    ) -> ConceptEncoderOutput | tuple:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if position_ids is None:
            position_ids = default_positions(input_ids)

        if self.backbone is not None:  # a pretrained transformer's first layers
            tokens = self.backbone(input_ids, attention_mask)  # [B, N, Dt]
        else:
            tokens = self.embeddings(input_ids, position_ids)  # [B, N, Dt]
        key_mask, token_mask = _padding_masks(attention_mask, tokens.dtype)
        rotary = token_rotary = None
        if self.config.position_embedding_type == "rotary":
            rotary = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rotary_base, tokens.dtype)
            token_head_dim = self.config.token_dim // self.config.num_attention_heads
            token_rotary = rotary if token_head_dim == self.config.head_dim or not len(self.token_layers) else (
                rotary_cos_sin(position_ids, token_head_dim, self.config.rotary_base, tokens.dtype))
        for layer in self.token_layers:  # contextualise the tokens before the concepts read them
            tokens = layer(tokens, key_mask, token_rotary)
        first_tokens = tokens  # what the concepts first read (a backbone's output): a distillation target
        concepts = self.concepts(input_ids.shape[0])  # [B, C, H]

        hidden_states, self_maps, cross_maps = [concepts], [], []
        schedule = self.layer_schedule(num_iterations)
        shared = {}
        recursive = len(schedule) > 1 and schedule[0] is schedule[-1] and isinstance(schedule[0], ConceptLayer)
        if recursive and self.share_token_projection and not self.is_activation_checkpointing:
            # one layer reading the same static tokens every iteration: project them to K/V once
            shared["token_kv"] = schedule[0].cross_attn.project_context(tokens, rotary)
        segment, no_grad = self.recursion_schedule(len(schedule), num_iterations, recursion_training)
        segment_states = []  # deep supervision: each earlier segment's normalised end state
        for step, layer in enumerate(schedule):
            with torch.no_grad() if step % segment < no_grad else contextlib.nullcontext():
                concepts, tokens, cross_w, self_w = layer(
                    concepts,
                    tokens,
                    key_mask,
                    token_mask,
                    rotary,
                    need_weights=output_attentions,
                    refine_tokens=step < len(schedule) - 1,  # the last step's tokens are never read
                    **shared,
                )
            hidden_states.append(concepts)
            cross_maps.append(cross_w)
            self_maps.append(self_w)
            if (step + 1) % segment == 0 and step + 1 < len(schedule):
                segment_states.append(self.norm(concepts))
                concepts = concepts.detach()  # TRM: no gradient across segments through the state
                if isinstance(layer, BiXTLayer):  # refined tokens are state too; static tokens are the input
                    tokens = tokens.detach()
        concepts = self.norm(concepts)

        out = ConceptEncoderOutput(
            last_hidden_state=concepts,
            token_states=first_tokens,
            segment_states=tuple(segment_states) or None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(self_maps) if output_attentions else None,
            cross_attentions=tuple(cross_maps) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()


def _padding_masks(
    attention_mask: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """attention_mask [B, N] -> (key mask bool [B, 1, 1, N], token mask [B, N, 1]); (None, None) when all real.

    Dropping an all-ones mask lets SDPA take its fastest (unmasked) kernels.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None, None
    real = attention_mask.bool()
    return real[:, None, None, :], real[..., None].to(dtype)


class MaskedLMHead(nn.Module):
    """BERT-style prediction head: H -> Dt transform, GELU, LayerNorm, then the (tied) vocabulary projection."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.token_dim)
        self.norm = nn.LayerNorm(config.token_dim, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.token_dim, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # [..., H] -> [..., V]
        return self.decoder(self.norm(F.gelu(self.transform(states)))) + self.bias

    def loss(self, states: torch.Tensor, target: torch.Tensor, num_items_in_batch=None, label_smoothing: float = 0.0,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Token-mean cross-entropy of labelled states [T, H] against target [T], without [T, V] logits kept
        (chunked projection, gradients on the way; see vocab_loss.py). Equals token_mean_cross_entropy(self(states))."""
        hidden = self.norm(F.gelu(self.transform(states)))  # [T, Dt]
        total = linear_cross_entropy_sum(hidden, self.decoder.weight, self.bias, target, label_smoothing, weights)
        return total / (num_items_in_batch if num_items_in_batch is not None else target.numel())


def token_mean_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_i w_i · CE_i (float32) over labelled tokens, divided by the labelled-token count: this batch's,
    or `num_items_in_batch` (the whole accumulated batch, from the Trainer). w = 1 unless given."""
    losses = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none",
                             label_smoothing=label_smoothing)
    if weights is not None:
        losses = losses * weights
    count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE_INDEX).sum()
    return losses.sum() / count


class ConceptEncoderForMaskedLM(ConceptEncoderPreTrainedModel):
    """Concept encoder + Perceiver-IO / position-only decoder + vocabulary head, for MLM-style pretraining."""

    _tied_weights_keys = {"lm_head.decoder.weight": "encoder.embeddings.word_embeddings.weight"}
    # the Trainer passes num_items_in_batch (labelled tokens in the whole accumulated batch), so the loss is an
    # exact token mean under gradient accumulation and data parallelism
    accepts_loss_kwargs = True
    # learned loss weights that pretraining keeps beside the model (see objectives/weighting.py)
    _keys_to_ignore_on_load_unexpected = [r"^loss_weighting\.", r"^teacher_projection\."]

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.encoder = ConceptEncoderModel(config)
        decoders = {"diffusion": DiffusionDecoder, "autoregressive": AutoregressiveDecoder}
        self.decoder = decoders.get(config.decoder_type, ConceptDecoder)(config)
        self.lm_head = MaskedLMHead(config)
        self.post_init()

    @classmethod
    def from_backbone(cls, name_or_path: str, layers: int, freeze: str = "none", **config_kwargs):
        """A concept encoder whose tokens come from the embeddings and first `layers` layers of a pretrained
        HF transformer (its weights copied in); its word table also seeds the decoder queries and the tied
        vocabulary head. Concepts, decoder and head are fresh. `config_kwargs` set the rest of the config."""
        config = ConceptEncoderConfig(**backbone_settings(name_or_path, layers), backbone_freeze=freeze,
                                      **config_kwargs)
        model = cls(config)
        model.load_backbone_weights()
        return model

    def load_backbone_weights(self) -> None:
        """Copy the pretrained weights of `config.backbone_name` into the backbone and the word table."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the checkpoint's later layers are left out on purpose
        try:
            pretrained = AutoModel.from_pretrained(backbone_source(self.config.backbone_name),
                                                   num_hidden_layers=self.config.backbone_config["num_hidden_layers"])
        finally:
            hf_logging.set_verbosity(verbosity)
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("pooler.")}
        missing, unexpected = self.encoder.backbone.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{self.config.backbone_name}: backbone weights do not fit "
                             f"(missing {missing}, unexpected {unexpected})")
        with torch.no_grad():
            self.encoder.embeddings.word_embeddings.weight.copy_(pretrained.get_input_embeddings().weight)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head.decoder = value

    def decode(
        self,
        concepts: torch.Tensor,  # [B, C, H]
        input_ids: torch.Tensor,  # [B, M] ids at the query positions (used by perceiver_io queries)
        position_ids: torch.Tensor,  # [B, M]
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, tuple | None]:
        token_embeds = (
            self.encoder.embeddings.word_embeddings(input_ids) if self.config.decoder_type == "perceiver_io" else None
        )
        return self.decoder(concepts, position_ids, token_embeds, need_weights=need_weights)

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, N]
        attention_mask: torch.Tensor | None = None,  # [B, N]
        labels: torch.Tensor | None = None,  # [B, N], IGNORE_INDEX where no loss
        position_ids: torch.Tensor | None = None,
        num_iterations: int | None = None,
        return_dense_logits: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted from BERT-style tokenizers; there are no segments
        decode: bool = True,  # False: encode only (concepts out, no decoder, no loss), e.g. for contrastive views
        noise_level: torch.Tensor | None = None,  # [B] diffusion t per sample (ELBO weights, conditioning)
        decoder_input_ids: torch.Tensor | None = None,  # [B, M] autoregressive inputs of another text (prefix_suffix)
    ) -> ConceptMaskedLMOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        if position_ids is None:
            position_ids = default_positions(input_ids)
        enc = self.encoder(
            self.encoder_input_ids(input_ids, labels),
            attention_mask=attention_mask,
            position_ids=position_ids,
            num_iterations=num_iterations,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            recursion_training=decode and labels is not None,  # deep supervision needs the targets
        )
        concepts = enc.last_hidden_state
        loss = logits = decoder_maps = None
        if decode:
            loss, logits, decoder_maps = self.decoding_loss(
                concepts, input_ids, attention_mask, labels, position_ids, return_dense_logits, output_attentions,
                num_items_in_batch, noise_level, decoder_input_ids)
            if loss is not None and enc.segment_states:  # deep supervision: every segment's state rebuilds the text
                earlier = [self.decoding_loss(state, input_ids, attention_mask, labels, position_ids,
                                                 return_dense_logits, False, num_items_in_batch, noise_level,
                                                 decoder_input_ids)[0]
                           for state in enc.segment_states]
                loss = torch.stack([*earlier, loss]).mean()

        out = ConceptMaskedLMOutput(
            loss=loss,
            logits=logits,
            concepts=concepts,
            hidden_states=enc.hidden_states,
            attentions=enc.attentions,
            cross_attentions=enc.cross_attentions,
            decoder_attentions=decoder_maps,
            token_states=enc.token_states,
        )
        return out if return_dict else out.to_tuple()

    def encoder_input_ids(self, input_ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """What the encoder reads. Diffusion: the clean text (labels hold the masked tokens), so the masked
        tokens reach the denoiser only through the concepts; every other objective: `input_ids` as given
        (MLM's masks, TSDAE's deletions are the encoder's task)."""
        if self.config.decoder_type != "diffusion" or labels is None:
            return input_ids
        return torch.where(labels == IGNORE_INDEX, input_ids, labels)

    def decoding_loss(self, concepts, input_ids, attention_mask, labels, position_ids, return_dense_logits=False,
                      output_attentions=False, num_items_in_batch=None, noise_level=None, decoder_input_ids=None):
        """(loss, logits, decoder maps) of decoding `concepts` [B, C, H] back to the text (loss None without labels).

        Every decoder answers the same call (`decoding.py`): states at the positions it scores, their targets and
        weights. With labels (and no dense logits asked for) only the scored states are projected, in one
        vocabulary-head call, never [B, N, V]."""
        text = TextBatch(input_ids, position_ids, attention_mask, labels, noise_level, decoder_input_ids)
        sparse = labels is not None and not return_dense_logits
        decoded = self.decoder.decode_text(concepts, text, self.encoder.embeddings.word_embeddings, sparse,
                                           output_attentions)
        targets, weights, smoothing = decoded.targets, decoded.weights, self.config.label_smoothing
        loss = logits = None
        if sparse:
            scored = targets != IGNORE_INDEX  # [B, M]
            if not scored.any():  # nothing labelled: a zero that keeps the graph connected
                loss = decoded.states.sum() * 0.0
            else:
                loss = self.lm_head.loss(decoded.states[scored], targets[scored], num_items_in_batch, smoothing,
                                         None if weights is None else weights[scored])
        else:
            logits = self.lm_head(decoded.states)  # [B, N, V]
            if targets is not None:
                loss = token_mean_cross_entropy(logits.flatten(0, 1), targets.flatten(), num_items_in_batch, smoothing,
                                                None if weights is None else weights.flatten())
        return loss, logits, decoded.maps

    def reconstruct(self, input_ids, attention_mask=None, prefix_length=None, steps=None, temperature=1.0, top_k=None,
                    generator=None) -> torch.Tensor:
        """Iterative unmasking conditioned on the concepts (`decoder_type="diffusion"`; `diffusion.reconstruct`)."""
        return reconstruct(self, input_ids, attention_mask, prefix_length, steps, temperature, top_k, generator)
