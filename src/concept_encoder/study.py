"""`concept-encoder study STUDY.yaml`: run the plan's contenders under one token budget and write the comparison.

A study file names its contenders (experiment configs), the token budget every one of them must spend
(max_steps x batch x accumulation x block size, checked before any compute), an optional recursive K
sweep and an uncompressed reference encoder for zero-shot STS. Each contender runs as a resumable
`experiment` in `OUTPUT/<contender>/`; a rerun skips finished contenders and resumes a stopped one. The
tables go between the study's markers in the results file, so hand-written conclusions around them stay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from .analysis.gates import SCALE_NOTE
from .analysis.k_sweep import finetuned_metrics, k_sweep, sweep_settings
from .config import ConfigError, build_section, load_experiment, read_yaml_mapping
from .data import resolve_data_dir
from .data.tasks import TASKS, get_task, resolve_tasks
from .evaluation.finetune import zero_shot_tasks
from .evaluation.long_context import BASELINES as LONG_BASELINES
from .evaluation.long_context import HELD_OUT_ARTICLES
from .evaluation.zero_shot import zero_shot_table
from .experiment import finetune_settings, run_experiment
from .registry.collect import RunFiles, read_run, run_metrics
from .registry.report import verdicts_for
from .reporting import markdown_table, with_section
from .rundir import (
    EXPERIMENT_FILE,
    MODEL_DIR,
    PROVENANCE_FILE,
    changed_modules,
    code_version,
    config_hash,
    finished_stages,
    newest_run,
    path_part_problem,
    read_json,
    write_atomic,
    write_json,
)


@dataclass
class StudyConfig:
    name: str
    token_budget: int  # training tokens per contender
    contenders: dict[str, str]  # contender name -> experiment config
    output_dir: str = "runs/study"
    results_file: str = "docs/results.md"
    k_sweep_contender: str | None = None  # a weight-shared contender to evaluate at several K
    k_sweep_ks: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 12])
    k_sweep_tasks: list[str] = field(default_factory=lambda: ["stsb", "sick-r"])
    k_sweep_finetune_tasks: list[str] = field(default_factory=list)  # also fine-tuned at every K, by the contender's
    # evaluation settings and seeds
    reference: str | None = None  # an uncompressed HF encoder: zero-shot STS beside the contenders
    reference_tasks: list[str] = field(default_factory=lambda: ["stsb", "sick-r"])
    # the model2vec student of `reference` (distilled in seconds, no training text) beside the contenders on
    # zero-shot STS and, when measured, long inputs: the static baseline a user would pick instead
    static_student: bool = False
    # long inputs: `article_halves` at these N for every contender (none: not run), beside these baselines; each
    # contender also reads a long half in chunks of its training window (data.block_size), their vectors averaged
    long_context_lengths: list[int] = field(default_factory=list)
    long_context_articles: int = 200
    long_context_baselines: list[str] = field(default_factory=lambda: ["tfidf", "bm25", "minilm-chunked"])

    def check(self) -> None:
        if not self.contenders:
            raise ValueError("contenders: name at least one")
        for name in self.contenders:
            problem = path_part_problem(name)
            if problem is not None:
                raise ValueError(f"contenders: {problem} (each contender's runs go in a folder of that name)")
        if self.k_sweep_contender is not None and self.k_sweep_contender not in self.contenders:
            raise ValueError(f"k_sweep_contender: {self.k_sweep_contender!r} is not a contender")
        if self.k_sweep_finetune_tasks and self.k_sweep_contender is None:
            raise ValueError("k_sweep_finetune_tasks: needs a k_sweep_contender")
        for name in (*self.k_sweep_tasks, *self.k_sweep_finetune_tasks):
            resolve_tasks([name])  # an unknown task fails now, not after the contenders have trained
        if self.token_budget <= 0:
            raise ValueError("token_budget: must be positive")
        unknown = sorted(set(self.long_context_baselines) - set(LONG_BASELINES))
        if unknown:
            raise ValueError(f"long_context_baselines: {unknown} unknown; choose from {list(LONG_BASELINES)}")
        if any(n < 2 for n in self.long_context_lengths) or self.long_context_articles < 10:
            raise ValueError("long_context_lengths: each N >= 2; long_context_articles: >= 10")
        if self.static_student and self.reference is None:
            raise ValueError("static_student: needs a reference (the teacher the static student is distilled from)")


def load_study(path: str | Path) -> StudyConfig:
    study = build_section(StudyConfig, "study", read_yaml_mapping(path, "study file"), path)
    for name, config in study.contenders.items():
        experiment = load_experiment(config)  # every contender's config is valid before anything runs
        training = experiment.training
        tokens = (training.max_steps * training.per_device_train_batch_size * training.gradient_accumulation_steps
                  * experiment.data.block_size)
        if training.max_steps <= 0:
            raise ConfigError(f"{config}: contender {name} needs training.max_steps for a token budget")
        if study.long_context_lengths:  # a contender that read the long-input task's articles would be scored on them
            read = [entry for entry in experiment.data.corpus for held in HELD_OUT_ARTICLES  # folder/file, globs too
                    if fnmatch(held, "/".join(Path(entry).parts[-2:]))]
            if read:
                raise ConfigError(f"{config}: contender {name} trains on {sorted(set(read))}, the long-input task's "
                                  f"held-out articles ({', '.join(HELD_OUT_ARTICLES)}); drop them or the study's "
                                  "long_context_lengths")
        if tokens != study.token_budget:
            raise ConfigError(f"{config}: contender {name} trains on {tokens:,} tokens (max_steps x batch x "
                              f"accumulation x block_size, per process), not the study's token_budget {study.token_budget:,}")
    return study


def contender_run(output_dir: Path, name: str) -> Path | None:
    """The contender's run folder (the newest, if a failed start left more than one)."""
    return newest_run(output_dir / name)


def run_study(path: str | Path, data_dir: str | Path | None = None, only: list[str] | None = None,
              tables_only: bool = False) -> Path:
    """Run every contender (or `only` these), then the K sweep and the reference; write the results file."""
    study = load_study(path)
    unknown = sorted(set(only or []) - set(study.contenders))
    if unknown:
        raise ConfigError(f"{path}: --only {unknown}: not contenders ({sorted(study.contenders)})")
    output = Path(study.output_dir)
    registry = output / "registry.sqlite"
    data_path = resolve_data_dir(data_dir, required=False)
    if study.long_context_lengths and data_path is None and not tables_only:  # said before hours of training
        raise ConfigError(f"{path}: long_context_lengths: the long-input task reads the local data folder; set "
                          "CONCEPT_ENCODER_DATA or --data-dir")
    if not tables_only:
        for name, config in study.contenders.items():
            if only and name not in only:
                continue
            run_dir = contender_run(output, name)
            if run_dir is not None and load_experiment(run_dir / EXPERIMENT_FILE).to_dict() != load_experiment(config).to_dict():
                raise ConfigError(f"{config}: contender {name} changed since {run_dir} was started from it; move that "
                                  "run folder away to rerun it, or restore the config")
            if run_dir is not None and "report" in finished_stages(run_dir):
                continue  # finished
            print(f"[study] {name}: {'resuming ' + run_dir.name if run_dir else 'starting'}", flush=True)
            run_experiment(None if run_dir else config, data_dir=data_dir, output_root=output / name,
                           resume=run_dir, registry_path=registry, cache_dir=output / ".cache")
        sweep_run = contender_run(output, study.k_sweep_contender) if study.k_sweep_contender else None
        finetuning = _sweep_finetuning(study)
        if sweep_run and (sweep_run / MODEL_DIR).exists() and _sweep_missing(sweep_run, study, finetuning):
            k_sweep(sweep_run, study.k_sweep_ks, [get_task(t) for t in resolve_tasks(study.k_sweep_tasks)], data_path,
                    **finetuning)
        tasks = [get_task(t) for t in resolve_tasks(study.reference_tasks)]
        if study.reference and _zero_shot_of(study, output, REFERENCE_RESULTS) is None:
            zero_shot_tasks(study.reference, tasks, data_path, (output / REFERENCE_RESULTS).parent)
        if study.static_student and _zero_shot_of(study, output, STATIC_RESULTS) is None:
            zero_shot_tasks(_static_student(study, output), tasks, data_path, (output / STATIC_RESULTS).parent)
        if study.long_context_lengths:
            write_results(study, Path(path))  # the contenders' tables land even if the long inputs fail
            _long_context(study, output, data_path)
    write_results(study, Path(path))
    return Path(study.results_file)


def _sweep_missing(run_dir: Path, study: StudyConfig, finetuning: dict) -> bool:
    """Whether the K sweep has still to run (again): no results, a K missing, or fine-tuned rows the study asks
    for that are missing, partial (a sweep that stopped), or made with other settings or seeds."""
    sweep = read_run(run_dir).k_sweep
    ks = {str(k) for k in study.k_sweep_ks}
    if sweep is None or ks - set(sweep.get("points", {})):
        return True
    if not finetuning:
        return False
    done = sweep.get("finetuned", {})
    return (sweep.get("finetune_settings") != sweep_settings(finetuning["finetune"])
            or sweep.get("finetune_seeds") != list(finetuning["seeds"])
            or any(ks - set(done.get(task.name, {})) for task, _ in finetuning["finetune"]))


def _sweep_finetuning(study: StudyConfig) -> dict:
    """The K sweep's fine-tuning: the recursive contender's own evaluation settings (file and overrides) and seeds."""
    if not study.k_sweep_finetune_tasks:
        return {}
    evaluation = load_experiment(study.contenders[study.k_sweep_contender]).evaluation
    names = resolve_tasks(study.k_sweep_finetune_tasks)
    settings = finetune_settings(evaluation, names)
    return {"finetune": [(get_task(name), settings[name]) for name in names], "seeds": evaluation.seeds}


LONG_CONTEXT_FILE = "long_context.json"
REFERENCE_RESULTS = "reference/results.json"  # the reference's zero-shot STS, under the study's output_dir
STATIC_RESULTS = "static_student/results.json"  # its model2vec student's


def _static_folder(study: StudyConfig, output: Path) -> Path:
    return output / f"m2v_{Path(study.reference).name}"


def _static_student(study: StudyConfig, output: Path) -> Path:
    """The model2vec student of the study's reference, distilled once into OUTPUT/m2v_<reference>."""
    from .inference.static import distill_static

    return distill_static(study.reference, _static_folder(study, output))


def _zero_shot_of(study: StudyConfig, output: Path, which: str) -> dict | None:
    """The reference's (REFERENCE_RESULTS) or its static student's (STATIC_RESULTS) zero-shot results when they
    were made by today's model on every one of today's reference_tasks, else None (to be made again: a stopped
    run leaves some tasks, another reference other numbers)."""
    results = read_json(output / which)
    model = study.reference if which == REFERENCE_RESULTS else str(_static_folder(study, output))
    missing = results is None or set(resolve_tasks(study.reference_tasks)) - set(results.get("tasks", {}))
    return None if missing or results.get("model") != model else results


def _long_context_settings(study: StudyConfig, output: Path) -> dict:
    """What the long-input table is made of: every finished contender's model (and its chunk), the lengths, the
    articles, the baselines. A table made of anything else is made again."""
    models = {}
    for name in study.contenders:
        run_dir = contender_run(output, name)
        pretrained = finished_stages(run_dir).get("pretrain") if run_dir is not None else None
        if pretrained is not None:  # the model's folder and when it was written: a model trained again is new
            models[name] = {"model": (run_dir / MODEL_DIR).as_posix(), "trained": pretrained.get("finished"),
                            "chunk": load_experiment(run_dir / EXPERIMENT_FILE).data.block_size}
    return {"models": models, "lengths": list(study.long_context_lengths), "articles": study.long_context_articles,
            "baselines": list(study.long_context_baselines),
            "static": study.reference if study.static_student else None}


def _long_context(study: StudyConfig, output: Path, data_path: Path) -> None:
    """`article_halves` for the contenders beside the baselines, into OUTPUT/long_context.json (once per settings)."""
    from .evaluation.long_context import article_halves, concept_rows, contenders_for, run_halves

    settings = _long_context_settings(study, output)
    done = read_json(output / LONG_CONTEXT_FILE)
    if not settings["models"] or (done is not None and done.get("settings") == settings):
        return  # (run_study refused a missing data folder before any training)
    static = _static_student(study, output) if study.static_student else None
    rows = contenders_for([], static=static, baselines=tuple(study.long_context_baselines))
    for name, entry in settings["models"].items():
        rows += concept_rows(entry["model"], name, chunked=(entry["chunk"],))
    print(f"[study] long inputs: article_halves at N = {settings['lengths']} for {list(settings['models'])}", flush=True)
    task = article_halves(data_path, tuple(settings["lengths"]), settings["articles"])
    write_json(output / LONG_CONTEXT_FILE, run_halves(task, rows) | {"settings": settings, "commit": code_version()})


def check_study(path: str | Path) -> tuple[list[str], list[str]]:
    """The study's stale rows as (config changed, code changed) lines, one per contender that ran. A row is stale
    when today's config resolves differently from its run's, or when a package module it used has changed."""
    study = load_study(path)
    configs, code = [], []
    for name, config in study.contenders.items():
        run_dir = contender_run(Path(study.output_dir), name)
        if run_dir is None:
            continue
        ran, today = load_experiment(run_dir / EXPERIMENT_FILE).to_dict(), load_experiment(config).to_dict()
        if ran != today:
            keys = sorted(f"{section}.{key}" for section in today for key in set(today[section]) | set(ran.get(section, {}))
                          if today[section].get(key) != ran.get(section, {}).get(key))
            configs.append(f"{name}: config changed since {run_dir} ran ({', '.join(keys) or 'sections'})")
        changed = changed_modules(run_dir)
        if changed is None:
            code.append(f"{name}: {run_dir} has no {PROVENANCE_FILE} (run before provenance was recorded): its code "
                        "is unknown")
        elif changed:
            code.append(f"{name}: code changed since {run_dir} ran: {', '.join(changed)}")
    return configs, code


# ---------------------------------------------------------------------------- tables
def _cell(metrics: dict, stage: str, key: str, scale: float = 100.0, digits: int = 1) -> str:
    value = metrics.get(stage, {}).get(key)
    return "–" if value is None else f"{value[0] * scale:.{digits}f}"


def _contender_rows(study: StudyConfig) -> list[tuple[str, RunFiles, dict, object, list]]:
    """(name, its run folder's files, metrics by stage, its experiment config, its gate verdicts) per contender that
    ran; each run folder is read once."""
    rows = []
    for name in study.contenders:
        run_dir = contender_run(Path(study.output_dir), name)
        if run_dir is not None:
            run = read_run(run_dir)
            rows.append((name, run, run_metrics(run), load_experiment(run_dir / EXPERIMENT_FILE), verdicts_for(run)))
    return rows


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    return {stage: info["seconds"] for stage, info in finished_stages(run_dir).items()}


STAGE_LABELS = {"finetune": "ft", "zero_shot": "zero-shot"}
EXTRA_SPLITS = {"heldout": "held-out", "mismatched": "mismatched"}  # reported beside a task's own split
TASK_LABELS = {"stsb": "STS-B", "sick-r": "SICK-R", "sick-e": "SICK-E", "mrpc": "MRPC", "qqp": "QQP", "mnli": "MNLI",
               "cola": "CoLA", "sst2": "SST-2", "rte": "RTE", "paws": "PAWS"}
BASELINE_ROWS = (  # (baseline name in the results, row label, stages it has a number for)
    ("majority", "_majority class_", ("finetune",)),
    ("tfidf_cosine", "_TF-IDF cosine (no training)_", ("finetune", "zero_shot")),
    ("tfidf_linear", "_TF-IDF + linear_", ("finetune",)),
)


def _benchmark_columns(rows) -> list[tuple[str, str, str]]:
    """(stage, task, metric) of every number some contender has: fine-tuned columns first, then zero-shot, each
    task in the order the contenders list it, its metrics in the task's order, a held-out metric beside its own."""
    columns = []
    for stage in STAGE_LABELS:
        keys = list(dict.fromkeys(k for _, _, m, _, _ in rows for k in m.get(stage, {})))
        for task in dict.fromkeys(k.split(".", 1)[0] for k in keys):
            known = get_task(task).metrics if task in TASKS else ()
            for metric in known:
                columns += [(stage, task, name) for name in (metric, *(f"{split}_{metric}" for split in EXTRA_SPLITS))
                            if f"{task}.{name}" in keys]
    return columns


def _benchmark_table(rows, reference: dict | None, reference_name: str | None) -> list[str]:
    columns = _benchmark_columns(rows)
    header = []
    for stage, task, metric in columns:
        split = next((name for name in EXTRA_SPLITS if metric.startswith(f"{name}_")), None)
        plain = metric if split is None else metric.removeprefix(f"{split}_")
        header.append(f"{TASK_LABELS.get(task, task)} {STAGE_LABELS[stage]} {plain}"
                      + ("" if split is None else f" {EXTRA_SPLITS[split]}"))
    table = [[name, *(_cell(m, stage, f"{task}.{metric}") for stage, task, metric in columns)]
             for name, _, m, _, _ in rows]
    if rows:  # the baselines are the same for every contender (same splits): read them from one
        b = rows[0][2]
        table += [[label, *(_cell(b, "baseline", f"{task}.{baseline}.{metric}") if stage in stages else "–"
                            for stage, task, metric in columns)] for baseline, label, stages in BASELINE_ROWS]
    if reference:  # an uncompressed encoder, zero-shot only
        summary = {t: r.get("summary", {}) for t, r in reference["tasks"].items()}
        table.append([f"_{reference_name} (uncompressed reference, mean pooling)_",
                      *(f"{summary[task][metric]['mean'] * 100:.1f}" if stage == "zero_shot"
                        and metric in summary.get(task, {}) else "–" for stage, task, metric in columns)])
    return markdown_table(["contender", *header], table).splitlines()


def study_tables(study: StudyConfig, source: Path) -> str:
    rows = _contender_rows(study)
    out = [(f"_Generated by `concept-encoder study {source.as_posix()}` on {time.strftime('%Y-%m-%d')}; "
            f"{study.token_budget:,} training tokens per contender; run folders under `{study.output_dir}/`._"), ""]

    table = []
    for name, run, m, experiment, all_verdicts in rows:
        seconds = _stage_seconds(run.run_dir)
        rank = m.get("analysis", {}).get("effective_rank_per_sample")
        verdicts = [v for v in all_verdicts if v.verdict != "not measured"]
        summary = run.summary or {}
        loop = summary.get("train_runtime_s")  # the Trainer's: a resumed run's last session only
        loop = "–" if loop is None else f"{loop:.0f}" + (" (last session)" if summary.get("resumed_from") else "")
        table.append([name, experiment.objective.name, _cell(m, "pretrain", "eval_loss", 1, 3),
                      f"{seconds.get('pretrain', 0):.0f}", loop,
                      f"{seconds.get('evaluate', 0):.0f}",
                      "–" if rank is None else f"{rank[0]:.2f} ({experiment.model.num_concepts})",
                      _cell(m, "analysis", "effective_rank_global", 1, 1), _cell(m, "analysis", "similarity_abs_mean", 1, 3),
                      _cell(m, "analysis", "dominance_per_sample", 1, 3), _cell(m, "analysis", "tokens_read_fraction", 1, 2),
                      f"{sum(v.verdict == 'pass' for v in verdicts)}/{len(verdicts)}"])
    provenance = []
    for name, run, _, experiment, _ in rows:
        record = read_json(run.run_dir / PROVENANCE_FILE) or {}
        commits = sorted(set((record.get("stages") or {}).values())) or ["not recorded"]
        provenance.append(f"{name} `{config_hash(experiment.to_dict())}` (commit {', '.join(commits)})")
    out += [(f"_Tables written at commit {code_version()}. Contenders' resolved-config hashes and the commits their "
            f"stages ran at: {'; '.join(provenance)}. `concept-encoder study {source.as_posix()} --check` lists the "
            "rows whose config or code changed since._"), ""]
    out += ["### Pretraining and concept diagnostics", "", markdown_table(
        ["contender", "objective", "val loss", "pretrain s", "training loop s", "eval s", "rank/sample (of C)",
         "global rank", "abs cos", "dominance", "tokens read", "gates passed"], table),
        "", ("_pretrain s: the whole stage (tokenizer, blocks, a teacher's one pass, training, its evaluations); "
            "training loop s: the Trainer's loop alone, what the token budget buys._")]

    out += ["", "### Benchmarks (× 100; dev chose the recipes, a held-out column's split chose nothing)", ""]
    reference = _zero_shot_of(study, Path(study.output_dir), REFERENCE_RESULTS) if study.reference else None
    out += _benchmark_table(rows, reference, study.reference)
    grids = {name: e.evaluation.learning_rate for name, _, _, e, _ in rows if e.evaluation.learning_rate is not None}

    for name, rate in grids.items():  # a rate chosen differently from the settings file's is said beside the table
        how = (f"a learning-rate grid {rate}, chosen per seed on the selection part (a hashed 10%) of each task's "
               "train split, apart from the reported held-out part"
               if isinstance(rate, list) else f"learning rate {rate:g}")
        out += ["", f"_{name} fine-tunes with {how}._"]

    zero_shot = _zero_shot_results(study, rows)
    if zero_shot:
        how = ("_Pooled: the cosine of the two texts' mean vectors (the benchmarks above). Late interaction: each "
               "concept of one text finds its most similar concept of the other, averaged both ways (MaxSim)."
               + (" The model2vec student is distilled from the reference in seconds, with no training text."
                  if study.static_student else "") + "_")
        out += ["", "### Zero-shot similarity, pooled and concept-level (Spearman × 100; held-out chose nothing)", "",
                zero_shot_table(zero_shot, digits=1), "", how]

    if study.k_sweep_contender:
        run_dir = contender_run(Path(study.output_dir), study.k_sweep_contender)
        sweep = read_run(run_dir).k_sweep if run_dir else None
        if sweep:
            ks = list(sweep["points"])
            out += ["", f"### Recursive K sweep ({study.k_sweep_contender}, trained at K = {sweep['trained_k']})", "",
                    markdown_table(["task", *(f"K={k}" for k in ks)],
                                   [[f"{task} zero-shot Spearman", *(f"{points[k] * 100:.1f}" for k in ks)]
                                    for task, points in sweep["by_task"].items()]
                                   + [[f"{task} fine-tuned {metric.replace('heldout_', 'held-out ')}",
                                       *("–" if metric not in by_k.get(k, {}) else f"{by_k[k][metric] * 100:.1f}"
                                         for k in ks)]
                                      for task, by_k in sweep.get("finetuned", {}).items()
                                      for metric in finetuned_metrics(by_k)])]
            if sweep.get("finetuned"):
                out += ["", (f"_Fine-tuned at each K with the contender's evaluation settings, seeds "
                            f"{sweep['finetune_seeds']} (mean): the model runs K steps while it fine-tunes and "
                            "while it is scored._")]

    long_inputs = read_json(Path(study.output_dir) / LONG_CONTEXT_FILE) if study.long_context_lengths else None
    if long_inputs:
        from .evaluation.long_context import halves_tables

        heading = (f"### Long inputs (`article_halves`, {long_inputs['articles']} held-out Wikipedia articles, "
                   f"measured at commit {long_inputs['commit']})")
        out += ["", heading, "", halves_tables(long_inputs)]
        if long_inputs.get("settings") != _long_context_settings(study, Path(study.output_dir)):
            stale = ("_Stale: measured for other contenders' models or other settings than the study's today; "
                     f"`concept-encoder study {source.as_posix()}` measures them again._")
            out += ["", stale]

    verdicts = {name: {v.gate.id: v for v in row_verdicts} for name, _, _, _, row_verdicts in rows}
    gate_ids = list(dict.fromkeys(g for by_id in verdicts.values() for g in by_id))  # every gate any row has
    table = [[name, *("–" if by_id.get(g) is None or by_id[g].value is None else f"{by_id[g].verdict} ({by_id[g].shown})"
                      for g in gate_ids)] for name, by_id in verdicts.items()]
    out += ["", "### Decision gates (verdict and the value it read)", "", markdown_table(["contender", *gate_ids], table),
            "", f"_{SCALE_NOTE}_"]
    return "\n".join(out) + "\n"


def _zero_shot_results(study: StudyConfig, rows) -> dict[str, list[dict]]:
    """Zero-shot STS results by row name: each contender that has them, then the static student and the reference."""
    output = Path(study.output_dir)
    named = [(name, run.zero_shot) for name, run, *_ in rows]
    if not any(results for _, results in named):
        return {}
    if study.reference and study.static_student:
        named.append((_static_folder(study, output).name, _zero_shot_of(study, output, STATIC_RESULTS)))
    if study.reference:
        named.append((study.reference, _zero_shot_of(study, output, REFERENCE_RESULTS)))
    return {name: list(results["tasks"].values()) for name, results in named if results}


def write_results(study: StudyConfig, source: Path) -> None:
    """Replace the study's tables in the results file (between its markers), keeping the rest."""
    path = Path(study.results_file)
    text = path.read_text(encoding="utf-8") if path.exists() else None
    write_atomic(path, with_section(text, f"study:{study.name}", study_tables(study, source)))
