"""The local-data setting: one folder laid out like `shared/data` (`<dataset>/<split>.tsv.gz`, corpora as
`.raw.gz` / `.jsonl.gz`), given by a CLI flag or the `CONCEPT_ENCODER_DATA` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "CONCEPT_ENCODER_DATA"


def resolve_data_dir(explicit: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The local data folder: `explicit` (a `--data-dir` flag) if given, else `$CONCEPT_ENCODER_DATA`.

    Returns None when neither is set and `required` is False (Hub loading is then used).
    """
    value = explicit if explicit is not None else os.environ.get(DATA_ENV_VAR)
    if not value:
        if required:
            raise FileNotFoundError(
                f"No local data folder: pass --data-dir or set {DATA_ENV_VAR} to a folder laid out like "
                "shared/data (see docs/data.md)."
            )
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        source = "--data-dir" if explicit is not None else DATA_ENV_VAR
        raise FileNotFoundError(f"{source}={value!s}: not a directory")
    return path
