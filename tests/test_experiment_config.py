"""The experiment config is parsed once into typed sections: `model` is a ConceptEncoderConfig, `check()` holds
every cross-section rule (before any data is read), `resolve(tokenizer)` fixes what the tokenizer decides."""

import re
from pathlib import Path

import pytest
import yaml

from concept_encoder import ConceptEncoderConfig
from concept_encoder.config import ConfigError, load_experiment

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "configs" / "micro" / "perceiver_mlm_L6.yaml"


def test_the_model_section_is_a_typed_config_and_the_record_round_trips(tmp_path):
    experiment = load_experiment(MICRO)
    assert isinstance(experiment.model, ConceptEncoderConfig) and experiment.model.hidden_size == 64
    record = tmp_path / "experiment.yaml"
    record.write_text(yaml.safe_dump(experiment.to_dict()))
    again = load_experiment(record)
    assert again.to_dict() == experiment.to_dict() and again.model.to_dict() == experiment.model.to_dict()
    assert "vocab_size" not in experiment.to_dict()["model"]  # the tokenizer sets it: the record says what the file set


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.block_size=128"], "[data] block_size=128 is above [model] max_position_embeddings=64"),
    (["model.backbone_name=sentence-transformers/all-MiniLM-L6-v2", "model.backbone_layers=2"],
     "[data] train_tokenizer: a backbone comes with its tokenizer"),
    (["objective.name=simcse", "model.deep_supervision_segments=2", "model.weight_sharing=true",
      "model.num_iterations=2"], "deep_supervision_segments: objective simcse decodes nothing"),
    (["objective.name=diffusion"], "objective diffusion and decoder_type diffusion go together"),
    (["analysis.batch_size=1"], "[analysis] batch_size: must be at least 2"),
])
def test_cross_section_rules_fail_at_load_before_any_data_is_read(overrides, message):
    """The corpus is a file that does not exist: the rule must fire first, from the config alone."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(MICRO, ["data.corpus=[no/such/file.txt]", *overrides])


def test_resolve_takes_vocabulary_and_special_ids_from_the_tokenizer(tokenizer):
    experiment = load_experiment(MICRO)
    config = experiment.resolve(tokenizer)
    assert (config.vocab_size, config.mask_token_id, config.pad_token_id) == (
        len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id)
    assert config.hidden_size == experiment.model.hidden_size
    disagreeing = load_experiment(MICRO, [f"model.vocab_size={len(tokenizer) + 1}"])
    with pytest.raises(ConfigError, match="vocab_size=30523 disagrees with the tokenizer"):
        disagreeing.resolve(tokenizer)
