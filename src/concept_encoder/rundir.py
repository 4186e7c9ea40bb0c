"""The run folder, on the ground floor: every file name a run has, where its model and tokenizer are, how its
files are written (atomically), its finished stages and the checkpoint to resume from. It imports nothing of
the package, so every stage can read and write a run through it.

    runs/<name>/
      experiment.yaml                  the validated experiment config (EXPERIMENT_FILE)
      init_from.json                   what a warm start took from its source (INIT_REPORT_FILE)
      tokenizer/  model/               the trained tokenizer and model (save_pretrained folders)
      checkpoints/checkpoint-N/        Trainer checkpoints (resume)
      train_summary.json  log_history.json
      stages.json                      the finished stages of `concept-encoder experiment`
      analysis/analysis.json  analysis/k_sweep.json
      evaluation/finetune/results.json  evaluation/zero_shot/results.json
      report/report.md  report/report.html
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

DEFAULT_OUTPUT_ROOT = "runs"
EXPERIMENT_FILE = "experiment.yaml"
INIT_REPORT_FILE = "init_from.json"
MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS = "checkpoints"
TRAIN_SUMMARY = "train_summary.json"
LOG_HISTORY = "log_history.json"
STAGES_FILE = "stages.json"
PROVENANCE_FILE = "provenance.json"  # the code and config a run's stages ran with (`record_provenance`)
ANALYSIS_DIR = "analysis"
ANALYSIS_RESULTS = Path(ANALYSIS_DIR) / "analysis.json"
K_SWEEP_RESULTS = Path(ANALYSIS_DIR) / "k_sweep.json"
FINETUNE_RESULTS = Path("evaluation") / "finetune" / "results.json"
ZERO_SHOT_RESULTS = Path("evaluation") / "zero_shot" / "results.json"
MTEB_RESULTS = Path("evaluation") / "mteb" / "results.json"
REPORT_DIR = "report"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what a saved tokenizer folder holds
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# --- names -------------------------------------------------------------------------------------------------

def model_tag(config, objective: str) -> str:
    """e.g. perceiver_mlm, posonly_bixt_tsdae, perceiver_recursive_mlm, diffusion (config: a ConceptEncoderConfig)."""
    decoder = {"perceiver_io": "perceiver", "position_only": "posonly", "autoregressive": "ar", "diffusion": ""}
    parts = [decoder.get(config.decoder_type, config.decoder_type)]
    if config.layer_type == "bixt":
        parts.append("bixt")
    if config.weight_sharing:
        parts.append("recursive")
    parts.append(objective)
    return "_".join(p for p in parts if p)


def run_name(config, objective: str, now: datetime | None = None) -> str:
    """`{model}_H{H}L{L}C{C}_{timestamp}`: readable and sortable."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"{model_tag(config, objective)}_{config.short_name}_{stamp}"


# --- finding a run's parts ---------------------------------------------------------------------------------

def path_part_problem(name: str) -> str | None:
    """Why `name` cannot be one folder name inside an output folder (None when it can): run names, study
    contender names and the folders named after tasks must never reach outside it (`../x`, `/tmp/x`, `a/b`)."""
    if not name or not name.strip():
        return "is empty"
    if "/" in name or "\\" in name or "\0" in name:
        return f"{name!r} contains a path separator; use one folder name"
    if name in (".", ".."):
        return f"{name!r} is not a folder name"
    return None


def safe_folder_name(name: str) -> str:
    """A name that may be a path (a user task `sts:../pairs.tsv`) as one readable folder name: its unsafe characters
    replaced, and a short hash of the whole name so that two paths never share a folder."""
    if path_part_problem(name) is None and ":" not in name:
        return name
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.split(":", 1)[-1]).name).strip("._") or "task"
    return f"{readable}_{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


def is_run_folder(path: Path) -> bool:
    return (Path(path) / EXPERIMENT_FILE).exists()


def locate(path: str | Path) -> tuple[Path | None, Path]:
    """(run folder or None, model folder) for a run folder or a model folder."""
    path = Path(path)
    if is_run_folder(path):
        model_dir = path / MODEL_DIR
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(f"{path}: a run folder without a finished model ({model_dir}/config.json missing)")
        return path, model_dir
    if (path / "config.json").exists():
        return (path.parent if is_run_folder(path.parent) else None), path
    raise FileNotFoundError(f"{path}: neither a run folder ({EXPERIMENT_FILE}) nor a model folder (config.json)")


def tokenizer_folder(source: str | Path) -> Path | str:
    """Where the tokenizer of a model is: a run folder keeps it in `tokenizer/`, beside `model/`; HF folders and
    Hub names keep it at their top (returned as given)."""
    path = Path(source)
    if (path / TOKENIZER_DIR).is_dir():  # a run folder
        return path / TOKENIZER_DIR
    if not has_tokenizer(path) and (path / "config.json").exists() and (path.parent / TOKENIZER_DIR).is_dir():
        return path.parent / TOKENIZER_DIR  # a run's model/ folder saved without its tokenizer
    return source


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in TOKENIZER_FILES)


def newest_run(folder: Path) -> Path | None:
    """The newest run folder directly under `folder` (a failed start can leave more than one), else None."""
    runs = [p.parent for p in Path(folder).glob(f"*/{EXPERIMENT_FILE}") if not p.parent.name.startswith(".")]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last), else None.

    A checkpoint cut short by a killed job has no trainer_state.json and is passed over.
    """
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and (child / "trainer_state.json").exists() and (child / "model.safetensors").exists():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


# --- stages of `concept-encoder experiment` ----------------------------------------------------------------

def finished_stages(run_dir: Path) -> dict:
    """{stage: {seconds, finished}} of the stages a run folder has finished (empty for a new one)."""
    return read_json(Path(run_dir) / STAGES_FILE) or {}


def stage_start() -> float:
    """The start of a stage: its time, and the code it starts with (commit, `observe_code`), which `mark_stage`
    records."""
    _STAGE_COMMIT["commit"] = code_version()
    observe_code()
    return time.time()


def mark_stage(run_dir: Path, stage: str, started: float) -> None:
    done = finished_stages(run_dir)
    done[stage] = {"seconds": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record_provenance(run_dir, stage)
    write_json(Path(run_dir) / STAGES_FILE, done)


# --- provenance: which code and config made a run ---------------------------------------------------------

PACKAGE_DIR = Path(__file__).resolve().parent


def loaded_modules() -> list[str]:
    """The package's modules loaded in this process, as paths inside the package."""
    import sys

    files = [Path(m.__file__) for name, m in list(sys.modules.items())
             if name.split(".")[0] == "concept_encoder" and getattr(m, "__file__", None)]
    return sorted({f.resolve().relative_to(PACKAGE_DIR).as_posix() for f in files
                   if f.resolve().is_relative_to(PACKAGE_DIR)})


def module_hashes(names: list[str] | None = None) -> dict[str, str]:
    """{path inside the package: hash of its source} for the package's modules loaded in this process (the code
    path of what ran so far), or for the given paths as they are on disk now."""
    if names is None:
        names = loaded_modules()
    out = {}
    for name in names:
        path = PACKAGE_DIR / name
        out[name] = hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest() if path.is_file() else "missing"
    return out


def code_version() -> str:
    """The git commit of the package's checkout ("+changes" when its source differs from it), else "unknown"
    (an installed copy without git)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short=10", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", str(PACKAGE_DIR)) else "")


def config_hash(config: dict) -> str:
    """A short hash of a resolved experiment config (what `ExperimentConfig.to_dict()` gives)."""
    return hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


_SEEN_MODULES: dict[str, str] = {}  # module -> the hash of its source when this process first saw it loaded
_STAGE_COMMIT: dict[str, str] = {}  # "commit": the code version the current stage started at


def observe_code() -> dict[str, str]:
    """The source hash of every package module loaded now, as this process first saw it (a module not seen before
    is hashed now). A stage observes at its start and records at its end, so a source edited while a long stage
    runs is not taken for the code it ran."""
    loaded = loaded_modules()
    _SEEN_MODULES.update(module_hashes([name for name in loaded if name not in _SEEN_MODULES]))
    return {name: _SEEN_MODULES[name] for name in loaded}


def record_provenance(run_dir: Path, stage: str) -> None:
    """Add a finished stage's code to the run's provenance.json: the commit it started at, and the hash of every
    package module it had loaded (as first seen: at a stage's start, or, for a module imported during the stage,
    now). A module keeps the hash of its first use, so a later check sees any change since then."""
    path = Path(run_dir) / PROVENANCE_FILE
    record = read_json(path) or {"modules": {}, "stages": {}}
    for name, digest in observe_code().items():
        record["modules"].setdefault(name, digest)
    record["stages"][stage] = _STAGE_COMMIT.pop("commit", None) or code_version()
    experiment = Path(run_dir) / EXPERIMENT_FILE
    if experiment.exists():
        record.setdefault("config_hash", config_hash(yaml.safe_load(experiment.read_text(encoding="utf-8"))))
    write_json(path, record)


def changed_modules(run_dir: Path) -> list[str] | None:
    """The package modules whose source differs now from when the run used them; None: no provenance recorded."""
    record = read_json(Path(run_dir) / PROVENANCE_FILE)
    if record is None:
        return None
    now = module_hashes(sorted(record["modules"]))
    return [name for name, digest in record["modules"].items() if now[name] != digest]


# --- files -------------------------------------------------------------------------------------------------

def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written there; one clear error otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError as error:
        raise PermissionError(f"output folder {folder}: not writable ({error.strerror or error})") from None


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # the bytes are on disk before the name points at them (a crash keeps either)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; a report should read like any file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


from .errors import RunFolderError


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it does not exist; a damaged one is a RunFolderError naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error}); truncated or edited? restore it, or rerun the "
                             "stage that writes it") from None
