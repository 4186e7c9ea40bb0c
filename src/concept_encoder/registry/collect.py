"""A run folder's files -> metrics by stage, as the registry stores them and the gates read them.

`read_run` is the one reader of a run folder's result files: the registry, the gates, the report and the study
all take its `RunFiles`, so none of them opens a results file of its own.

Layout read (each part optional): `train_summary.json` (pretrain), `analysis/analysis.json`,
`evaluation/finetune/results.json`, `evaluation/zero_shot/results.json`, `analysis/k_sweep.json`,
`evaluation/mteb/results.json` (stage `mteb`: each task's main score, under the name mteb gives it).
Metrics are {stage: {key: (value, std or None)}}; baselines go to stage `baseline` as `TASK.NAME.METRIC`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..rundir import (
    ANALYSIS_RESULTS,
    EXPERIMENT_FILE,
    FINETUNE_RESULTS,
    INIT_REPORT_FILE,
    K_SWEEP_RESULTS,
    LOG_HISTORY,
    MODEL_DIR,
    MTEB_RESULTS,
    REPORT_DIR,
    TRAIN_SUMMARY,
    ZERO_SHOT_RESULTS,
    read_json,
)

PRETRAIN_KEYS = ("eval_loss", "train_loss", "tokens_seen", "global_step", "wall_clock_s")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RunFiles:
    """The result files of one run folder, each None until its stage has run."""

    run_dir: Path
    summary: dict | None
    analysis: dict | None
    finetune: dict | None
    zero_shot: dict | None
    k_sweep: dict | None
    log_history: list
    mteb: dict | None = None

    @property
    def evaluations(self) -> dict[str, dict]:
        """{stage: results} of the evaluation stages that have run."""
        return {stage: r for stage, r in (("finetune", self.finetune), ("zero_shot", self.zero_shot)) if r}


def read_run(run_dir: str | Path) -> RunFiles:
    run_dir = Path(run_dir)
    return RunFiles(run_dir, read_json(run_dir / TRAIN_SUMMARY), read_json(run_dir / ANALYSIS_RESULTS),
                    read_json(run_dir / FINETUNE_RESULTS), read_json(run_dir / ZERO_SHOT_RESULTS),
                    read_json(run_dir / K_SWEEP_RESULTS), (read_json(run_dir / LOG_HISTORY) or {}).get("log_history", []),
                    read_json(run_dir / MTEB_RESULTS))


def run_metrics(run: str | Path | RunFiles) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{stage: {key: (value, std or None)}} of a run folder (or of the files already read from it)."""
    run = run if isinstance(run, RunFiles) else read_run(run)
    stages: dict[str, dict[str, tuple[float, float | None]]] = {}
    if run.summary:
        stages["pretrain"] = {k: (float(run.summary[k]), None) for k in PRETRAIN_KEYS if _number(run.summary.get(k))}
    if run.analysis:
        stages["analysis"] = {k: (float(v), None) for k, v in run.analysis["diagnostics"].items() if _number(v)}
    if run.k_sweep and "gain_12_over_6" in run.k_sweep:
        stages.setdefault("analysis", {})["k_sweep_gain_12_over_6"] = (float(run.k_sweep["gain_12_over_6"]), None)
    for stage, results in run.evaluations.items():
        for task, result in results.get("tasks", {}).items():
            for metric, value in result["summary"].items():
                if _number(value["mean"]):
                    stages.setdefault(stage, {})[f"{task}.{metric}"] = (value["mean"], value.get("std"))
            for baseline, values in result["baselines"].items():
                for metric, value in values.items():
                    if _number(value):
                        stages.setdefault("baseline", {})[f"{task}.{baseline}.{metric}"] = (float(value), None)
    for task, result in (run.mteb or {}).get("tasks", {}).items():  # MTEB's main score per task, as it names it
        if _number(result["main_score"]):
            stages.setdefault("mteb", {})[f"{task}.{result['main_score_name']}"] = (float(result["main_score"]), None)
    return stages


def flatten(metrics: dict[str, dict[str, tuple[float, float | None]]]) -> dict[str, float]:
    """{stage: {key: (value, std)}} -> {"stage.key": value}, the names the gates use."""
    return {f"{stage}.{key}": value for stage, keys in metrics.items() for key, (value, _) in keys.items()}


def run_facts(experiment) -> dict[str, object]:
    """What a gate's `applies_to` may ask about a run."""
    model = experiment.model
    return {"objective": experiment.objective.name, "weight_sharing": model.weight_sharing,
            "layer_type": model.layer_type, "decoder_type": model.decoder_type}


def artefacts(run_dir: Path) -> dict[str, str]:
    """Paths worth finding again from the registry."""
    run_dir = Path(run_dir)
    candidates = {"run_dir": run_dir, "model": run_dir / MODEL_DIR, "experiment": run_dir / EXPERIMENT_FILE,
                  "analysis": run_dir / ANALYSIS_RESULTS, "finetune": run_dir / FINETUNE_RESULTS,
                  "zero_shot": run_dir / ZERO_SHOT_RESULTS, "mteb": run_dir / MTEB_RESULTS, "report_md": run_dir / REPORT_DIR / "report.md",
                  "report_html": run_dir / REPORT_DIR / "report.html", "init_report": run_dir / INIT_REPORT_FILE}
    found = {name: str(path.resolve()) for name, path in candidates.items() if path.exists()}
    warm_start = read_json(run_dir / INIT_REPORT_FILE)
    if warm_start:  # the run this one started from (model.init_from)
        found["init_from"] = warm_start["source"]
    return found
