"""The run folder's owner: where a model's tokenizer is, what a run folder is, the newest run."""

import os

from concept_encoder.rundir import EXPERIMENT_FILE, locate, newest_run, tokenizer_folder


def make_run(folder, with_model_tokenizer=False):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "tokenizer").mkdir()
    (folder / EXPERIMENT_FILE).write_text("model: {}\n")
    if with_model_tokenizer:
        (folder / "model" / "tokenizer.json").write_text("{}")
    return folder


def test_a_run_folder_and_its_model_folder_find_the_runs_tokenizer(tmp_path):
    run = make_run(tmp_path / "run")
    assert tokenizer_folder(run) == run / "tokenizer" == tokenizer_folder(run / "model")
    assert locate(run) == (run, run / "model") == locate(run / "model")


def test_a_model_folder_with_its_own_tokenizer_keeps_it(tmp_path):
    """An exported HF folder beside an unrelated tokenizer/ folder loads its own tokenizer, not the neighbour's."""
    run = make_run(tmp_path / "run", with_model_tokenizer=True)
    assert tokenizer_folder(run / "model") == run / "model"
    assert tokenizer_folder("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_newest_run_wins_and_hidden_folders_are_skipped(tmp_path):
    old, new, hidden = (make_run(tmp_path / name) for name in ("a", "b", ".tmp"))
    os.utime(old / EXPERIMENT_FILE, (1, 1))
    os.utime(old, (1, 1))
    os.utime(new, (2_000_000_000, 2_000_000_000))
    os.utime(hidden, (3_000_000_000, 3_000_000_000))
    assert newest_run(tmp_path) == new
    assert newest_run(tmp_path / "nothing") is None


def test_a_module_edited_while_a_stage_runs_is_recorded_as_it_ran(tmp_path):
    """Provenance used to hash the package's sources at a stage's end: a module edited during an hour-long
    pretraining was recorded as the code that ran it, and `study --check` then said the row was up to date."""
    import importlib
    import sys

    from concept_encoder.rundir import PACKAGE_DIR, changed_modules, mark_stage, stage_start

    probe = PACKAGE_DIR / "_provenance_probe.py"
    try:
        probe.write_text("VALUE = 1\n")
        importlib.import_module("concept_encoder._provenance_probe")
        started = stage_start()  # the stage starts with VALUE = 1 loaded
        probe.write_text("VALUE = 2  # edited while the stage ran\n")
        mark_stage(tmp_path, "pretrain", started)
        assert changed_modules(tmp_path) == ["_provenance_probe.py"]
    finally:
        probe.unlink(missing_ok=True)
        sys.modules.pop("concept_encoder._provenance_probe", None)
