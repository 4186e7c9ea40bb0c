"""Text views of registry runs for `runs list`, `runs show` and `runs compare`; formatting only, no database.

Runs are the dicts `Registry.get` returns (metrics as {stage: {key: {"value", "std"}}}); list rows are those of
`Registry.list_runs` (a `headline` of {stage.key: value}).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from ..reporting import SCORE_STAGES, markdown_table, text_table

MISSING = "–"
STAGE_ORDER = ("pretrain", "analysis", "finetune", "zero_shot", "baseline")
SCALE_NOTE = "scores of finetune, zero_shot, baseline and mteb x 100"
# Which way is better, by a substring of the key. Counts and costs have no better side: more steps or a longer
# wall clock is neither a win nor a loss. Collapse signs (similar or dominant concepts, dead dimensions) go down.
UNDIRECTED = ("tokens_seen", "global_step", "wall_clock", "num_samples", "num_concepts", "hidden_size",
              "similarity_std", "attention_entropy", "tokens_read")
LOWER_IS_BETTER = ("loss", "similarity", "dominance", "dead_dimensions", "static_concepts")


def better_direction(key: str) -> int | None:
    """+1 when higher is better, -1 when lower is better, None when neither."""
    if any(word in key for word in UNDIRECTED):
        return None
    return -1 if any(word in key for word in LOWER_IS_BETTER) else 1


# -- numbers -------------------------------------------------------------------------------------------------


def _decimals(values: list[float | None], deltas: list[float | None], counts: bool = True) -> int:
    """Decimals for one table row: whole numbers for counts (`counts`: the row may hold them; a score x 100 does
    not), else two, more when a difference would read 0.00."""
    present = [v for v in values if v is not None]
    if counts and present and all(float(v).is_integer() for v in present):
        return 0
    places = 2
    for delta in deltas:
        if delta:
            places = max(places, min(6, -math.floor(math.log10(abs(delta)))))
    return places


def _cell(metric: dict | None, places: int) -> str:
    if metric is None:
        return MISSING
    if metric["value"] is None:
        return "nan"  # recorded, but not finite
    std = metric.get("std")
    return f"{metric['value']:,.{places}f}" + ("" if std is None else f" ± {std:,.{places}f}")


def _difference(new: dict | None, old: dict | None) -> float | None:
    if new is None or old is None or new["value"] is None or old["value"] is None:
        return None
    return new["value"] - old["value"]


def _delta(key: str, difference: float | None, places: int) -> str:
    """e.g. "+1.40 ✓", "−0.10 ✓", "0.00"; the mark only where the key has a better side."""
    if difference is None:
        return MISSING
    sign = "+" if difference > 0 else "−" if difference < 0 else ""
    text = f"{sign}{abs(difference):,.{places}f}"
    direction = better_direction(key)
    if difference and direction:
        text += " ✓" if difference * direction > 0 else " ✗"
    return text


def _short(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def _scaled(stage: str, value: float | None) -> float | None:
    """A stored value on the scale a user reads: a score stage's fractions x 100."""
    return value if value is None or stage not in SCORE_STAGES else 100 * value


def _shown(stage: str, metric: dict | None) -> dict | None:
    return None if metric is None else {**metric, "value": _scaled(stage, metric["value"]),
                                        "std": _scaled(stage, metric.get("std"))}


# -- layout --------------------------------------------------------------------------------------------------


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _metric_names(*runs: dict) -> list[tuple[str, str]]:
    names = {(stage, key) for run in runs for stage, keys in run["metrics"].items() for key in keys}
    return sorted(names, key=lambda name: (_stage_key(name[0]), name[1]))


def _metric(run: dict | None, stage: str, key: str) -> dict | None:
    return None if run is None else _shown(stage, run["metrics"].get(stage, {}).get(key))


# -- views ---------------------------------------------------------------------------------------------------


def format_run_list(rows: list[dict[str, Any]]) -> str:
    """One line per run, newest first: id, created, status and the headline metrics any run has."""
    if not rows:
        return "no runs recorded yet"
    headline = sorted({name for row in rows for name in row.get("headline", {})},
                      key=lambda name: (_stage_key(name.split(".", 1)[0]), name))
    header = ["run", "created", "status", *headline]
    table = [[row["run_id"], (row["created"] or "")[:19].replace("T", " "), row["status"],
              *(_short(_scaled(name.split(".", 1)[0], row.get("headline", {}).get(name))) for name in headline)]
             for row in rows]
    return text_table(header, table, numeric_from=3) + f"\n({SCALE_NOTE})"


def format_run(run: dict[str, Any]) -> str:
    """Every field of one run, its artefacts, its metrics grouped by stage (± std where known), its config."""
    fields = [("run", run["run_id"]), ("status", run["status"]), ("created", run["created"]),
              ("updated", run["updated"]), ("run dir", run["run_dir"]), ("git commit", run["git_commit"] or MISSING)]
    if run.get("notes"):
        fields.append(("notes", run["notes"]))
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {value}" for name, value in fields]
    if run["artefacts"]:
        lines += ["", "artefacts"]
        width = max(map(len, run["artefacts"]))
        lines += [f"  {name:<{width}}  {path}" for name, path in sorted(run["artefacts"].items())]
    lines += ["", "metrics" if run["metrics"] else "metrics: none recorded yet"]
    for stage in sorted(run["metrics"], key=_stage_key):
        keys = run["metrics"][stage]
        width = max(map(len, keys))
        lines.append(f"  {stage}" + (" (x 100)" if stage in SCORE_STAGES else ""))
        for key, metric in sorted(keys.items()):
            metric = _shown(stage, metric)
            std = "" if metric["std"] is None else f" ± {metric['std']:.2g}"
            value = "nan" if metric["value"] is None else f"{metric['value']:.4g}"
            lines.append(f"    {key:<{width}}  {value}{std}")
    config = yaml.safe_dump(run["config"], sort_keys=False, default_flow_style=False).rstrip()
    lines += ["", "config", *(f"  {line}" for line in config.splitlines())]
    return "\n".join(lines)


def format_compare(a: dict[str, Any], b: dict[str, Any], baseline: dict[str, Any] | None = None,
                   markdown: bool = True) -> str:
    """Run B against run A (and against a baseline run): one row per metric either run has, signed deltas
    marked ✓ (better) or ✗ (worse) where the metric has a better side."""
    names = f"A = `{a['run_id']}`, B = `{b['run_id']}`"
    header = ["stage", "metric", "A", "B", "Δ (B−A)"]
    if baseline is not None:
        names += f", baseline = `{baseline['run_id']}`"
        header += ["baseline", "Δ vs baseline"]
    rows = []
    for stage, key in _metric_names(a, b):
        first, second, base = (_metric(run, stage, key) for run in (a, b, baseline))
        change, gain = _difference(second, first), _difference(second, base)
        shown = [first, second] + ([base] if baseline is not None else [])
        places = _decimals([m[part] for m in shown if m for part in ("value", "std")], [change, gain],
                           counts=stage not in SCORE_STAGES)
        row = [stage, key, _cell(first, places), _cell(second, places), _delta(key, change, places)]
        if baseline is not None:
            row += [_cell(base, places), _delta(key, gain, places)]
        rows.append(row)
    if not rows:
        return f"{names}\n\nneither run has metrics recorded yet"
    table = markdown_table(header, rows, 2) if markdown else text_table(header, rows, 2)
    return f"{names} ({SCALE_NOTE})\n\n{table}"
