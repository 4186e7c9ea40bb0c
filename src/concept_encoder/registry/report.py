"""`concept-encoder report RUN`: one markdown file and one self-contained HTML page (plots embedded) per run."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown
import yaml

from ..analysis import plots
from ..analysis.gates import evaluate_gates, format_verdicts, load_gates
from ..config import ExperimentConfig, load_experiment
from ..reporting import format_results, markdown_table, mteb_rows
from ..rundir import (
    ANALYSIS_RESULTS,
    EXPERIMENT_FILE,
    REPORT_DIR,
    TOKENIZER_DIR,
    write_atomic,
)
from .collect import RunFiles, flatten, read_run, run_facts, run_metrics

DIAGNOSTICS_SHOWN = [  # (key, what it says)
    ("effective_rank_per_sample", "RankMe of one input's C concepts (collapse within an input)"),
    ("effective_rank_per_sample_fraction", "… as a fraction of min(C, H) (the gates read this)"),
    ("effective_rank_global", "RankMe of all probe concepts stacked (directions used across inputs)"),
    ("sum_max_rank_original", "Σσ/σ₁ of the sample-averaged concepts (the original's number)"),
    ("dominance_per_sample", "σ₁/Σσ within an input"),
    ("participation_ratio", "(Σλ)²/Σλ² of the concept covariance"),
    ("dims_for_95_variance", "principal directions holding 95% of the variance"),
    ("similarity_abs_mean", "mean |cos| between two concepts of one input"),
    ("similarity_max", "most similar pair within an input (probe mean)"),
    ("dimension_std_min", "smallest per-dimension std"),
    ("dead_dimensions", "dimensions with std < 1e-4"),
    ("static_concepts", "concepts that barely change across inputs"),
    ("attention_entropy", "concept←token attention entropy, 1 = uniform reading"),
    ("tokens_read_mean", "effective number of tokens each concept reads (exp entropy)"),
]


def verdicts_for(run: Path | RunFiles, experiment: ExperimentConfig | None = None):
    """The gate verdicts of a run folder, or of its files already read (`experiment`: its parsed config, when the
    caller holds it)."""
    run = run if isinstance(run, RunFiles) else read_run(run)
    experiment = experiment or load_experiment(run.run_dir / EXPERIMENT_FILE)
    gates = load_gates(experiment.analysis.gates)
    return evaluate_gates(gates, flatten(run_metrics(run)), run_facts(experiment))


def _benchmark_rows(results: dict | None, mode: str) -> list[tuple[str, float, dict[str, float]]]:
    rows = []
    for name, result in (results or {}).get("tasks", {}).items():
        metric = result["headline_metric"]
        baselines = {b: values[metric] for b, values in result["baselines"].items() if metric in values}
        rows.append((f"{name} {mode}\n{metric}", result["summary"][metric]["mean"], baselines))
    return rows


def build_report(run_dir: str | Path, experiment: ExperimentConfig | None = None) -> tuple[Path, Path]:
    """Write report/report.md and report/report.html for a run folder; returns both paths. `experiment`: the run's
    parsed config when the caller holds it (the pipeline), else its experiment.yaml is read."""
    run_dir = Path(run_dir)
    if not (run_dir / EXPERIMENT_FILE).exists():
        raise FileNotFoundError(f"{run_dir}: not a run folder ({EXPERIMENT_FILE} missing)")
    out = run_dir / REPORT_DIR
    experiment = experiment or load_experiment(run_dir / EXPERIMENT_FILE)
    run = read_run(run_dir)
    summary, analysis, history = run.summary or {}, run.analysis, run.log_history
    finetune, zero_shot = run.finetune, run.zero_shot
    verdicts = verdicts_for(run, experiment)

    lines = [f"# {run_dir.name}", "", *_headline(zero_shot), ""]
    model = yaml.safe_dump(experiment.model_section, default_flow_style=True, width=1000).strip()
    lines += [f"- objective: `{experiment.objective.name}`; model: `{model}`",
              (f"- steps: {summary.get('global_step', '–')}, tokens seen: {summary.get('tokens_seen', '–')}, "
               f"wall clock: {summary.get('wall_clock_s', '–')} s on {summary.get('device', '–')} "
               f"(world size {summary.get('world_size', '–')})"),
              f"- final validation loss: {float('nan') if summary.get('eval_loss') is None else summary['eval_loss']:.4f}", ""]
    lines += ["## Decision gates", "", format_verdicts(verdicts), ""]

    lines += ["## Pretraining", ""]
    curve = plots.training_curves(history, out / "training_curves.png")
    ranks = [(e["step"], e["concepts/effective_rank_per_sample"]) for e in history
             if "concepts/effective_rank_per_sample" in e and "step" in e]
    concept_curve = plots.line(ranks, out / "concept_rank_during_training.png", "step", "RankMe per sample",
                               "Concept rank during pretraining") if ranks else None
    lines += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in (curve, concept_curve) if p] + [""]

    lines += ["## Concept diagnostics", ""]
    if analysis:
        d = analysis["diagnostics"]
        probe = analysis["probe"]
        facts = f"C = {d['num_concepts']}, H = {d['hidden_size']}"
        lines += [f"Probe: {probe['source']} (≤ {probe['max_length']} tokens each); {facts}.", "",
                  markdown_table(["diagnostic", "value", "meaning"],
                                 [[f"`{key}`", f"{d[key]:.4g}", meaning] for key, meaning in DIAGNOSTICS_SHOWN if key in d])]
        for name in ("similarity", "spectrum", "concept_attention"):
            if name not in analysis["plots"]:  # analysed before the plot existed
                continue
            source = run_dir / ANALYSIS_RESULTS.parent / Path(analysis["plots"][name]).name
            if source.exists():
                (out / source.name).parent.mkdir(parents=True, exist_ok=True)
                (out / source.name).write_bytes(source.read_bytes())
                lines += ["", f"![{name}]({source.name})"]
    else:
        lines += ["Not analysed yet (`concept-encoder analyze RUN`)."]
    lines += [""]

    lines += ["## Benchmarks", ""]
    for title, results in (("Fine-tuned", finetune), ("Zero-shot", zero_shot)):
        if results:
            lines += [f"### {title}", "", format_results(results, markdown=True), ""]
            protocols = {r["protocol"] for r in results["tasks"].values()}
            lines += [f"Protocol: {p}." for p in sorted(protocols)] + [""]
    if run.mteb:
        lines += ["### MTEB", "", markdown_table(["task", "split", "main score", "× 100"], mteb_rows(run.mteb), 3), "",
                  (f"mteb {run.mteb['mteb_version']}, {run.mteb['data']} data, `{run.mteb['pooling']}` pooling "
                  "(`concept-encoder mteb`); local splits are not MTEB's published test splits."), ""]
    bars = plots.benchmark_bars(_benchmark_rows(finetune, "fine-tuned") + _benchmark_rows(zero_shot, "zero-shot"),
                                out / "benchmarks.png")
    lines += [f"![benchmarks]({bars.name})", ""] if bars else ["Not evaluated yet (`concept-encoder evaluate`).", ""]

    sweep = run.k_sweep
    if sweep:
        points = [(int(k), v) for k, v in sweep["points"].items()]
        png = plots.line(points, out / "k_sweep.png", "iterations K at test time", sweep["metric"],
                         "Recursive encoder: K sweep")
        lines += ["## Recursive K sweep", "", f"![K sweep]({png.name})", ""]

    shown = experiment.to_dict()
    if experiment.data.train_tokenizer:  # data.tokenizer is a default the run never read: show what it used
        shown["data"]["tokenizer"] = (f"{TOKENIZER_DIR}/ (a {experiment.data.train_tokenizer} of "
                                      f"{experiment.data.tokenizer_vocab_size} tokens trained on the corpus)")
    lines += ["## Config", "", "```yaml", yaml.safe_dump(shown, sort_keys=False).rstrip(), "```", ""]
    text = "\n".join(lines)
    write_atomic(out / "report.md", text)
    write_atomic(out / "report.html", _html(run_dir.name, text, out))
    return out / "report.md", out / "report.html"


def _headline(zero_shot: dict | None) -> list[str]:
    """The first line a reader needs: zero-shot STS-B against the bag of words it must beat, with the gap."""
    stsb = (zero_shot or {}).get("tasks", {}).get("stsb")
    if not stsb or "spearman" not in stsb.get("summary", {}):
        return ["**Zero-shot STS-B**: not measured (`concept-encoder zero-shot RUN --tasks stsb`)."]
    own = 100 * stsb["summary"]["spearman"]["mean"]
    bar = 100 * stsb["baselines"]["tfidf_cosine"]["spearman"]
    verdict = "above" if own > bar else "below"
    return [f"**Zero-shot STS-B dev Spearman {own:.1f}, {verdict} TF-IDF cosine's {bar:.1f} "
            f"({own - bar:+.1f} points)**: the pooled concepts, no training on the task."]


def _without_raw_html(text: str) -> str:
    """The markdown with every <, > and & outside code escaped: Python-Markdown passes raw HTML through, and the
    report holds strings it did not write (file names, probe texts, config values). Code spans and fenced
    blocks are left as they are; markdown escapes those itself."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            parts = re.split(r"(`[^`]*`)", line)  # odd parts are code spans
            line = "".join(p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts))
        out.append(line)
    return "\n".join(out)


def _html(title: str, text: str, folder: Path) -> str:
    """Markdown -> one HTML page with every PNG inlined as a data URI (one file to mail or attach)."""
    body = markdown.markdown(_without_raw_html(text), extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        data = base64.b64encode((folder / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"/]+\.png)"', inline, body)
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
            f"<body>{body}</body></html>\n")

