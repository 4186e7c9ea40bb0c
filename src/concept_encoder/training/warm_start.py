"""Warm start: a fresh run's first weights from an earlier run or model (`model.init_from`, `model.init_layer`).

The research plan starts diffusion and TSDAE from an MLM encoder, and a recursive encoder from layer i of a
stacked one. What the run takes from the source:

- the encoder, whole: every encoder tensor of the run comes from the source and every encoder tensor of the
  source is used, except that a weight-shared run from a stacked source takes layer `init_layer` as its one
  layer and leaves the others out. Another width, depth, layer type, position scheme or backbone is refused;
- the decoder, tensor by tensor where names and shapes match, and only under the same `decoder_type`: a
  Perceiver-IO and a position-only decoder hold the same tensors, but the first adds the token embedding to
  its queries and the second does not, so equal shapes would hide a different function;
- the vocabulary head where names and shapes match (its projection is the tied word table).

Token ids must mean what they meant to the source, so the run reads the source's tokenizer. Everything is
decided from names and shapes in `prepare` (no weights read, no run folder yet); `apply_warm_start` copies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.utils import logging

from ..config import ConfigError
from ..modeling import ConceptEncoderConfig, ConceptEncoderForMaskedLM
from ..modeling.modeling_concept_encoder import shared_layer_state
from ..rundir import EXPERIMENT_FILE, MODEL_DIR, TOKENIZER_DIR, has_tokenizer, tokenizer_folder

logger = logging.get_logger(__name__)

WIDTH_FIELDS = ("hidden_size", "token_dim", "num_concepts", "vocab_size")  # what no warm start can bridge
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Source:
    """Where a warm start reads: the folder given, its model folder and its tokenizer folder."""

    given: str  # as written in the config
    folder: Path
    model_dir: Path
    tokenizer_dir: Path


@dataclass
class WarmStartPlan:
    """Which source tensor fills which tensor of the run."""

    source: Source
    init_layer: int | None
    loads: dict[str, str]  # run tensor -> source tensor
    newly_initialised: list[str]  # run tensors left as built (seeded initialisation)
    skipped: dict[str, str]  # source tensor -> why the run does not take it

    def report(self) -> dict:
        """What was taken, what was left as initialised, what was passed over; written to init_from.json."""
        return {
            "source": str(self.source.folder), "model": str(self.source.model_dir),
            "tokenizer": str(self.source.tokenizer_dir), "init_layer": self.init_layer,
            "counts": {"loaded": _by_part(self.loads), "newly_initialised": _by_part(self.newly_initialised),
                       "skipped": _by_part(self.skipped)},
            "loaded": sorted(self.loads),
            "renamed": {run: key for run, key in sorted(self.loads.items()) if run != key},
            "newly_initialised": self.newly_initialised,
            "skipped": self.skipped,
        }

    def summary(self) -> str:
        def counts(names) -> str:
            parts = _by_part(names)
            return f"{sum(parts.values())} tensors" + (f" ({', '.join(f'{k} {v}' for k, v in parts.items())})"
                                                        if parts else "")

        layer = f" (source layer {self.init_layer} as the shared layer)" if self.init_layer is not None else ""
        return (f"init_from {self.source.given}: loaded {counts(self.loads)}{layer}; newly initialised "
                f"{counts(self.newly_initialised)}; skipped {counts(self.skipped)}; tokenizer {self.source.tokenizer_dir}")


def _by_part(names) -> dict[str, int]:
    """Tensor names counted by top-level module (encoder, decoder, lm_head, ...)."""
    return dict(Counter(name.split(".")[0] for name in names))


def find_source(given: str, where: str) -> Source:
    """A run folder (model/ + experiment.yaml) or a model folder (config.json) with weights and a tokenizer."""
    folder = Path(given).expanduser().resolve()
    error = f"{where}: [model] init_from: {given}:"
    if (folder / EXPERIMENT_FILE).exists():  # a run folder
        model_dir, tokenizer_dir = folder / MODEL_DIR, folder / TOKENIZER_DIR
        if not (model_dir / "config.json").exists():
            raise ConfigError(f"{error} a run folder without a finished model/ (give one of its checkpoints/"
                              "checkpoint-N folders instead)")
    elif (folder / "config.json").exists():  # a model or checkpoint folder: its own tokenizer, else its run's
        model_dir = folder
        tokenizer_dir = Path(tokenizer_folder(folder))
    else:
        raise ConfigError(f"{error} no such run folder (model/ + {EXPERIMENT_FILE}) or model folder (config.json)")
    if not (model_dir / WEIGHTS_FILE).exists():
        raise ConfigError(f"{error} no {WEIGHTS_FILE} in {model_dir}")
    if not has_tokenizer(tokenizer_dir):
        raise ConfigError(f"{error} no tokenizer beside the weights (looked in {tokenizer_dir}); the run must read "
                          "the source's token ids")
    return Source(given, folder, model_dir, tokenizer_dir)


def plan_warm_start(source: Source, run_config: ConceptEncoderConfig, init_layer: int | None,
                    where: str) -> WarmStartPlan:
    """Match the source's tensors to the run's by name and shape; a misfit is one ConfigError line."""
    error = f"{where}: [model] init_from: {source.given}:"
    source_config = ConceptEncoderConfig.from_pretrained(source.model_dir)
    differ = [f"{name} differs (source {getattr(source_config, name)}, this run {getattr(run_config, name)})"
              for name in WIDTH_FIELDS if getattr(source_config, name) != getattr(run_config, name)]
    if differ:
        raise ConfigError(f"{error} {'; '.join(differ)}; a warm start keeps the widths and the vocabulary")

    with safe_open(str(source.model_dir / WEIGHTS_FILE), framework="pt") as weights:
        shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118 (not a dict)
    # run-style name -> file key; an encoder saved alone (AutoModel) has no `encoder.` prefix
    names = {key: key for key in shapes}
    if not any(key.startswith("encoder.") for key in shapes):
        names = {f"encoder.{key}": key for key in shapes}
    depth = source_config.num_unique_layers
    if run_config.weight_sharing and not source_config.weight_sharing:
        if init_layer is None:
            raise ConfigError(f"{error} a weight-shared run from a stacked source needs model.init_layer "
                              f"(which of its {depth} layers becomes the shared one)")
        if not init_layer < depth:
            raise ConfigError(f"{error} init_layer {init_layer} is outside the source's layers 0..{depth - 1}")
        names = shared_layer_state(names, init_layer)
    elif init_layer is not None:
        raise ConfigError(f"{error} model.init_layer picks a layer of a stacked source; this source is already "
                          "weight-shared (its one layer is taken as it is)")

    same_decoder = source_config.decoder_type == run_config.decoder_type
    loads, newly_initialised, skipped, misfit = {}, [], {}, {}
    for name, shape in _run_shapes(run_config).items():
        key = names.get(name)
        part = name.split(".")[0]
        if key is not None and shapes[key] == shape and (part != "decoder" or same_decoder):
            loads[name] = key
        elif part == "encoder":
            found = "not in the source" if key is None else f"shape {list(shapes[key])} in the source, {list(shape)} here"
            misfit.setdefault(_module(name), found)
        else:
            newly_initialised.append(name)
    used = set(loads.values())
    for name, key in names.items():
        if key in used:
            continue
        if name.startswith("encoder."):
            misfit.setdefault(_module(name), "in the source, not in this run")
        elif name.startswith("decoder.") and not same_decoder:
            skipped[key] = f"decoder_type {source_config.decoder_type} -> {run_config.decoder_type}"
        else:
            skipped[key] = "no tensor of that name and shape in this run"
    for key in sorted(set(shapes) - set(names.values())):  # stacked layers other than init_layer
        skipped[key] = f"init_layer {init_layer} is the layer taken"
    if misfit:
        listed = ", ".join(f"{module}: {why}" for module, why in list(misfit.items())[:4])
        more = f", and {len(misfit) - 4} more" if len(misfit) > 4 else ""
        raise ConfigError(f"{error} the encoder does not fit ({listed}{more}); a warm start takes the whole encoder, "
                          "so depth, layer type, positions and backbone must be the source's")
    return WarmStartPlan(source, init_layer, loads, newly_initialised, skipped)


def _module(name: str) -> str:
    """encoder.layers.3.cross_attn.to_q.weight -> encoder.layers.3 (misfits are listed per module)."""
    return ".".join(name.split(".")[:3])


def _own_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without tied copies (the head's projection is the word table: one tensor, one name)."""
    seen, own = set(), {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            own[name] = tensor
    return own


def _run_shapes(config: ConceptEncoderConfig) -> dict[str, tuple[int, ...]]:
    """The run's tensor shapes, from a model built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = ConceptEncoderForMaskedLM(config)
    return {name: tuple(tensor.shape) for name, tensor in _own_tensors(model).items()}


def apply_warm_start(model: ConceptEncoderForMaskedLM, plan: WarmStartPlan) -> dict:
    """Copy the planned source tensors into a freshly built model; returns the report (and logs its summary)."""
    with safe_open(str(plan.source.model_dir / WEIGHTS_FILE), framework="pt") as weights:
        state = {name: weights.get_tensor(key) for name, key in plan.loads.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    left = set(missing) & set(_own_tensors(model))  # tied copies are loaded through the tensor they share
    if unexpected or left != set(plan.newly_initialised):
        raise RuntimeError(f"warm start from {plan.source.model_dir}: the model does not match its plan "
                           f"(unexpected {unexpected}, left out {sorted(left ^ set(plan.newly_initialised))})")
    logger.info(plan.summary())
    return plan.report()
