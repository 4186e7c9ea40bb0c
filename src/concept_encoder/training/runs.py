"""Run folders: names, atomic files, and finding the checkpoint to resume from."""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..modeling import ConceptEncoderConfig

DEFAULT_OUTPUT_ROOT = "runs"
CHECKPOINTS = "checkpoints"
EXPERIMENT_FILE = "experiment.yaml"
INIT_REPORT_FILE = "init_from.json"  # what a warm-started run took from its source (training/warm_start.py)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def model_tag(config: ConceptEncoderConfig, objective: str) -> str:
    """e.g. perceiver_mlm, posonly_bixt_tsdae, perceiver_recursive_mlm, diffusion."""
    decoder = {"perceiver_io": "perceiver", "position_only": "posonly", "autoregressive": "ar", "diffusion": ""}
    parts = [decoder.get(config.decoder_type, config.decoder_type)]
    if config.layer_type == "bixt":
        parts.append("bixt")
    if config.weight_sharing:
        parts.append("recursive")
    parts.append(objective)
    return "_".join(p for p in parts if p)


def run_name(config: ConceptEncoderConfig, objective: str, now: datetime | None = None) -> str:
    """`{model}_H{H}L{L}C{C}_{timestamp}`: readable and sortable."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"{model_tag(config, objective)}_{config.short_name}_{stamp}"


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


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last), else None.

    A checkpoint cut short by a killed job has no trainer_state.json and is passed over.
    """
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and (child / "trainer_state.json").exists() and (child / "model.safetensors").exists():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None
