"""The one protocol every token decoder follows (Perceiver-IO / position-only, diffusion, autoregressive).

    decoder.decode_text(concepts [B, C, H], text: TextBatch, embed, sparse, need_weights) -> Decoded

`TextBatch` is the text side of a batch; `Decoded` holds the decoder states at the positions it scores
[B, M, H], the token each is scored against [B, M] (IGNORE_INDEX: not scored), optional per-token loss
weights [B, M], and attention maps when asked. `sparse=True` lets a decoder hand back only the labelled
positions (M < N) when it can decode them alone; the vocabulary head then projects and scores just those,
in one call for every decoder (`ConceptEncoderForMaskedLM.decoding_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class TextBatch:
    input_ids: torch.Tensor  # [B, N] what the decoder reads (masked ids, deleted ids, noised ids)
    position_ids: torch.Tensor  # [B, N]
    attention_mask: torch.Tensor | None = None  # [B, N] 1 = real token
    labels: torch.Tensor | None = None  # [B, N] the tokens to rebuild, IGNORE_INDEX elsewhere
    noise_level: torch.Tensor | None = None  # [B] diffusion's t
    # [B, M] the autoregressive decoder's own inputs when it decodes another text than the encoder read
    # (prefix -> suffix: the shifted suffix with word dropout; labels are then the suffix, positions 0..M-1)
    decoder_input_ids: torch.Tensor | None = None


@dataclass
class Decoded:
    states: torch.Tensor  # [B, M, H] at the positions the decoder scores (M = N unless sparse)
    targets: torch.Tensor | None  # [B, M] the token each state is scored against, IGNORE_INDEX: not scored
    weights: torch.Tensor | None = None  # [B, M] per-token loss weights (diffusion's 1/t), None: 1
    maps: tuple[torch.Tensor, ...] | None = None  # attention maps, when asked


def select_positions(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the True positions of each row to the front.

    selected bool [B, N] -> (index [B, M] into N, valid bool [B, M]), M = most True in one row;
    row b lists its selected positions in order, padded with unselected ones marked invalid.
    """
    counts = selected.sum(dim=1)  # [B]
    width = int(counts.max()) if selected.numel() else 0
    index = torch.sort((~selected).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=selected.device)[None, :] < counts[:, None]
    return index, valid
