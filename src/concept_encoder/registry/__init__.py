"""The run registry: a SQLite file of runs, their metrics by stage and artefacts, and text views of them."""

from .store import REGISTRY_ENV_VAR, Registry, RegistryError, default_registry_path, git_commit
from .tables import format_compare, format_run, format_run_list

__all__ = [
    "REGISTRY_ENV_VAR",
    "Registry",
    "RegistryError",
    "default_registry_path",
    "format_compare",
    "format_run",
    "format_run_list",
    "git_commit",
]
