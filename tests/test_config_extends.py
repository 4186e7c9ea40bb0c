"""`base:` lets an experiment file extend another and state only what differs."""

import dataclasses
import re
from pathlib import Path

import pytest

from concept_encoder.config import ConfigError, load_experiment

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "configs" / "plan" / "diffusion_L6.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_child_merges_over_its_base_section_by_section(tmp_path):
    base = write(tmp_path / "plan" / "base.yaml", f"base: {PLAN}\n")  # an absolute base, then a relative one
    child = write(tmp_path / "micro" / "child.yaml", """base: ../plan/base.yaml
model: {hidden_size: 64, num_concepts: 8, num_attention_heads: 4, intermediate_size: 128, max_position_embeddings: 64}
data:
  corpus: [wikitext/wiki.valid.raw.gz]
  tokenizer: !default
  train_tokenizer: wordpiece
  num_proc: !default
  block_size: 64
  max_validation_blocks: null
training: {max_steps: 20}
""")
    plan, extended = load_experiment(PLAN), load_experiment(child)
    assert load_experiment(base).to_dict() == plan.to_dict()
    assert extended.model.hidden_size == 64 and extended.model.num_decoder_layers == plan.model.num_decoder_layers
    assert extended.model.diffusion_mixing == plan.model.diffusion_mixing  # untouched keys come from the base
    defaults = {f.name: f.default for f in dataclasses.fields(extended.data)}
    assert plan.data.num_proc != defaults["num_proc"] and extended.data.num_proc == defaults["num_proc"]  # null: default
    assert extended.data.train_tokenizer == "wordpiece" and extended.data.tokenizer == defaults["tokenizer"]
    assert extended.data.max_validation_blocks is None  # null is None, as in any file; only !default removes
    assert extended.training.max_steps == 20 and extended.training.learning_rate == plan.training.learning_rate
    assert extended.objective == plan.objective


def test_overrides_apply_after_the_merge(tmp_path):
    child = write(tmp_path / "child.yaml", f"base: {PLAN}\ntraining: {{max_steps: 20}}\n")
    assert load_experiment(child, ["training.max_steps=5"]).training.max_steps == 5


@pytest.mark.parametrize(("text", "message"), [
    ("base: missing.yaml\n", "base 'missing.yaml': no such config file"),
    ("base: {a: 1}\n", "base must be the path (or a list of paths) of the configs it extends"),
    ("base: []\n", "base must be the path"),
    ("base: loop.yaml\n", "extends itself"),
])
def test_a_bad_base_names_the_file(tmp_path, text, message):
    path = write(tmp_path / "loop.yaml", text)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_experiment(path)
    assert str(path) in str(error.value)


def test_an_unknown_key_in_a_child_is_still_an_error(tmp_path):
    child = write(tmp_path / "child.yaml", f"base: {PLAN}\ntraining: {{max_stepz: 20}}\n")
    with pytest.raises(ConfigError, match="max_stepz"):
        load_experiment(child)


def test_a_list_of_bases_merges_left_to_right(tmp_path):
    """How the micro twins are written: the plan config, then the shared micro scale, then the twin's own keys."""
    write(tmp_path / "scale.yaml", "training: {max_steps: 30, learning_rate: 0.002, warmup_steps: !default ''}\n")
    child = write(tmp_path / "child.yaml", f"base: [{PLAN}, scale.yaml]\ntraining: {{max_steps: 10}}\n")
    plan, extended = load_experiment(PLAN), load_experiment(child)
    assert (extended.training.max_steps, extended.training.learning_rate) == (10, 0.002)
    defaults = {f.name: f.default for f in dataclasses.fields(extended.training)}
    assert plan.training.warmup_steps != defaults["warmup_steps"] == extended.training.warmup_steps
