"""Every shipped experiment config validates; every micro twin trains on the local corpus and its loss falls."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from concept_encoder.cli import main
from concept_encoder.config import ConfigError, YamlDumper, load_experiment, parse_yaml, read_experiment_mapping

from .test_pretrain import history

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = (sorted((ROOT / "configs").glob("demo.yaml")) + sorted((ROOT / "configs" / "plan").glob("*.yaml"))
               + sorted((ROOT / "configs" / "pilot").glob("*.yaml"))
               + sorted(p for p in (ROOT / "configs" / "study").glob("*.yaml")
                        if "contenders" not in read_experiment_mapping(p))  # a study file lists contenders
               + sorted((ROOT / "configs" / "study" / "v2").glob("[!_]*.yaml")))  # _*.yaml: bases only
MICRO = sorted((ROOT / "configs" / "micro").glob("[!_]*.yaml"))  # _scale.yaml: the shared micro scale, a base only
# warm-started twins need a source run first: tests/test_init_from.py trains one and runs them from it
STANDALONE_MICRO = [p for p in MICRO if "init_from" not in read_experiment_mapping(p).get("model", {})]


@pytest.mark.parametrize("path", EXPERIMENTS + MICRO, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    load_experiment(path)


def test_every_plan_config_has_a_micro_twin():
    plan = {p.name for p in (ROOT / "configs" / "plan").glob("*.yaml")} - {
        "perceiver_mlm_L2.yaml", "posonly_mlm_L2.yaml", "posonly_mlm_L6.yaml",
        # Hub-only backbones; their offline stand-ins (MiniLM, a tiny Llama on disk) are tested instead
        "smollm2_backbone_L6.yaml", "bert_base_backbone_L6.yaml"}
    assert plan == {p.name for p in MICRO}


@pytest.mark.parametrize("path", STANDALONE_MICRO, ids=lambda p: p.stem)
def test_micro_twin_trains_and_its_loss_falls(tmp_path, path):
    steps = ["training.max_steps=25", "training.logging_steps=1", "training.eval_steps=5",
             "training.save_steps=25", "training.run_name=micro"]
    args = ["pretrain", str(path), "--output-dir", str(tmp_path)]
    for step in steps:
        args += ["--set", step]
    assert main(args) == 0
    logs = history(tmp_path / "micro", 25)
    if path.stem == "simcse_L6":  # no labels, so no eval loss: the training loss
        values = [e["loss_simcse"] for e in logs if "loss" in e]
        assert np.mean(values[-5:]) < np.mean(values[:5]), values
    else:  # held-out loss under fixed masks / noise: noise-free to compare
        values = [e["eval_loss"] for e in logs if "eval_loss" in e]
        assert values[-1] < values[0], values


@pytest.mark.parametrize("path", MICRO, ids=lambda p: p.stem)
def test_a_micro_twin_extends_its_plan_config_and_states_only_what_differs(path, tmp_path):
    """Its bases are its plan config and the shared `_scale.yaml`, and every key it sets changes the resolved
    config: a key that repeated its bases would hide which settings are the twin's own."""
    raw = parse_yaml(path.read_text())
    assert raw.pop("base") == [f"../plan/{path.name}", "_scale.yaml"]
    bases = [str((path.parent / name).resolve()) for name in (f"../plan/{path.name}", "_scale.yaml")]
    resolved = load_experiment(path).to_dict()
    for section, body in raw.items():
        for key in body:
            trial = tmp_path / f"{section}.{key}.yaml"
            trial.write_text(yaml.dump({"base": bases, **raw, section: {k: v for k, v in body.items() if k != key}},
                                       Dumper=YamlDumper))
            try:
                changed = load_experiment(trial).to_dict() != resolved
            except ConfigError:  # without the key the twin is not even valid: it is needed
                changed = True
            assert changed, f"{path.name}: {section}.{key} repeats its bases"
