"""`concept-encoder experiment CONFIG`: pretrain -> analyze -> evaluate -> report -> registry, resumable per stage.

Every input is checked before the first stage (config sections, evaluation settings, the gates file, the
registry). Each finished stage is written to `stages.json` in the run folder; `--resume RUN_DIR` skips
finished stages, resumes pretraining from its last complete checkpoint and fine-tuning after its last
finished task.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .analysis.analyze import analyze
from .analysis.callbacks import attach_during_training
from .analysis.gates import Verdict, load_gates
from .config import ConfigError, load_experiment
from .data import resolve_data_dir
from .data.tasks import TaskError, get_task, resolve_tasks
from .evaluation.finetune import check_evaluation, evaluate_tasks, load_settings, zero_shot_tasks
from .registry import Registry, RegistryError, default_registry_path, git_commit
from .registry.collect import artefacts, run_metrics
from .registry.report import build_report, verdicts_for
from .rundir import (
    DEFAULT_OUTPUT_ROOT,
    EXPERIMENT_FILE,
    FINETUNE_RESULTS,
    MODEL_DIR,
    ZERO_SHOT_RESULTS,
    finished_stages,
    mark_stage,
    stage_start,
)
from .training import pretrain


def finetune_settings(evaluation, names: list[str]) -> dict:
    """Each task's fine-tuning settings as an experiment's `evaluation` section makes them: its settings file,
    then the section's overrides (the one place they are put together: the experiment and a study's K sweep)."""
    return load_settings(evaluation.settings, names, learning_rate=evaluation.learning_rate,
                         num_train_epochs=evaluation.num_train_epochs, max_train_examples=evaluation.max_train_examples,
                         max_eval_examples=evaluation.max_eval_examples, head=evaluation.head)


def run_experiment(
    config_path: str | Path | None = None,
    overrides: list[str] = (),
    data_dir: str | Path | None = None,
    output_root: str | Path = DEFAULT_OUTPUT_ROOT,
    resume: str | Path | None = None,
    registry_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, list[Verdict]]:
    """Run (or finish) every stage; returns the run folder and the gate verdicts. `cache_dir`: see `pretrain`."""
    if resume is not None:
        if overrides:  # every stage must see the config the run was started with
            raise ConfigError("experiment --resume continues a run as recorded in its experiment.yaml; drop --set")
        if not (Path(resume) / EXPERIMENT_FILE).exists():
            raise ConfigError(f"--resume {resume}: no {EXPERIMENT_FILE} (not a run folder)")
        experiment = load_experiment(Path(resume) / EXPERIMENT_FILE)
        output_root = Path(resume).parent
    elif config_path is None:
        raise ConfigError("experiment needs a CONFIG file or --resume RUN_DIR")
    else:
        experiment = load_experiment(config_path, overrides)
    ev = experiment.evaluation
    finetune_names = resolve_tasks(ev.finetune_tasks)
    settings = finetune_settings(ev, finetune_names)
    load_gates(experiment.analysis.gates)
    data_path = resolve_data_dir(data_dir, required=False)
    for name in finetune_names:  # a task file or head that cannot work fails now, not after pretraining
        try:
            check_evaluation(get_task(name), settings[name], data_path)
        except TaskError as error:
            raise ConfigError(f"{experiment.source}: [evaluation] finetune_tasks: {error}") from None
    registry_file = Path(registry_path or default_registry_path(output_root))
    new_registry = not registry_file.exists()
    registry = Registry(registry_file)  # a broken database fails now
    if resume is None and experiment.training.run_name:  # a name another folder holds fails now, not after training
        registry.check_run_id(experiment.training.run_name, Path(output_root) / experiment.training.run_name)

    started = stage_start()
    run_dir = Path(resume) if resume is not None else None
    if run_dir is None or "pretrain" not in finished_stages(run_dir):
        banner("pretrain", f"resuming {run_dir}" if run_dir else f"a new run folder under {output_root}")
        try:
            run_dir = pretrain(experiment if resume is None else None, (), data_dir, output_root, resume,
                               attach=attach_during_training, cache_dir=cache_dir)
        except BaseException:
            registry.close()
            if new_registry and not registry.has_runs_file(registry_file):  # no empty database left behind
                _remove_database(registry_file)
            raise
        mark_stage(run_dir, "pretrain", started)
    run_id = run_dir.name
    try:
        registry.record_run(run_id, run_dir=str(run_dir.resolve()), config=experiment.to_dict(),
                            git_commit=git_commit(), status="running")
        registry.record_metrics(run_id, "pretrain", run_metrics(run_dir).get("pretrain", {}))
        try:
            _later_stages(run_dir, experiment, data_path, finetune_names, settings)
        except BaseException:
            with contextlib.suppress(RegistryError):  # never hide the stage's own error behind this one
                registry.set_status(run_id, "failed")  # --resume picks up where it stopped
            raise
        for stage, metrics in run_metrics(run_dir).items():
            registry.record_metrics(run_id, stage, metrics)
        banner("registry", f"{run_id} in {registry.path}")
        registry.record_artefacts(run_id, artefacts(run_dir))
        registry.set_status(run_id, "complete")
    finally:
        registry.close()
    return run_dir, verdicts_for(run_dir, experiment)


def banner(stage: str, what: str) -> None:
    """One line per stage, so a reader of the log sees where the experiment is (pretrain -> analyze -> evaluate ->
    report -> registry)."""
    print(f"[experiment] {stage}: {what}", flush=True)


def _remove_database(path: Path) -> None:
    """A registry this command created and never wrote a run to, with its SQLite side files and, when it is
    then empty, its folder."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only if empty


def _later_stages(run_dir: Path, experiment, data_path, finetune_names: list[str], settings) -> None:
    """analyze -> evaluate -> report, each skipped when `stages.json` says it finished."""
    ev = experiment.evaluation
    banner("analyze", str(run_dir))
    if "analyze" not in finished_stages(run_dir):
        started = stage_start()
        analyze(run_dir, experiment.analysis, data_path, experiment=experiment)
        mark_stage(run_dir, "analyze", started)

    banner("evaluate", ", ".join([*finetune_names, *(f"{t} zero-shot" for t in ev.zero_shot_tasks)]) or "nothing")
    if "evaluate" not in finished_stages(run_dir):
        started = stage_start()
        model = run_dir / MODEL_DIR
        if finetune_names:
            evaluate_tasks(model, [get_task(n) for n in finetune_names], data_path, run_dir / FINETUNE_RESULTS.parent,
                           ev.seeds, settings, resume=True)
        if ev.zero_shot_tasks:
            zero_shot_tasks(model, [get_task(n) for n in resolve_tasks(ev.zero_shot_tasks)], data_path,
                            run_dir / ZERO_SHOT_RESULTS.parent, ev.pooling)
        mark_stage(run_dir, "evaluate", started)

    started = stage_start()
    banner("report", str(run_dir / "report"))
    build_report(run_dir, experiment)  # always rebuilt: cheap, and it reflects whatever is on disk now
    mark_stage(run_dir, "report", started)

