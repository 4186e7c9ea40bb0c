"""Decision gates as data: a YAML file of thresholds -> a verdict and the recommended next step per gate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import SECTIONS, ConfigError, parse_override, read_yaml_mapping
from ..reporting import SCORE_STAGES

DEFAULT_GATES = Path(__file__).with_name("gates.yaml")
VERDICTS = ("pass", "partial", "fail")
GATE_KEYS = {"id", "name", "metric", "rules", "source", "applies_to", "noise", "noise_source", "compares"}


@dataclass(frozen=True)
class Rule:
    verdict: str
    next: str
    above: float | None = None  # holds when value > above + noise
    below: float | None = None  # holds when value < below - noise
    change: tuple[str, ...] = ()  # the advice as `--set` overrides, e.g. ("objective.regularisers=[t_regs]",)

    def holds(self, value: float, noise: float = 0.0) -> bool:
        """A bound holds only when the value clears it by more than the metric's seed-to-seed noise."""
        return ((self.above is None or value > self.above + noise)
                and (self.below is None or value < self.below - noise))


@dataclass(frozen=True)
class Gate:
    id: str
    name: str
    metric: str
    rules: tuple[Rule, ...]
    source: str = ""
    applies_to: tuple[tuple[str, object], ...] = ()  # run facts that must match, e.g. (("objective", "diffusion"),)
    noise: float = 0.0  # seed-to-seed std of the metric (a fraction, like the metric); 0: not measured
    noise_source: str = ""  # how and where the noise was measured
    compares: bool = False  # the metric is a difference of two measurements (a gain): its noise is required


SCORE_DIFFERENCES = ("analysis.k_sweep_gain_12_over_6",)  # a difference of two Spearmans: shown x 100 too


@dataclass(frozen=True)
class Verdict:
    gate: Gate
    value: float | None
    verdict: str  # pass | partial | fail | not measured
    next: str
    change: tuple[str, ...] = ()  # the rule's config change (`--set` overrides), if its advice is one

    @property
    def shown(self) -> str:
        """The value as a user reads it: a benchmark score x 100 (as every results table shows it), any other
        measure (a rank fraction, a cosine, a gain in nats) as it is; – when unmeasured."""
        if self.value is None:
            return "–"
        if self.gate.metric.split(".")[0] in SCORE_STAGES or self.gate.metric in SCORE_DIFFERENCES:
            return f"{100 * self.value:.1f}"
        return f"{self.value:.3g}"

    def as_dict(self) -> dict:
        return {"gate": self.gate.id, "name": self.gate.name, "metric": self.gate.metric, "value": self.value,
                "verdict": self.verdict, "next": self.next, "change": list(self.change), "source": self.gate.source,
                "noise": self.gate.noise}


def load_gates(path: str | Path | None = None) -> list[Gate]:
    """Gates from a YAML file (default: the research plan's); every key checked, errors name file and gate."""
    path = Path(path) if path else DEFAULT_GATES
    raw = read_yaml_mapping(path, "gates file")
    if set(raw) != {"gates"} or not isinstance(raw["gates"], list):
        raise ConfigError(f"gates file {path}: expected one key `gates` holding a list")
    gates = []
    for index, entry in enumerate(raw["gates"]):
        where = f"gates file {path}, gate {entry.get('id', index) if isinstance(entry, dict) else index}"
        unknown = set(entry) - GATE_KEYS if isinstance(entry, dict) else {"?"}
        if unknown or not {"id", "metric", "rules"} <= set(entry):
            raise ConfigError(f"{where}: needs id, metric, rules (optional name, source, applies_to, noise, "
                              f"noise_source, compares); unknown keys {sorted(unknown)}")
        if not isinstance(entry["rules"], list) or not isinstance(entry.get("applies_to") or {}, dict):
            raise ConfigError(f"{where}: rules must be a list and applies_to a mapping")
        rules = tuple(_rule(rule, where) for rule in entry["rules"])
        noise, compares = entry.get("noise"), entry.get("compares", False)
        _check_noise(noise, entry.get("noise_source"), compares, rules, where)
        gates.append(Gate(entry["id"], entry.get("name", entry["id"]), entry["metric"], rules,
                          entry.get("source", ""), tuple((entry.get("applies_to") or {}).items()),
                          float(noise or 0.0), entry.get("noise_source") or "", compares))
    return gates


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rule(rule, where: str) -> Rule:
    if not isinstance(rule, dict) or set(rule) - {"above", "below", "verdict", "next", "change"} or "verdict" not in rule:
        raise ConfigError(f"{where}: a rule is {{verdict, next, above?, below?, change?}}, got {rule!r}")
    if rule["verdict"] not in VERDICTS:
        raise ConfigError(f"{where}: verdict {rule['verdict']!r} is not one of {VERDICTS}")
    if not all(_number(rule[k]) for k in ("above", "below") if rule.get(k) is not None):
        raise ConfigError(f"{where}: above / below must be numbers, got {rule!r}")
    change = rule.get("change", [])
    if not isinstance(change, list) or not all(isinstance(item, str) for item in change):
        raise ConfigError(f"{where}: change must be a list of `section.key=value` overrides, got {change!r}")
    for item in change:  # the shape only; whether a plan config accepts it is tests/test_analysis.py's check
        try:
            keys, _ = parse_override(item)
        except ConfigError as error:
            raise ConfigError(f"{where}: change {error}") from None
        if keys[0] not in SECTIONS:
            raise ConfigError(f"{where}: change {item!r}: {keys[0]!r} is not a config section {SECTIONS}")
    return Rule(rule["verdict"], rule.get("next", ""), rule.get("above"), rule.get("below"), tuple(change))


def _check_noise(noise, source, compares, rules: tuple[Rule, ...], where: str) -> None:
    """A stated noise is a number >= 0 with its source; a difference (compares: true) must state one, and its
    pass bound must lie further from zero (no difference) than the noise."""
    if not isinstance(compares, bool):
        raise ConfigError(f"{where}: compares must be true or false, got {compares!r}")
    if noise is not None and (not _number(noise) or noise < 0):
        raise ConfigError(f"{where}: noise must be a number >= 0 (a seed-to-seed std, as a fraction), got {noise!r}")
    if noise is not None and not (isinstance(source, str) and source.strip()):
        raise ConfigError(f"{where}: noise {noise} needs a noise_source saying how and where it was measured")
    if not compares:
        return
    if not noise:
        raise ConfigError(f"{where}: its metric is a difference (compares: true), so it needs its seed-to-seed "
                          "noise (noise: STD, noise_source: how it was measured) before a bound can mean anything")
    for rule in rules:
        bound = rule.above if rule.above is not None else rule.below
        if rule.verdict == "pass" and (bound is None or abs(bound) <= noise):
            raise ConfigError(f"{where}: pass bound {bound} of a difference does not exceed its noise {noise}; "
                              "a gain within one seed-to-seed std of zero is no gain")


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
        rule = next((r for r in gate.rules if r.holds(value, gate.noise)), None)
        verdicts.append(Verdict(gate, value, rule.verdict if rule else "fail", rule.next if rule else "",
                                rule.change if rule else ()))
    return verdicts


def format_verdicts(verdicts: list[Verdict], markdown: bool = True) -> str:
    if markdown:
        lines = ["| gate | metric | value | verdict | next step |", "|---|---|---|---|---|"]
        for v in verdicts:
            change = "".join(f" `--set {item}`" for item in v.change)
            lines.append(f"| {v.gate.name} | `{v.gate.metric}` | {v.shown} | **{v.verdict}** | {v.next}{change} |")
        return "\n".join(lines + ["", SCALE_NOTE])
    return "\n".join([f"{v.verdict:>12}  {v.gate.name}: {v.shown} -> {v.next}" for v in verdicts] + [SCALE_NOTE])


SCALE_NOTE = ("(benchmark scores and the K sweep's gain x 100, as in every results table; ranks as fractions of "
              "min(C, H), cosines as they are, the concept ablation's gain in nats per token)")
