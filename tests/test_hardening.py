"""Issue 27: names that cannot break a model or escape a folder, bad input as one line (exit 2) with nothing left
behind, and no code run without consent. Each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

from concept_encoder.cli import main
from concept_encoder.data import resolve_data_dir


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_evaluate_a_hub_name_never_creates_a_folder_spelt_by_the_name(tmp_path, monkeypatch, capsys):
    """`evaluate org/name` used to create ./org/name/evaluation before loading; transformers then took that empty
    folder for the model, and every later command with the name failed in that directory."""
    data = str(resolve_data_dir().resolve())
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "no-such-org/no-such-model", "--mode", "zero-shot", "--tasks", "stsb",
                 "--data-dir", data]) == 2
    assert "no-such-org/no-such-model" in capsys.readouterr().err
    assert _tree(tmp_path) == []


def test_evaluate_checks_every_task_before_fine_tuning_and_leaves_no_folder(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(resolve_data_dir() / "stsb", data / "stsb")  # STS-B is there, QQP is not
    before = _tree(tiny_model_dir)
    assert main(["evaluate", str(tiny_model_dir), "--tasks", "stsb", "qqp", "--data-dir", str(data)]) == 2
    assert "qqp" in capsys.readouterr().err.lower()
    assert _tree(tiny_model_dir) == before  # no MODEL/evaluation left behind


def test_evaluate_of_a_hub_name_writes_under_runs_evaluations(tmp_path):
    from concept_encoder.cli import evaluation_folder

    assert evaluation_folder("sentence-transformers/all-MiniLM-L6-v2", None) == Path(
        "runs/evaluations/sentence-transformers__all-MiniLM-L6-v2")
    assert evaluation_folder(str(tmp_path), None) == tmp_path / "evaluation"
    assert evaluation_folder("org/name", str(tmp_path / "out")) == tmp_path / "out"


def _code_folder(folder: Path, canary: Path, marker: bool) -> Path:
    """A sentence-transformers folder whose one module lives in a .py file that writes `canary` when imported."""
    import json

    folder.mkdir()
    (folder / "evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n"
                                    "import torch\nclass Evil(torch.nn.Module):\n    pass\n")
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "evil.Evil"}]))
    if marker:  # a forged export marker does not make the folder trusted
        (folder / "concept_encoder_export.json").write_text("{}")
    return folder


def test_mteb_runs_no_code_of_a_foreign_folder_without_consent(tmp_path, capsys):
    """`mteb` used to pass trust_remote_code=True to every folder with a modules.json, so a folder's .py ran."""
    from concept_encoder.evaluation.mteb_runner import mteb_model
    from concept_encoder.inference.encoder import EncoderError

    canary = tmp_path / "canary.txt"
    for marker in (False, True):
        folder = _code_folder(tmp_path / f"folder_{marker}", canary, marker)
        try:
            mteb_model(folder)
        except EncoderError as error:
            assert "--trust-remote-code" in str(error)
        else:
            raise AssertionError("a foreign folder loaded without --trust-remote-code")
        assert not canary.exists()
    assert main(["mteb", str(folder), "--tasks", "STSBenchmark"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err and not canary.exists()


def test_an_own_export_runs_none_of_its_folders_code_and_a_foreign_layout_is_refused(tmp_path, tiny_model_dir):
    """mteb trusted an own export by a marker file; the folder now carries code, so a marker beside edited code
    or an extra module would have run it. An own export is built from the installed classes instead: its .py
    files, edited to write a canary, never run; a folder with another module list is not an own export."""
    import json

    from concept_encoder.evaluation.mteb_runner import mteb_model
    from concept_encoder.inference.sentence_transformers import is_own_export

    out = tmp_path / "st"
    assert main(["export", str(tiny_model_dir), "--to", str(out)]) == 0
    assert is_own_export(out)
    canary = tmp_path / "canary.txt"
    for code in out.glob("*.py"):
        code.write_text(f"open({str(canary)!r}, 'w').write('ran')\n" + code.read_text())
    vectors = mteb_model(out).encode(["a sentence", "another one"])
    assert vectors.shape == (2, 64) and not canary.exists()
    modules = json.loads((out / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "sub", "type": "sentence_transformers.base.modules.Dense"})
    (out / "modules.json").write_text(json.dumps(modules))
    assert not is_own_export(out)
    (out / "modules.json").write_text(json.dumps([{"path": "", "type": 7}]))
    assert not is_own_export(out)


def _zero_shot(path: Path, tiny_model_dir: Path) -> list[str]:
    return ["zero-shot", str(tiny_model_dir), "--tasks", f"sts:{path}"]


def test_a_non_finite_score_in_a_user_sts_file_is_an_error_naming_file_and_row(tmp_path, tiny_model_dir, capsys):
    """A score of nan used to be accepted, and the report printed Spearman nan with exit 0."""
    path = tmp_path / "pairs.tsv"
    path.write_text("sentence1\tsentence2\tlabel\na dog\ta cat\t1.0\na man\ta woman\tnan\nsun\tmoon\t2\n")
    assert main(_zero_shot(path, tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert f"{path}, row 3: label='nan' is not a finite number" in err and err.count("\n") == 1


def test_malformed_jsonl_and_non_utf8_tsv_name_the_file_and_the_line(tmp_path, tiny_model_dir, capsys):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "a", "sentence2": \n')
    assert main(_zero_shot(jsonl, tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert f"{jsonl}, line 2: not a JSON object" in err and err.count("\n") == 1
    tsv = tmp_path / "pairs.tsv"
    tsv.write_bytes(b"sentence1\tsentence2\tlabel\na\tb\t1\ncaf\xe9\tb\t2\n")
    assert main(_zero_shot(tsv, tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert f"{tsv}, line" in err and "not UTF-8" in err and err.count("\n") == 1


def test_run_names_and_contender_names_are_one_folder_name(tmp_path, capsys):
    """`--set training.run_name=../escaped_run` used to write the whole run outside --output-dir."""
    config = Path(__file__).resolve().parents[1] / "configs" / "micro" / "perceiver_mlm_L6.yaml"
    for name in ("../escaped_run", "/tmp/escaped_run", "a/b", ".."):
        assert main(["pretrain", str(config), "--output-dir", str(tmp_path / "out"),
                     "--set", f"training.run_name={name}"]) == 2
        err = capsys.readouterr().err
        assert "run_name" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped_run").exists()
    study = tmp_path / "study.yaml"
    study.write_text(f"name: s\ntoken_budget: 1\ncontenders:\n  ../up: {config}\noutput_dir: {tmp_path / 'runs'}\n")
    assert main(["study", str(study)]) == 2
    assert "contenders" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_user_task_path_names_no_folder_outside_the_output(tmp_path):
    """`evaluate --keep-models --tasks sts:../../x.tsv` used to save a model outside its output folder."""
    from concept_encoder.rundir import path_part_problem, safe_folder_name

    for spec in ("sts:../../x.tsv", "sts:/abs/x.tsv", "pair:a/b.jsonl"):
        name = safe_folder_name(spec)
        assert path_part_problem(name) is None and (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert safe_folder_name("sts:../a/x.tsv") != safe_folder_name("sts:../b/x.tsv")  # never one shared folder
    assert safe_folder_name("stsb") == "stsb"


def test_the_registry_refuses_one_run_id_for_two_folders(tmp_path):
    """Two runs with one run name from two output roots used to merge into one row: run B's folder, run A's
    metrics."""
    import pytest

    from concept_encoder.registry import Registry, RegistryError

    with Registry(tmp_path / "registry.sqlite") as registry:
        registry.record_run("r", run_dir=tmp_path / "a" / "r", config={})
        registry.record_metrics("r", "pretrain", {"eval_loss": 1.0})
        registry.record_run("r", run_dir=tmp_path / "a" / "r", config={}, status="complete")  # the same run: fine
        with pytest.raises(RegistryError, match="already recorded for"):
            registry.record_run("r", run_dir=tmp_path / "b" / "r", config={})
        (row,) = registry.list_runs()
        assert row["run_dir"] == str(tmp_path / "a" / "r")


def test_report_html_escapes_text_it_did_not_write_and_table_cells_keep_their_pipes(tmp_path):
    """A probe file named `<img src=x onerror=alert(1)>.txt` used to become live HTML in report.html, and a
    table cell "mean |cos| between two concepts" showed as "mean"."""
    from concept_encoder.registry.report import _html
    from concept_encoder.reporting import markdown_table

    text = "\n".join(["# run <b>", "", "probe: <img src=x onerror=alert(1)>.txt & more", "",
                      markdown_table(["metric", "meaning"], [["`similarity_abs_mean`", "mean |cos| between two concepts"]]),
                      "", "```yaml", "a: <kept as code>", "```"])
    page = _html("<script>t</script>", text, tmp_path)
    assert "<img" not in page and "<script>" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt &amp; more" in page
    assert "<td>mean |cos| between two concepts</td>" in page
    assert "a: &lt;kept as code&gt;" in page  # code is escaped once, by markdown, not twice


MICRO = Path(__file__).resolve().parents[1] / "configs" / "micro" / "perceiver_mlm_L6.yaml"


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_pretraining_input_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    """Each used to be a traceback (a codec error with no file name, a 62-line YAML parser trace, a TypeError, a
    25-line tracker trace after a half-made run folder)."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n\ncaf\xe9 au lait\n")
    cases = [
        ([f"--set=data.corpus=[{bad}]"], (str(bad), "line 3", "not UTF-8")),
        (["--set=model.num_concepts=["], ("--set 'model.num_concepts=['", "not valid YAML")),
        (["--set", "data.corpus.x=1"], ("data.corpus is a value",)),
        (["--set", "training.report_to=[wandb]"], ("report_to", 'pip install "concept-encoder[wandb]"')),
        (["--set", "training.report_to=wandbx"], ("'wandbx' is not a Trainer integration",)),
        (["--data-dir", str(tmp_path / "missing")], ("not a directory",)),
    ]
    for i, (extra, needles) in enumerate(cases):
        root = tmp_path / f"out{i}"
        assert main(["pretrain", str(MICRO), "--output-dir", str(root), *extra]) == 2, extra
        _one_line_error(capsys, *needles)
        assert not root.exists(), extra


def test_report_to_takes_the_trainers_string_form(tmp_path):
    from concept_encoder.config import load_experiment

    assert load_experiment(MICRO, ["training.report_to=none"]).training.report_to == []
    assert load_experiment(MICRO, ["training.report_to=[]"]).training.report_to == []


def test_an_existing_run_name_is_refused_before_data_preparation(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["pretrain", str(MICRO), "--output-dir", str(tmp_path), "--set", "training.run_name=taken"]) == 2
    _one_line_error(capsys, "taken exists", "--resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no cache was built first


def test_export_to_an_existing_file_is_one_line(tmp_path, tiny_model_dir, capsys):
    target = tmp_path / "file"
    target.write_text("mine")
    assert main(["export", str(tiny_model_dir), "--to", str(target)]) == 2
    _one_line_error(capsys, "exists and is not an empty folder")
    assert target.read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an empty folder is filled, atomically (no partial folder beside it)
    assert main(["export", str(tiny_model_dir), "--to", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "modules.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_encode_of_an_empty_file_is_one_line_before_the_model_loads_and_leaves_nothing(tmp_path, capsys):
    """It used to load the model, then report 0 rows and leave OUT.partial/settings.json."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "vectors.parquet"
    assert main(["encode", "no/such-model", str(empty), "--out", str(out)]) == 2  # the model is never looked up
    _one_line_error(capsys, "no rows to encode")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_a_huge_line_is_clipped_before_tokenising_and_encodes_the_same(tiny_model_dir):
    from concept_encoder.inference.corpus import clipped
    from concept_encoder.inference.encoder import encode, load_encoder

    model, tokenizer = load_encoder(tiny_model_dir)
    words = (resolve_data_dir() / "wikitext").name  # any real words will do; the line is long, not special
    line = " ".join(f"{words} number {i} of a very long line" for i in range(100_000))  # about 4 MB
    short = clipped(line, tokenizer, 128)
    assert len(short) < 20_000 < len(line)
    ids = tokenizer([line, short], truncation=True, max_length=128)["input_ids"]
    assert ids[0] == ids[1]
    full, cut = encode(model, tokenizer, [line[:200_000], short], max_length=128)
    assert (full - cut).abs().max() < 1e-6


def test_experiment_with_a_bad_corpus_leaves_no_empty_registry(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    root = tmp_path / "runs"
    assert main(["experiment", str(MICRO), "--output-dir", str(root), "--set", f"data.corpus=[{bad}]"]) == 2
    _one_line_error(capsys, "not UTF-8")
    assert not root.exists()


def test_a_damaged_run_folder_is_one_line_in_report_and_analyze(tmp_path, capsys):
    import shutil

    assert main(["pretrain", str(MICRO), "--output-dir", str(tmp_path), "--set", "training.run_name=r",
                 "--set", "training.max_steps=10", "--set", "training.eval_steps=10", "--set", "training.save_steps=10",
                 "--set", "analysis.during_training=false"]) == 0
    capsys.readouterr()
    summary = tmp_path / "r" / "train_summary.json"
    shutil.copytree(tmp_path / "r", tmp_path / "weights")
    summary.write_text(summary.read_text()[:50])  # truncated
    assert main(["report", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, str(summary), "not valid JSON")
    weights = tmp_path / "weights" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["analyze", str(tmp_path / "weights")]) == 2
    _one_line_error(capsys, "weights do not load")


def test_help_and_version_answer_without_importing_torch():
    """`--help` took 6.5 s warm because cli.py imported config, and with it transformers and torch."""
    import subprocess
    import sys

    script = ("import sys\nfrom concept_encoder.cli import main\n"
              "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False"), out.stdout[-300:]
    version = subprocess.run([sys.executable, "-m", "concept_encoder.cli", "--version"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.startswith("concept-encoder ")


def _verb_parsers(parser, prefix=""):
    """(name, parser) of every verb, nested groups (`runs list`, `data mirror`) included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, verb in action.choices.items():
                yield f"{prefix}{name}", verb
                yield from _verb_parsers(verb, f"{prefix}{name} ")


def test_every_verb_has_an_example_and_every_option_its_help_and_default(capsys):
    """Options without help and verbs without an example; the defaults were said in some help texts only."""
    import argparse

    from concept_encoder.cli import build_parser
    from concept_encoder.cli.common import POOLINGS
    from concept_encoder.modeling.heads import POOLINGS as MODEL_POOLINGS

    assert tuple(POOLINGS) == MODEL_POOLINGS  # the CLI's copy (it must not import torch) of the one list
    verbs = dict(_verb_parsers(build_parser()))
    assert len(verbs) >= 22
    for name, verb in verbs.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in verb._actions):
            continue  # a group (runs, data): its verbs carry the examples
        assert verb.epilog and verb.epilog.startswith("example") and "concept-encoder " in verb.epilog, name
        for action in verb._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    try:
        main(["encode", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "texts per forward pass (default: 64)" in text and "(default: pooled)" in text
    assert "(default: None)" not in text and "(default: False)" not in text and "example" in text


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    import subprocess
    import sys

    from concept_encoder.registry import Registry

    with Registry(tmp_path / "registry.sqlite") as registry:
        for i in range(3000):
            registry.record_run(f"run{i}", run_dir=tmp_path / f"run{i}", config={})
    command = f"{sys.executable} -m concept_encoder.cli runs list --registry {tmp_path / 'registry.sqlite'} | head -1"
    out = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr[-500:]


def test_a_missing_corpus_without_a_data_folder_hints_at_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CONCEPT_ENCODER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", str(MICRO), "--output-dir", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "wikitext/wiki.valid.raw.gz", "CONCEPT_ENCODER_DATA", "--data-dir")
    assert not (tmp_path / "out").exists()


def test_describe_builds_the_vocabulary_the_run_will_have(capsys):
    """describe used to report V = 30,522 and 2.16M parameters for a model with a 4,096-word trained tokenizer."""
    assert main(["describe", str(MICRO)]) == 0
    out = capsys.readouterr().out
    assert "V = 4,096" in out and "(B, N, V)" in out and ", 4096]" in out


def test_config_prints_the_resolved_experiment_and_an_override_error_names_the_override(capsys):
    assert main(["config", str(MICRO), "--set", "training.max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "vocab_size: 4096" in out and "!default" not in out
    assert main(["config", str(MICRO), "--set", "training.max_stpes=7"]) == 2
    _one_line_error(capsys, "--set 'training.max_stpes=7'", "unknown key")
    assert main(["config", str(MICRO), "--set", "evaluation.seeds=one"]) == 2
    _one_line_error(capsys, "--set 'evaluation.seeds=one'")


def test_scores_read_on_one_scale_in_runs_and_gates(tmp_path, capsys):
    """`runs list` printed STS-B as 0.75 and the gates as 0.797 while every results table printed x 100."""
    from concept_encoder.analysis.gates import evaluate_gates, format_verdicts, load_gates
    from concept_encoder.registry import Registry

    with Registry(tmp_path / "registry.sqlite") as registry:
        registry.record_run("r", run_dir=tmp_path / "r", config={})
        registry.record_metrics("r", "finetune", {"stsb.spearman": (0.7512, 0.01)})
        registry.record_metrics("r", "analysis", {"effective_rank_per_sample": (3.25, None)})
    assert main(["runs", "list", "--registry", str(tmp_path / "registry.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "75.12" in out and "3.25" in out and "x 100" in out
    assert main(["runs", "show", "r", "--registry", str(tmp_path / "registry.sqlite")]) == 0
    assert "75.12 ± 1" in capsys.readouterr().out
    verdicts = evaluate_gates(load_gates(), {"finetune.stsb.pearson": 0.7512, "analysis.similarity_abs_mean": 0.452})
    shown = {v.gate.id: v.shown for v in verdicts}
    assert shown["gate1_stsb"] == "75.1" and shown["similarity"] == "0.452"
    assert "x 100" in format_verdicts(verdicts, markdown=False)


def _on_a_terminal(args: list[str], tmp_path: Path) -> str:
    """What a verb writes to a terminal (stdout and stderr on a pseudo-terminal), as a user sees it."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    env = {k: v for k, v in os.environ.items() if k != "CONCEPT_ENCODER_QUIET"}
    process = subprocess.Popen([sys.executable, "-m", "concept_encoder.cli", *args], stdout=follower,
                               stderr=follower, cwd=tmp_path, env=env)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 600
    while time.monotonic() < deadline:  # a hung verb fails the test instead of hanging it
        if not select.select([leader], [], [], 5)[0]:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=30) == 0, b"".join(chunks)[-2000:]
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_zero_shot_shows_progress_on_a_terminal_and_none_when_quiet(tmp_path, tiny_model_dir):
    """zero-shot, analyze, mteb and long-context encoded for minutes with no sign of life."""
    data = str(resolve_data_dir().resolve())
    shown = _on_a_terminal(["zero-shot", str(tiny_model_dir), "--tasks", "stsb", "--data-dir", data], tmp_path)
    assert "encode concepts:" in shown and "batch/s" in shown and "stsb" in shown
    quiet = _on_a_terminal(["zero-shot", str(tiny_model_dir), "--tasks", "stsb", "--data-dir", data, "--quiet"],
                           tmp_path)
    assert "encode concepts:" not in quiet and "batch/s" not in quiet and "stsb" in quiet
