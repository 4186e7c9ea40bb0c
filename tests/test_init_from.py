"""Warm start (`model.init_from`, `model.init_layer`): a micro MLM run seeds TSDAE, diffusion and recursive runs."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from concept_encoder.cli import main
from concept_encoder.config import load_experiment
from concept_encoder.data import resolve_data_dir
from concept_encoder.modeling import ConceptEncoderForMaskedLM
from concept_encoder.registry.collect import artefacts
from concept_encoder.training.pretrain import prepare
from concept_encoder.training.warm_start import apply_warm_start

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "configs" / "micro"
QUIET = ["analysis.during_training=false", "training.logging_steps=1"]


def pretrain_args(config: Path, output: Path, *overrides: str) -> list[str]:
    args = ["pretrain", str(config), "--output-dir", str(output)]
    for override in (*QUIET, *overrides):
        args += ["--set", override]
    return args


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A micro Perceiver-MLM run (2 stacked layers, its own WordPiece tokenizer), trained for 6 steps."""
    output = tmp_path_factory.mktemp("source")
    assert main(pretrain_args(MICRO / "perceiver_mlm_L6.yaml", output, "training.max_steps=6", "training.eval_steps=3",
                              "training.save_steps=6", "training.run_name=mlm")) == 0
    return output / "mlm"


def encoder_tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


@pytest.mark.parametrize("twin", ["tsdae_from_mlm_L6", "diffusion_from_mlm_L6"])
def test_micro_twin_starts_from_the_source_encoder_with_a_new_decoder(source, tmp_path, twin):
    """A tiny learning rate keeps the weights where the warm start put them: the run's final encoder is the
    source's, its decoder is not (position-only and diffusion decoders are new after a Perceiver-IO MLM)."""
    assert main(pretrain_args(MICRO / f"{twin}.yaml", tmp_path, f"model.init_from={source}", "training.max_steps=4",
                              "training.eval_steps=2", "training.save_steps=4", "training.learning_rate=1e-9",
                              "training.run_name=warm")) == 0
    run = tmp_path / "warm"
    before, after = load_file(source / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert encoder_tensors(after).keys() == encoder_tensors(before).keys()
    for key, value in encoder_tensors(after).items():
        torch.testing.assert_close(value, before[key], atol=1e-6, rtol=0, msg=key)
    shared = [k for k in after if k.startswith("decoder.") and k in before and after[k].shape == before[k].shape]
    assert shared and not any(torch.allclose(after[k], before[k]) for k in shared if "norm" not in k)

    report = json.loads((run / "init_from.json").read_text())
    assert report["source"] == str(source.resolve()) and report["init_layer"] is None
    assert report["counts"]["loaded"]["encoder"] == len(encoder_tensors(before))
    assert "decoder" not in report["counts"]["loaded"] and report["counts"]["loaded"]["lm_head"] > 0
    assert {k for k in after if k.startswith("decoder.")} == set(report["newly_initialised"])
    assert all("decoder_type perceiver_io" in report["skipped"][k] for k in before if k.startswith("decoder."))
    assert json.loads((run / "train_summary.json").read_text())["init_from"] == report
    assert yaml.safe_load((run / "experiment.yaml").read_text())["model"]["init_from"] == str(source)
    assert artefacts(run)["init_from"] == str(source.resolve())  # what the registry row records
    # the source's token ids: its tokenizer, not a newly trained one
    assert (run / "tokenizer" / "tokenizer.json").read_text() == (source / "tokenizer" / "tokenizer.json").read_text()


@pytest.mark.parametrize("config, layer", [("tsdae_from_mlm_L6", None), ("recursive_k6", 0), ("recursive_k6", 1)])
def test_warm_start_copies_every_encoder_tensor_exactly(source, config, layer):
    """Stacked -> stacked takes every tensor as it is; stacked -> recursive maps source layer i onto the shared layer."""
    overrides = [f"model.init_from={source}"] + ([f"model.init_layer={layer}"] if layer is not None else [])
    prepared = prepare(load_experiment(MICRO / f"{config}.yaml", overrides), resolve_data_dir(), source.parent / ".cache")
    model = ConceptEncoderForMaskedLM(prepared.model_config)
    report = apply_warm_start(model, prepared.warm_start)
    before = load_file(source / "model" / "model.safetensors")
    for key, value in encoder_tensors(model.state_dict()).items():
        origin = key.replace("encoder.layers.0.", f"encoder.layers.{layer}.") if layer is not None else key
        torch.testing.assert_close(value, before[origin], atol=0, rtol=0, msg=key)
    if layer is None:
        return
    assert model.config.weight_sharing and model.config.encoder_steps == 6 and report["init_layer"] == layer
    assert report["newly_initialised"] == []  # same decoder type: decoder and head come along
    other = {k for k in before if k.startswith(f"encoder.layers.{1 - layer}.")}
    assert other and {k for k, why in report["skipped"].items() if "init_layer" in why} == other


def test_warm_start_misfits_fail_before_the_run_folder_exists(source, tmp_path, capsys):
    bad_vocab = tmp_path / "vocab_1000"  # a model folder whose vocabulary is not its tokenizer's
    ConceptEncoderForMaskedLM(tiny_config(1000)).save_pretrained(bad_vocab)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / "tokenizer" / name, bad_vocab / name)
    capsys.readouterr()  # the save's progress bar
    cases = [
        ("tsdae_from_mlm_L6", ["model.hidden_size=128"], "hidden_size differs (source 64, this run 128)"),
        ("tsdae_from_mlm_L6", ["model.num_concepts=16"], "num_concepts differs (source 8, this run 16)"),
        ("diffusion_L6", [], "the encoder does not fit (encoder.layers.2: not in the source"),  # 6 layers from 2
        ("recursive_k6", [], "a weight-shared run from a stacked source needs model.init_layer"),
        ("recursive_k6", ["model.init_layer=2"], "init_layer 2 is outside the source's layers 0..1"),
        ("tsdae_from_mlm_L6", [f"model.init_from={bad_vocab}"], "vocab_size differs (source 1000, this run"),
        ("tsdae_from_mlm_L6", [f"model.init_from={tmp_path / 'nowhere'}"], "no such run folder"),
    ]
    for config, overrides, message in cases:
        args = pretrain_args(MICRO / f"{config}.yaml", tmp_path / "runs", f"model.init_from={source}", *overrides,
                             "training.run_name=misfit")
        assert main(args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "[model] init_" in err[0], (message, err)
        assert not (tmp_path / "runs" / "misfit").exists()


def test_init_layer_needs_a_source_and_a_weight_shared_run(tmp_path, capsys):
    assert main(pretrain_args(MICRO / "recursive_k6.yaml", tmp_path, "model.init_layer=1")) == 2
    assert "[model] init_layer: picks a layer of the model.init_from source" in capsys.readouterr().err
    assert main(pretrain_args(MICRO / "perceiver_mlm_L6.yaml", tmp_path, "model.init_from=runs/x",
                              "model.init_layer=1")) == 2
    assert "[model] init_layer: picks the source layer" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
