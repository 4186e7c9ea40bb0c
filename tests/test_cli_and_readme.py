"""The README's Python example runs as written; the CLI validates configs before any compute."""

import re
from pathlib import Path

import pytest

from concept_encoder.cli import main
from concept_encoder.config import ConfigError, build_model_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert tuple(namespace["out"].concepts.shape) == (2, 32, 256)
    assert (tmp_path / "my-encoder" / "model.safetensors").exists()


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs" / "model").glob("*.yaml")))
def test_every_model_preset_is_valid(preset):
    path = ROOT / "configs" / "model" / preset
    build_model_config(load_config(path), path)


def test_describe_prints_parameters_and_shapes(capsys):
    assert main(["describe", str(ROOT / "configs/model/demo.yaml"), "--set", "model.layer_type=bixt", "--tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layers" in out and "concepts [2, 32, 256]" in out


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_concept=3", "unknown key"),
        ("model.num_concepts=many", "num_concepts: expected int"),
        ("model.hidden_size=250", "not divisible"),
        ("modle.hidden_size=256", "unknown section"),
        ("hidden_size=256", "must name a section"),
    ],
)
def test_bad_overrides_are_errors_naming_file_and_key(override, message, capsys):
    assert main(["describe", str(ROOT / "configs/model/demo.yaml"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err
    if override.startswith("model."):
        assert "demo.yaml" in err


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_scientific_notation_is_a_float_in_files_and_overrides(tmp_path):
    from concept_encoder.config import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text("training:\n  learning_rate: 3e-4\nmodel:\n  layer_norm_eps: 1e-12\n")
    experiment = load_experiment(path, ["training.weight_decay=1e-2"])
    assert experiment.training.learning_rate == 3e-4 and experiment.training.weight_decay == 0.01
    assert experiment.model.layer_norm_eps == 1e-12


NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _section(text: str, name: str) -> str:
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    assert start in text and end in text, f"docs/results.md has no generated section {name!r}"
    return text.split(start, 1)[1].split(end, 1)[0]


def test_readme_results_quote_only_numbers_of_the_generated_sections():
    """Every README results table is preceded by `<!-- numbers from docs/results.md: SECTION -->`, and each of
    its decimal numbers occurs in that generated section: the README cannot drift from the results it quotes."""
    readme, results = (ROOT / "README.md").read_text(), (ROOT / "docs" / "results.md").read_text()
    quoted = re.findall(r"<!-- numbers from docs/results.md: ([\w:.-]+) -->\n((?:\|.*\n)+)", readme)
    assert len(quoted) >= 3, "the README's results tables lost their source markers"
    for name, table in quoted:
        available = set(NUMBER.findall(_section(results, name)))
        missing = [n for n in NUMBER.findall(table) if n not in available]
        assert not missing, f"README numbers {missing} are not in docs/results.md section {name}"
