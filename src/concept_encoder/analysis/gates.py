"""Decision gates as data: a YAML file of thresholds -> a verdict and the recommended next step per gate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, read_yaml_mapping

DEFAULT_GATES = Path(__file__).with_name("gates.yaml")
VERDICTS = ("pass", "partial", "fail")


@dataclass(frozen=True)
class Rule:
    verdict: str
    next: str
    above: float | None = None  # holds when value > above
    below: float | None = None  # holds when value < below

    def holds(self, value: float) -> bool:
        return (self.above is None or value > self.above) and (self.below is None or value < self.below)


@dataclass(frozen=True)
class Gate:
    id: str
    name: str
    metric: str
    rules: tuple[Rule, ...]
    source: str = ""
    applies_to: tuple[tuple[str, object], ...] = ()  # run facts that must match, e.g. (("objective", "diffusion"),)


@dataclass(frozen=True)
class Verdict:
    gate: Gate
    value: float | None
    verdict: str  # pass | partial | fail | not measured
    next: str

    def as_dict(self) -> dict:
        return {"gate": self.gate.id, "name": self.gate.name, "metric": self.gate.metric, "value": self.value,
                "verdict": self.verdict, "next": self.next, "source": self.gate.source}


def load_gates(path: str | Path | None = None) -> list[Gate]:
    """Gates from a YAML file (default: the research plan's); every key checked, errors name file and gate."""
    path = Path(path) if path else DEFAULT_GATES
    raw = read_yaml_mapping(path, "gates file")
    if set(raw) != {"gates"} or not isinstance(raw["gates"], list):
        raise ConfigError(f"gates file {path}: expected one key `gates` holding a list")
    gates = []
    for index, entry in enumerate(raw["gates"]):
        where = f"gates file {path}, gate {entry.get('id', index) if isinstance(entry, dict) else index}"
        unknown = set(entry) - {"id", "name", "metric", "rules", "source", "applies_to"} if isinstance(entry, dict) else {"?"}
        if unknown or not {"id", "metric", "rules"} <= set(entry):
            raise ConfigError(f"{where}: needs id, metric, rules (optional name, source, applies_to); "
                              f"unknown keys {sorted(unknown)}")
        if not isinstance(entry["rules"], list) or not isinstance(entry.get("applies_to") or {}, dict):
            raise ConfigError(f"{where}: rules must be a list and applies_to a mapping")
        rules = []
        for rule in entry["rules"]:
            if not isinstance(rule, dict) or set(rule) - {"above", "below", "verdict", "next"} or "verdict" not in rule:
                raise ConfigError(f"{where}: a rule is {{verdict, next, above?, below?}}, got {rule!r}")
            if rule["verdict"] not in VERDICTS:
                raise ConfigError(f"{where}: verdict {rule['verdict']!r} is not one of {VERDICTS}")
            bounds = [rule.get(k) for k in ("above", "below") if rule.get(k) is not None]
            if any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in bounds):
                raise ConfigError(f"{where}: above / below must be numbers, got {rule!r}")
            rules.append(Rule(rule["verdict"], rule.get("next", ""), rule.get("above"), rule.get("below")))
        gates.append(Gate(entry["id"], entry.get("name", entry["id"]), entry["metric"], tuple(rules),
                          entry.get("source", ""), tuple((entry.get("applies_to") or {}).items())))
    return gates


def evaluate_gates(gates: list[Gate], metrics: dict[str, float], facts: dict[str, object] | None = None) -> list[Verdict]:
    """A verdict for every gate that applies to this run; metrics are flat `stage.key` -> value."""
    facts = facts or {}
    verdicts = []
    for gate in gates:
        if any(facts.get(key) != wanted for key, wanted in gate.applies_to):
            continue
        value = metrics.get(gate.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            verdicts.append(Verdict(gate, None, "not measured", f"measure {gate.metric}"))
            continue
        rule = next((r for r in gate.rules if r.holds(value)), None)
        verdicts.append(Verdict(gate, value, rule.verdict if rule else "fail", rule.next if rule else ""))
    return verdicts


def format_verdicts(verdicts: list[Verdict], markdown: bool = True) -> str:
    if markdown:
        lines = ["| gate | metric | value | verdict | next step |", "|---|---|---|---|---|"]
        for v in verdicts:
            value = "–" if v.value is None else f"{v.value:.3f}"
            lines.append(f"| {v.gate.name} | `{v.gate.metric}` | {value} | **{v.verdict}** | {v.next} |")
        return "\n".join(lines)
    return "\n".join(f"{v.verdict:>12}  {v.gate.name}: {'–' if v.value is None else f'{v.value:.3f}'} -> {v.next}"
                     for v in verdicts)
