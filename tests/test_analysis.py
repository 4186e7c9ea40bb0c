"""Concept diagnostics on hand-built matrices, attention usage, probing a real model, decision gates."""

import math
import re
from pathlib import Path

import pytest
import torch

from concept_encoder import ConceptEncoderModel
from concept_encoder.analysis import ProbeError, attention_usage, concept_diagnostics, probe, read_probe_file
from concept_encoder.analysis.diagnostics import participation_ratio, rankme, sum_max_ratio
from concept_encoder.analysis.gates import evaluate_gates, load_gates
from concept_encoder.config import ConfigError

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
S, C, H = 6, 4, 16


def orthonormal(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(width, rows, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q.T  # [rows, width], orthonormal rows


def test_orthonormal_concepts_have_full_rank_and_no_similarity():
    concepts = torch.stack([orthonormal(C, H, seed) for seed in range(S)])  # a different basis per sample
    d = concept_diagnostics(concepts)
    assert d["effective_rank_per_sample"] == pytest.approx(C) and d["effective_rank_per_sample_fraction"] == pytest.approx(1)
    assert d["sum_max_rank_original"] <= C + 1e-9
    assert d["similarity_mean"] == pytest.approx(0, abs=1e-9) and d["similarity_max_any"] == pytest.approx(0, abs=1e-9)
    assert d["dominance_per_sample"] == pytest.approx(1 / C)


def test_identical_concepts_have_rank_one_and_similarity_one():
    vectors = torch.randn(S, 1, H).expand(S, C, H)  # every concept of a sample is the same vector
    d = concept_diagnostics(vectors)
    assert d["effective_rank_per_sample"] == pytest.approx(1, abs=1e-4)
    assert d["similarity_mean"] == pytest.approx(1) and d["similarity_max"] == pytest.approx(1)
    assert d["dominance_per_sample"] == pytest.approx(1, abs=1e-6)


def test_per_sample_collapse_that_the_global_rank_cannot_see():
    # each input collapses all C concepts onto one direction, but inputs use S different directions
    directions = orthonormal(S, H)
    collapsed_within = directions[:, None, :].expand(S, C, H)
    d = concept_diagnostics(collapsed_within)
    assert d["effective_rank_per_sample"] == pytest.approx(1, abs=1e-4)
    assert d["effective_rank_global"] == pytest.approx(S)
    assert d["static_concepts"] == 0  # each input moves every concept
    # the converse: full rank within each input, the same C directions for every input -> static concepts
    same_for_all = orthonormal(C, H)[None].expand(S, C, H)
    d = concept_diagnostics(same_for_all)
    assert d["effective_rank_per_sample"] == pytest.approx(C) and d["effective_rank_global"] == pytest.approx(C)
    assert d["static_concepts"] == C and d["static_concepts_fraction"] == 1.0
    assert verdict("static_concepts", d["static_concepts_fraction"]) == "fail"


def test_spectral_formulas_by_hand():
    assert rankme(torch.tensor([1.0, 1.0, 1.0, 1.0])).item() == pytest.approx(4)
    p = torch.tensor([3.0, 1.0]) / 4
    assert rankme(torch.tensor([3.0, 1.0])).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert sum_max_ratio(torch.tensor([4.0, 2.0, 2.0])).item() == pytest.approx(2.0)
    assert participation_ratio(torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == pytest.approx(2.0)
    assert participation_ratio(torch.tensor([4.0, 1.0])).item() == pytest.approx(25 / 17)


def test_dead_dimension_is_counted():
    concepts = torch.randn(S, C, H)
    concepts[..., 3] = 0.5  # never moves
    d = concept_diagnostics(concepts)
    assert d["dead_dimensions"] == 1 and d["dimension_std_min"] == pytest.approx(0, abs=1e-12)


def test_attention_usage_uniform_one_hot_and_padding():
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])  # 4 real tokens
    uniform = torch.zeros(1, 2, 2, 6)
    uniform[..., :4] = 0.25
    usage = attention_usage(uniform, mask)
    assert torch.allclose(usage["entropy"], torch.ones(1, 2, dtype=torch.float64))
    assert torch.allclose(usage["tokens_read"], torch.full((1, 2), 4.0, dtype=torch.float64))
    one_hot = torch.zeros(1, 2, 2, 6)
    one_hot[..., 1] = 1.0
    usage = attention_usage(one_hot, mask)
    assert torch.allclose(usage["entropy"], torch.zeros(1, 2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(usage["tokens_read"], torch.ones(1, 2, dtype=torch.float64))


def test_probe_of_a_real_model_is_padding_invariant(tokenizer, sentences):
    model = ConceptEncoderModel(tiny_config(tokenizer.vocab_size)).eval()
    together = probe(model, tokenizer, sentences, max_length=64, batch_size=16)  # one padded batch
    alone = probe(model, tokenizer, sentences, max_length=64, batch_size=1)  # no padding at all
    assert together["concepts"].shape == (16, 8, 64)
    for key, value in alone["diagnostics"].items():
        assert together["diagnostics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert 0 < together["diagnostics"]["attention_entropy"] <= 1
    assert len(together["entropy_by_step"]) == 2


def test_probe_file_errors(tmp_path):
    empty = tmp_path / "probe.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ProbeError, match=r"probe.txt: empty"):
        read_probe_file(empty)
    with pytest.raises(ProbeError, match="no such file"):
        read_probe_file(tmp_path / "missing.txt")


def verdict(gate_id: str, value: float, **facts) -> str:
    gates = [g for g in load_gates() if g.id == gate_id]
    (result,) = evaluate_gates(gates, {gates[0].metric: value}, facts)
    return result.verdict


@pytest.mark.parametrize("gate, value, expected", [
    ("gate1_rank", 0.51, "pass"), ("gate1_rank", 0.49, "partial"), ("gate1_rank", 0.24, "partial"),
    ("gate1_rank", 0.23, "fail"),
    ("runner_rank", 0.31, "partial"), ("runner_rank", 0.29, "fail"),
    ("static_concepts", 0.0, "pass"), ("static_concepts", 0.3, "partial"), ("static_concepts", 1.0, "fail"),
    ("similarity", 0.19, "pass"), ("similarity", 0.21, "partial"), ("similarity", 0.51, "fail"),
    ("dead_dimensions", 0.011, "pass"), ("dead_dimensions", 0.009, "fail"),
    ("gate1_stsb", 0.71, "pass"), ("gate1_stsb", 0.69, "fail"),
    ("gate2_stsb", 0.76, "pass"), ("gate2_stsb", 0.74, "fail"),
    ("gate2_mnli", 0.66, "pass"), ("gate2_mnli", 0.64, "fail"),
    ("sg1_qqp", 0.77, "pass"), ("sg1_qqp", 0.75, "fail"),
    ("sg1_zero_shot", 0.61, "pass"), ("sg1_zero_shot", 0.59, "fail"),
])
def test_gate_verdicts_either_side_of_each_threshold(gate, value, expected):
    assert verdict(gate, value) == expected


def test_gates_that_apply_only_to_some_runs_and_unmeasured_metrics():
    gates = load_gates()
    by_id = {v.gate.id: v for v in evaluate_gates(gates, {"finetune.stsb.pearson": 0.4}, {"objective": "mlm"})}
    assert "todo11_diffusion" not in by_id and "gate3_recursive" not in by_id
    assert by_id["gate1_rank"].verdict == "not measured" and by_id["gate1_stsb"].verdict == "fail"
    assert verdict("todo11_diffusion", 0.4, objective="diffusion") == "partial"
    assert verdict("gate3_recursive", 0.05, weight_sharing=True) == "pass"


def test_every_default_threshold_separates_two_verdicts():
    for gate in load_gates():
        for rule in gate.rules:
            if rule.above is None and rule.below is None:
                continue
            bound = rule.above + gate.noise if rule.above is not None else rule.below - gate.noise  # where it holds
            facts = dict(gate.applies_to)
            sides = {evaluate_gates([gate], {gate.metric: bound + s * 1e-6}, facts)[0].verdict for s in (-1, 1)}
            assert len(sides) == 2, (gate.id, bound)


def test_a_gain_within_the_noise_does_not_pass_gate3():
    assert verdict("gate3_recursive", 0.0017, weight_sharing=True) != "pass"  # the recursive contender's +0.17 points
    gate = next(g for g in load_gates() if g.id == "gate3_recursive")
    assert gate.compares and gate.noise_source.startswith("benchmarks/gate_noise.py")
    assert 0.0017 <= gate.noise  # the study's +0.17 points is within one seed-to-seed std of no gain


@pytest.mark.parametrize("gate, value, expected", [
    ("gate1_stsb", 0.703, "fail"), ("gate2_stsb", 0.753, "fail"),  # above the bound, inside its noise (0.006)
    ("todo11_diffusion", 0.503, "partial"), ("todo11_diffusion", 0.303, "fail"),
    ("gate3_recursive", 0.021, "fail"),  # above the pass bound 0.02, inside the noise 0.0017
])
def test_a_value_inside_the_noise_band_of_a_threshold_gets_the_lower_verdict(gate, value, expected):
    assert verdict(gate, value, objective="diffusion", weight_sharing=True) == expected


def test_noise_widens_above_and_below_bounds_of_a_gates_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  - {id: g, metric: analysis.x, noise: 0.05, noise_source: three seeds, rules: [\n"
                    "      {below: 0.2, verdict: pass}, {below: 0.5, verdict: partial}, {verdict: fail}]}\n")
    gates = load_gates(path)
    assert [evaluate_gates(gates, {"analysis.x": x})[0].verdict for x in (0.14, 0.16, 0.44, 0.46)] == [
        "pass", "partial", "partial", "fail"]


@pytest.mark.parametrize("entry, message", [
    ("{id: g, metric: analysis.gain, compares: true, rules: [{above: 0.02, verdict: pass}, {verdict: fail}]}",
     "gate g: its metric is a difference (compares: true), so it needs its seed-to-seed noise"),
    ("{id: g, metric: analysis.gain, compares: true, noise: 0.01, noise_source: seeds, rules: [{above: 0.0, verdict: pass}]}",
     "gate g: pass bound 0.0 of a difference does not exceed its noise 0.01"),
    ("{id: g, metric: analysis.x, noise: 0.01, rules: [{verdict: fail}]}", "gate g: noise 0.01 needs a noise_source"),
    ("{id: g, metric: analysis.x, noise: -1, noise_source: s, rules: [{verdict: fail}]}", "gate g: noise must be"),
    ("{id: g, metric: analysis.x, rules: [{verdict: fail, change: objective.regularisers}]}",
     "gate g: change must be a list"),
    ("{id: g, metric: analysis.x, rules: [{verdict: fail, change: [regularisers=vicreg]}]}",
     "gate g: change --set 'regularisers=vicreg'"),
    ("{id: g, metric: analysis.x, rules: [{verdict: fail, change: ['objetive.regularisers=[vicreg]']}]}",
     "gate g: change 'objetive.regularisers=[vicreg]': 'objetive' is not a config section"),
])
def test_a_gates_file_without_noise_for_a_difference_or_with_a_malformed_change_is_refused(tmp_path, entry, message):
    path = tmp_path / "gates.yaml"
    path.write_text(f"gates:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=re.escape(f"gates.yaml, {message}")):
        load_gates(path)


PLAN = [ROOT / "configs" / "plan" / name for name in ("perceiver_mlm_L6.yaml", "diffusion_L6.yaml", "recursive_k6.yaml")]


def plan_config_for(gate):
    """The L6 Perceiver-MLM plan config, or for a gate that applies only to some runs the first of the diffusion
    and recursive plan configs it applies to."""
    from concept_encoder.config import load_experiment
    from concept_encoder.registry.collect import run_facts

    for path in PLAN:
        facts = run_facts(load_experiment(path))
        if all(facts.get(key) == wanted for key, wanted in gate.applies_to):
            return path
    raise AssertionError(f"no plan config that {gate.id} applies to")


def test_every_gate_advice_with_a_change_is_a_valid_change_of_a_plan_config():
    import dataclasses

    from concept_encoder.config import load_experiment

    changed = 0
    for gate in load_gates():
        path = plan_config_for(gate)
        for rule in gate.rules:
            if rule.change:
                before, after = load_experiment(path), load_experiment(path, list(rule.change))
                assert dataclasses.asdict(after) != dataclasses.asdict(before), (gate.id, rule.change)  # a real change
                changed += 1
    assert changed >= 10  # every fail rule that names a regulariser, an objective or a model setting


def test_every_name_in_a_gates_next_step_exists():
    """Regulariser names are REGULARISERS keys written as such (`t_regs`, not t_regs_mst or VICReg); every other
    snake_case word is a config key."""
    import dataclasses

    from concept_encoder import ConceptEncoderConfig
    from concept_encoder.config import SECTION_CLASSES
    from concept_encoder.objectives.regularisers import REGULARISERS

    keys = {f.name for cls in SECTION_CLASSES.values() for f in dataclasses.fields(cls)}
    keys |= set(ConceptEncoderConfig().to_dict())
    for gate in load_gates():
        for rule in gate.rules:
            quoted = re.findall(r"`([^`]+)`", rule.next)
            assert set(quoted) <= set(REGULARISERS), (gate.id, rule.next)
            for word in re.findall(r"[A-Za-z0-9_]+", rule.next):
                if word.lower() in REGULARISERS:
                    assert f"`{word}`" in rule.next, (gate.id, word, "a regulariser: its exact name, in backticks")
                if "_" in word:
                    assert word in REGULARISERS or word in keys, (gate.id, word, "no such regulariser or config key")


def test_bad_gates_file_is_a_clear_error(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  - {id: g, metric: analysis.x, rules: [{above: 1, verdict: great}]}\n")
    with pytest.raises(ConfigError, match=r"gates.yaml, gate g: verdict 'great'"):
        load_gates(path)
    path.write_text("gates:\n  - {id: g, metric: analysis.x, rule: []}\n")
    with pytest.raises(ConfigError, match=r"gate g: needs id, metric, rules"):
        load_gates(path)


def test_k_sweep_of_a_recursive_model_writes_points_gain_and_plot(tmp_path, tokenizer, capsys):
    import json

    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=3)
                              ).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert main(["k-sweep", str(model_dir), "--ks", "1", "6", "12", "--tasks", "stsb"]) == 0
    record = json.loads((model_dir / "analysis" / "k_sweep.json").read_text())
    assert record["trained_k"] == 3 and list(record["points"]) == ["1", "6", "12"]
    assert record["gain_12_over_6"] == pytest.approx(record["points"]["12"] - record["points"]["6"])
    assert len(set(record["points"].values())) == 3  # K changes the encoder's output
    assert (model_dir / "analysis" / "k_sweep.png").exists()
    stacked = tmp_path / "stacked"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(stacked)
    tokenizer.save_pretrained(stacked)
    assert main(["k-sweep", str(stacked), "--tasks", "stsb"]) == 2
    assert "not a weight-shared" in capsys.readouterr().err


def test_k_sweep_fine_tunes_at_every_k_by_the_evaluation_protocol(tmp_path, tokenizer, capsys):
    """Issue 26: STS-B fine-tuned at each K beside the zero-shot rows. At the trained K the sweep's number is the
    one `evaluate` gives with the same settings and seed; at another K the model runs K steps, so it differs."""
    import json

    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size, weight_sharing=True, num_iterations=3)
                              ).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    quick = ["--config", "configs/eval/study.yaml", "--seeds", "1", "--max-train-examples", "96",
             "--max-eval-examples", "96"]
    assert main(["k-sweep", str(model_dir), "--ks", "1", "3", "--tasks", "stsb", "--finetune", "stsb", *quick]) == 0
    assert "stsb fine-tuned spearman" in capsys.readouterr().out
    finetuned = json.loads((model_dir / "analysis" / "k_sweep.json").read_text())["finetuned"]["stsb"]
    assert set(finetuned) == {"1", "3"} and set(finetuned["3"]) == {"spearman", "heldout_spearman"}
    assert finetuned["1"]["spearman"] != finetuned["3"]["spearman"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the K folders are gone
    assert main(["evaluate", str(model_dir), "--tasks", "stsb", "--output-dir", str(tmp_path / "eval"), *quick]) == 0
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())["tasks"]["stsb"]["summary"]
    assert finetuned["3"]["spearman"] == pytest.approx(evaluated["spearman"]["mean"], abs=1e-9)
    assert finetuned["3"]["heldout_spearman"] == pytest.approx(evaluated["heldout_spearman"]["mean"], abs=1e-9)
    # a zero-shot-only rerun (another task, K = 1 dropped, K = 2 never fine-tuned) keeps the fine-tuned rows of the
    # Ks it still sweeps, and shows "–" where a K has none
    capsys.readouterr()
    assert main(["k-sweep", str(model_dir), "--ks", "2", "3", "--tasks", "sick-r"]) == 0
    rerun = json.loads((model_dir / "analysis" / "k_sweep.json").read_text())
    assert rerun["finetuned"] == {"stsb": {"3": finetuned["3"]}} and list(rerun["by_task"]) == ["sick-r"]
    assert rerun["finetune_seeds"] == [1]
    printed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["2"], ["3"])}
    assert "–" in printed["2"] and f"{100 * finetuned['3']['spearman']:.2f}" in printed["3"]


def test_analyze_verb_on_a_model_folder_with_a_probe_file(tmp_path, tokenizer, sentences, capsys):
    import json

    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    model_dir = tmp_path / "model"
    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    probe_file = tmp_path / "probe.txt"
    probe_file.write_text("\n".join(sentences))
    assert main(["analyze", str(model_dir)]) == 2  # no run folder, so no corpus: a probe file is needed
    assert "give a probe file" in capsys.readouterr().err
    assert main(["analyze", str(model_dir), "--probe-file", str(probe_file)]) == 0
    record = json.loads((model_dir / "analysis" / "analysis.json").read_text())
    assert record["probe"]["texts"] == 16 and record["diagnostics"]["num_concepts"] == 8
    assert (model_dir / "analysis" / record["plots"]["spectrum"]).exists()


def test_the_attention_picture_shows_each_concepts_map_over_the_probe_tokens(tmp_path, tokenizer, sentences,
                                                                             monkeypatch):
    """One C x N panel per probe text from the last concept layer, tokens as words: the maps drawn are the
    encoder's own cross-attention, averaged over heads."""
    from concept_encoder import ConceptEncoderModel
    from concept_encoder.analysis import analyze as analyze_module

    encoder = ConceptEncoderModel(tiny_config(tokenizer.vocab_size)).eval()
    drawn = {}
    real_plot = analyze_module.plots.concept_attention
    monkeypatch.setattr(analyze_module.plots, "concept_attention",
                        lambda maps, words, path: drawn.update(maps=maps, words=words) or real_plot(maps, words, path))
    path = analyze_module.attention_picture(encoder, tokenizer, sentences, tmp_path / "a.png", count=2)
    assert path.exists() and path.stat().st_size > 1000
    ids = tokenizer(sentences[0], return_tensors="pt")
    with torch.no_grad():
        expected = encoder(ids["input_ids"], output_attentions=True).cross_attentions[-1][0].mean(0)
    assert len(drawn["maps"]) == 2 and torch.allclose(drawn["maps"][0], expected, atol=1e-6)
    assert drawn["words"][0] == tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    assert torch.allclose(drawn["maps"][0].sum(-1), torch.ones(8), atol=1e-5)  # each concept's map sums to one
