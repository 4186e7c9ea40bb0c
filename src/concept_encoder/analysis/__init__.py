"""Concept diagnostics, decision gates and plots."""

from .diagnostics import attention_usage, concept_diagnostics, dominance, participation_ratio, rankme, sum_max_ratio
from .gates import evaluate_gates, format_verdicts, load_gates
from .probe import ProbeError, probe, probe_batches, read_probe_file

__all__ = ["ProbeError", "attention_usage", "concept_diagnostics", "dominance", "evaluate_gates", "format_verdicts",
           "load_gates", "participation_ratio", "probe", "probe_batches", "rankme", "read_probe_file",
           "sum_max_ratio"]
