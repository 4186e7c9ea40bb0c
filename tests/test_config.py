import pytest
from transformers import AutoConfig

from concept_encoder import ConceptEncoderConfig

from .conftest import TINY


def test_defaults_build_and_derived_values():
    config = ConceptEncoderConfig()
    assert config.token_dim == config.hidden_size  # None resolves to H
    assert config.initializer_range == 0.02
    assert config.encoder_steps == config.num_hidden_layers
    recursive = ConceptEncoderConfig(weight_sharing=True, num_iterations=6, num_hidden_layers=4)
    assert recursive.encoder_steps == 6 and recursive.num_unique_layers == 1
    assert recursive.short_name == "H512L6C128"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"hidden_size": 100, "num_attention_heads": 8}, "hidden_size"),
        ({"num_iterations": 4}, "num_iterations"),  # iterations without weight sharing
        ({"weight_sharing": True, "num_iterations": 0}, "num_iterations"),
        ({"layer_type": "transformer"}, "layer_type"),
        ({"decoder_type": "seq2seq"}, "decoder_type"),
        ({"ffn_type": "swiglu"}, "ffn_type"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type"),
        ({"concept_position_type": "random"}, "concept_position_type"),
        ({"num_concepts": 0}, "num_concepts"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"mask_token_id": 40000}, "mask_token_id"),
        ({"hidden_size": 72, "num_attention_heads": 8, "position_embedding_type": "rotary"}, "position_embedding_type"),
    ],
)
def test_impossible_combinations_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"ConceptEncoderConfig\.{field}"):
        ConceptEncoderConfig(**overrides)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"num_concepts": "128"}, "num_concepts"),
        ({"num_concepts": 12.0}, "num_concepts"),
        ({"weight_sharing": 1}, "weight_sharing"),
        ({"num_hidden_layers": True}, "num_hidden_layers"),
        ({"layer_type": None}, "layer_type"),
    ],
)
def test_ill_typed_values_raise_naming_the_field(overrides, field):
    with pytest.raises(TypeError, match=rf"ConceptEncoderConfig\.{field}"):
        ConceptEncoderConfig(**overrides)


def test_unknown_key_is_an_error():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_concept'\]"):
        ConceptEncoderConfig(num_concept=64)


def test_json_round_trip_and_auto_config(tmp_path):
    config = ConceptEncoderConfig(**TINY, layer_type="bixt", token_dim=32, decoder_type="position_only")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ConceptEncoderConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_saved_config_with_a_bad_field_fails_on_load(tmp_path):
    config = ConceptEncoderConfig(**TINY)
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"layer_type": "stacked"', '"layer_type": "stackd"')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match="layer_type"):
        AutoConfig.from_pretrained(tmp_path)
