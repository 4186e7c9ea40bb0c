"""Masked-diffusion decoder (MDLM-style, Sahoo et al., 2024) that rebuilds the masked tokens from the concepts.

Input: the noised text (a share t of the real tokens replaced by [MASK]) as token embeddings plus
positions [B, N, H], and the concepts of the CLEAN text [B, C, H] (`ConceptEncoderForMaskedLM.
encoder_input_ids`). The masked tokens are in the concepts and nowhere else. (Encoding the noised text,
as an earlier version did, let a mixing denoiser read everything the concepts held: shuffling concepts
between samples left the loss unchanged.) Each layer (pre-LN):
  x += Mix(LN(x))             optional token-to-token mixing (`diffusion_mixing`)
  x += CrossAttn(LN(x), concepts)
  x += FFN(LN(x))
`diffusion_mixing: none` (default): no mixing; a position reads its own token (or [MASK]), its position
and the concepts, so every bit of masked content comes through the bottleneck. `conv`: a depthwise
convolution over positions (kernel `diffusion_kernel_size`, O(N·H·k)); `full`: self-attention over the
real tokens (O(N²)). Both add a prior from the surviving neighbours, which the concepts then need to
carry less of (docs/objectives.md has the measured ablation). Pads are zeroed before the convolution
and masked as keys in attention, so they never leak in.
With `diffusion_timestep_conditioning`, each sub-layer is modulated AdaLN-Zero style by the noise
level t: LN(x)(1 + scale) + shift, and its update multiplied by a gate. The modulation projection
starts at zero (DiT's AdaLN-Zero), so every sub-layer starts with its gate closed and opens as it
trains. MDLM reports the conditioning unneeded; it is off by default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import Attention
from .configuration import ConceptEncoderConfig
from .decoding import Decoded, TextBatch
from .dropout import Dropout
from .embeddings import default_positions
from .layers import FeedForward


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of noise levels t in [0, 1] (scaled by 1000 so the frequencies move)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvMixer(nn.Module):
    """Depthwise convolution over positions: each channel mixes a window of neighbouring tokens."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)
        self.proj.is_residual_projection = True

    def forward(self, x: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:  # [B, N, H]
        if real is not None:
            x = x * real  # pads contribute nothing to their neighbours
        return self.proj(F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2)))


class DiffusionDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H, heads, d, p = config.hidden_size, config.num_attention_heads, config.head_dim, config.attention_probs_dropout_prob
        eps = config.layer_norm_eps
        self.full_attention = config.diffusion_mixing == "full"
        self.mixes = config.diffusion_mixing != "none"
        self.mix_norm = nn.LayerNorm(H, eps=eps) if self.mixes else None
        if self.mixes:
            self.mixer = Attention(H, H, heads, d, p) if self.full_attention else ConvMixer(H, config.diffusion_kernel_size)
        self.cross_norm = nn.LayerNorm(H, eps=eps)
        self.cross_attn = Attention(H, H, heads, d, p)
        self.ffn_norm = nn.LayerNorm(H, eps=eps)
        self.ffn = FeedForward(H, config.intermediate_size, config.ffn_type, config.hidden_dropout_prob)
        self.dropout = Dropout(config.hidden_dropout_prob)
        # AdaLN-Zero: shift, scale, gate for each of the three sub-layers, from the timestep embedding
        self.modulation = nn.Linear(H, 9 * H) if config.diffusion_timestep_conditioning else None
        if self.modulation is not None:
            self.modulation.is_zero_init = True

    def forward(self, x, concepts, key_mask=None, real=None, timestep=None):
        mods = [None] * 9 if self.modulation is None else self.modulation(F.silu(timestep))[:, None].chunk(9, dim=-1)

        def modulated(norm, h, shift, scale):
            h = norm(h)
            return h if shift is None else h * (1 + scale) + shift

        def gated(update, gate):
            return update if gate is None else update * gate

        if self.mixes:
            h = modulated(self.mix_norm, x, mods[0], mods[1])
            update = self.mixer(h, key_mask=key_mask)[0] if self.full_attention else self.mixer(h, real)
            x = x + self.dropout(gated(update, mods[2]))
        update, _ = self.cross_attn(modulated(self.cross_norm, x, mods[3], mods[4]), concepts)
        x = x + self.dropout(gated(update, mods[5]))
        update = self.ffn(modulated(self.ffn_norm, x, mods[6], mods[7]))
        return x + self.dropout(gated(update, mods[8]))


class DiffusionDecoder(nn.Module):
    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        H = config.hidden_size
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_proj = nn.Linear(config.token_dim, H) if config.token_dim != H else None
        self.timestep = (
            nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H)) if config.diffusion_timestep_conditioning else None
        )
        self.layers = nn.ModuleList(DiffusionDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.elbo_weighting = config.diffusion_elbo_weighting

    def decode_text(self, concepts: torch.Tensor, text: TextBatch, embed: nn.Embedding, sparse: bool = False,
                    need_weights: bool = False) -> Decoded:
        """The decoder protocol (decoding.py). Every position is decoded (mixing may read all of them); with the
        ELBO weighting each masked token's loss is weighted 1/t of its block."""
        states = self(concepts, embed(text.input_ids), text.position_ids, text.attention_mask, text.noise_level)
        weights = None
        if text.labels is not None and self.elbo_weighting and text.noise_level is not None:
            weights = (1.0 / text.noise_level.float())[:, None].expand_as(text.labels)  # [B, N]
        return Decoded(states, text.labels, weights)

    def forward(
        self,
        concepts: torch.Tensor,  # [B, C, H]
        token_embeds: torch.Tensor,  # [B, N, Dt] embeddings of the noised ids
        position_ids: torch.Tensor,  # [B, N]
        attention_mask: torch.Tensor | None = None,  # [B, N] 1 = real token (masked ones included)
        noise_level: torch.Tensor | None = None,  # [B] t
    ) -> torch.Tensor:
        x = token_embeds if self.token_proj is None else self.token_proj(token_embeds)
        x = x + self.position_embeddings(position_ids)
        key_mask = real = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_mask = attention_mask.bool()[:, None, None, :]
            real = attention_mask[..., None].to(x.dtype)
        timestep = None
        if self.timestep is not None:
            if noise_level is None:
                raise ValueError("diffusion_timestep_conditioning needs the noise level t (noise_level=[B])")
            timestep = self.timestep(timestep_embedding(noise_level, x.shape[-1]).to(x.dtype))
        for layer in self.layers:
            x = layer(x, concepts, key_mask, real, timestep)
        return self.norm(x)


def text_positions(ids: torch.Tensor, config) -> torch.Tensor:
    """[B, N] bool: the text's own tokens (not pad nor a special marker), the ones a denoiser rebuilds."""
    special = [i for i in (config.pad_token_id, config.cls_token_id, config.sep_token_id, config.bos_token_id,
                           config.eos_token_id) if i is not None]
    return ~torch.isin(ids, torch.tensor(special, device=ids.device))


@torch.no_grad()
def reconstruct(
    model,  # a ConceptEncoderForMaskedLM with decoder_type diffusion
    input_ids: torch.Tensor,  # [B, N] the text whose concepts condition the reconstruction
    attention_mask: torch.Tensor | None = None,
    prefix_length: int | None = None,
    steps: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Iterative unmasking (MDLM sampling) conditioned on concepts, for `decoder_type="diffusion"`.

    prefix_length None: the concepts of the full text; every real non-special token is masked and
    rebuilt. prefix_length k: the encoder sees only the first k tokens, which stay on the canvas;
    the rest is generated. Each of `steps` rounds (default: one per masked token) samples every
    masked position (temperature 0 = argmax, optional top-k) and keeps the most confident
    ceil(remaining / rounds left) of them. Returns the completed ids [B, N].
    """
    if model.config.decoder_type != "diffusion":
        raise ValueError("reconstruct needs decoder_type='diffusion'")
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    positions = default_positions(input_ids)
    fill = real & text_positions(input_ids, model.config)
    visible = real
    if prefix_length is not None:
        fill &= positions >= prefix_length
        visible = real & (positions < prefix_length)
    concepts = model.encoder(input_ids, attention_mask=visible.long(), position_ids=positions).last_hidden_state
    canvas = input_ids.masked_fill(fill, model.config.mask_token_id)
    remaining, total = fill.clone(), fill.sum(1).clamp(min=1)
    rounds = steps or int(fill.sum(1).max())
    for step in range(rounds):
        left = remaining.sum(1)  # [B]
        if int(left.max()) == 0:
            break
        embeds = model.encoder.embeddings.word_embeddings(canvas)
        states = model.decoder(concepts, embeds, positions, real.long(), left.float() / total)
        logits = model.lm_head(states).float()  # [B, N, V]
        if top_k is not None:
            cutoff = logits.topk(top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < cutoff, float("-inf"))
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            sample = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(canvas.shape)
        else:
            probs = logits.softmax(-1)
            sample = logits.argmax(-1)
        confidence = probs.gather(-1, sample[..., None])[..., 0].masked_fill(~remaining, -1.0)
        quota = torch.ceil(left.float() / (rounds - step)).long()  # [B]
        rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
        chosen = remaining & (rank < quota[:, None])
        canvas = torch.where(chosen, sample, canvas)
        remaining &= ~chosen
    return canvas
