"""Composite objective: weighting formulas, Kendall-Gal bounds, SimCSE, NaN guard, micro runs whose loss falls."""

import math

import numpy as np
import pytest
import torch

from concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.cli import main
from concept_encoder.config import ConfigError, load_experiment
from concept_encoder.objectives import LossWeighting, ObjectiveLoss, simcse_loss
from concept_encoder.objectives.composite import cut_off_tokens

from .conftest import tiny_config
from .test_masked_lm import mlm_inputs
from .test_pretrain import history, write_config


def test_fixed_weighting_with_warmup_ramp():
    weighting = LossWeighting(["task", "variance"], {"variance": 0.2}, "fixed", warmup_steps=10)
    losses = {"task": torch.tensor(3.0), "variance": torch.tensor(5.0)}
    total, weights = weighting(losses, step=5)
    assert total.item() == pytest.approx(3.0 + 0.5 * 0.2 * 5.0) and weights == {"task": 1.0, "variance": 0.1}
    assert weighting(losses, step=20)[0].item() == pytest.approx(3.0 + 0.2 * 5.0)


def test_kendall_gal_formula_and_bounds():
    weighting = LossWeighting(["task", "uniformity"], {}, "kendall_gal", log_variance_bounds=(-2.0, 2.0))
    assert torch.allclose(weighting.log_variances(), torch.zeros(2), atol=1e-6)  # starts at s = 0, weight 1/2
    losses = {"task": torch.tensor(4.0), "uniformity": torch.tensor(-3.0)}
    total, weights = weighting(losses, step=0)
    assert total.item() == pytest.approx(0.5 * 4.0 - 0.5 * 3.0) and weights["task"] == pytest.approx(0.5)
    with torch.no_grad():
        weighting.raw.copy_(torch.tensor([50.0, -50.0]))  # pushed to the ends of the range
    total, weights = weighting(losses, step=0)
    assert weights["task"] == pytest.approx(0.5 * math.exp(-2.0))  # the documented floor
    assert total.item() == pytest.approx(0.5 * math.exp(-2) * 4.0 + 1.0 + 0.5 * math.exp(2) * -3.0 - 1.0)


def test_simcse_loss_by_hand():
    z = torch.eye(3)
    assert simcse_loss(z, z, temperature=1.0).item() == pytest.approx(-math.log(math.e / (math.e + 2)))
    assert simcse_loss(z, z, temperature=0.01).item() < 1e-6  # perfect alignment, orthogonal negatives


def test_one_forward_gives_two_dropout_views(tokenizer, batch):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).train()
    objective = ObjectiveLoss(contrastive_weight=1.0, regularisers=["orthogonality"])
    inputs = mlm_inputs(tokenizer, batch)
    total, values, weights = objective(model, inputs, step=0)
    total.backward()
    assert set(values) == {"task", "orthogonality", "simcse"} and 0 < values["simcse"] < math.log(16) + 1
    assert all(p.grad is not None for p in model.encoder.parameters())
    model.eval()  # without dropout the two views agree and the task loss equals the plain forward's
    with torch.no_grad():
        _, values, _ = objective(model, inputs, step=0)
        plain = model(**inputs).loss.item()
    assert values["task"] == pytest.approx(plain, rel=1e-5)


def test_token_cutoff_hides_a_share_of_visible_tokens_and_keeps_one():
    torch.manual_seed(0)
    mask = torch.ones(64, 100, dtype=torch.long)
    mask[:, 60:] = 0  # padding stays hidden
    mask[0, 1:] = 0  # a one-token text keeps its token whatever the rate
    cut = cut_off_tokens(mask, rate=0.2)
    assert cut.dtype == mask.dtype and not (cut.bool() & ~mask.bool()).any()
    assert cut[0].tolist() == mask[0].tolist()
    assert 1 - cut[1:].sum() / mask[1:].sum() == pytest.approx(0.2, abs=0.02)
    assert (cut_off_tokens(mask, rate=0.999).sum(dim=1) >= 1).all()


def test_cutoff_makes_the_second_view_differ_but_not_the_task(tokenizer, batch):
    # training mode without dropout: only the cutoff tells the two views apart
    config = tiny_config(tokenizer.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ConceptEncoderForMaskedLM(config).train()
    inputs = mlm_inputs(tokenizer, batch)
    inputs.pop("attention_mask", None)  # as packed blocks come: the cutoff must still reach the second view
    with torch.no_grad():
        _, plain, _ = ObjectiveLoss(contrastive_weight=1.0, contrastive_temperature=0.01)(model, inputs, step=0)
        _, cut, _ = ObjectiveLoss(contrastive_weight=1.0, contrastive_temperature=0.01,
                                  contrastive_cutoff=0.5)(model, inputs, step=0)
    assert cut["task"] == pytest.approx(plain["task"], rel=1e-5)
    assert cut["simcse"] > plain["simcse"] + 1e-3
    model.eval()  # evaluation: no cutoff, so the validation loss is the same at every evaluation
    with torch.no_grad():
        _, evaluated, _ = ObjectiveLoss(contrastive_weight=1.0, contrastive_temperature=0.01,
                                        contrastive_cutoff=0.5)(model, inputs, step=0)
    assert evaluated["simcse"] == pytest.approx(plain["simcse"], rel=1e-5)


def test_non_finite_component_stops_with_its_name(tokenizer, batch):
    model = ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size))
    with torch.no_grad():
        model.encoder.concepts.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="'task'"):
        ObjectiveLoss(regularisers=["variance"])(model, mlm_inputs(tokenizer, batch), step=3)


@pytest.mark.parametrize("change, message", [
    ({"regularisers": ["orthogonal"]}, "unknown ['orthogonal']"),
    ({"regulariser_weight": -0.1}, "regulariser_weight: must be a finite number >= 0"),
    ({"contrastive_weight": float("nan")}, "contrastive_weight: must be a finite number >= 0"),
    ({"weighting": "learnable"}, "weighting"),
    ({"contrastive_cutoff": 1.0}, "contrastive_cutoff: must be in"),
    ({"contrastive_cutoff": 0.2}, "contrastive_cutoff: cuts tokens from the second SimCSE view"),
])
def test_bad_objective_configs(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_experiment(write_config(tmp_path, objective=change))


def test_per_sample_regularisers_need_two_concepts(tmp_path):
    one_concept = {"regularisers": ["combined"]}
    with pytest.raises(ConfigError, match="num_concepts is 1"):
        load_experiment(write_config(tmp_path, model={"num_concepts": 1}, objective=one_concept))
    # over the batch, one concept per input still gives B vectors to compare
    load_experiment(write_config(tmp_path, model={"num_concepts": 1},
                                 objective={**one_concept, "regulariser_scope": "batch"}))


@pytest.mark.parametrize("objective", [
    {"regularisers": ["combined"], "regulariser_weight": 0.1},
    {"regularisers": ["vicreg", "t_regs"], "weighting": "kendall_gal", "contrastive_weight": 0.1},
    {"name": "simcse"},
])
def test_micro_runs_loss_falls_and_components_are_logged(tmp_path, objective):
    config = write_config(tmp_path, objective=objective, training={"max_steps": 30, "save_steps": 30, "eval_steps": 30})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    logs = [e for e in history(tmp_path / "runs" / "micro", 30) if "loss" in e]
    key = "loss_simcse" if objective.get("name") == "simcse" else "loss_task"
    values = [e[key] for e in logs]
    assert np.mean(values[-5:]) < np.mean(values[:5])
    for name in objective.get("regularisers", []):
        assert all(f"loss_{name}" in e and f"weight_{name}" in e for e in logs)
    if objective.get("weighting") == "kendall_gal":
        assert min(e["weight_task"] for e in logs) >= 0.5 * math.exp(-2.0)  # the floor over the run


def test_a_non_finite_run_stops_and_leaves_only_good_checkpoints(tmp_path, capsys):
    """An exploding learning rate: the run stops with one error line naming what broke, and every
    checkpoint left on disk is complete with finite weights."""
    from safetensors.torch import load_file

    config = write_config(tmp_path, training={"max_steps": 40, "save_steps": 1, "eval_steps": 100, "learning_rate": 1e4,
                                              "max_grad_norm": 1e9, "warmup_steps": 0, "save_total_limit": 100})
    assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "loss component 'task' is" in err or "non-finite parameters" in err
    run = tmp_path / "runs" / "micro"
    assert not (run / "train_summary.json").exists()
    for checkpoint in (run / "checkpoints").iterdir():
        assert (checkpoint / "trainer_state.json").exists()
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
