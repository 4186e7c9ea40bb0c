"""Data layer: the local-data setting, corpora, tokenizers and benchmark tasks."""

from .local import DATA_ENV_VAR, resolve_data_dir

__all__ = ["DATA_ENV_VAR", "resolve_data_dir"]
