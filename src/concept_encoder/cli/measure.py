"""Verbs that measure a trained model: zero-shot, evaluate, analyze, k-sweep, mteb, long-context, static-student."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..rundir import DEFAULT_OUTPUT_ROOT, MTEB_RESULTS, check_writable, is_run_folder
from .common import (
    add_columns,
    add_data_dir,
    add_pooling,
    add_quiet,
    add_registry,
    add_verb,
    parse_columns,
    record_stage,
    removed_on_failure,
    tasks_of,
    write_section,
)

TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


def zero_shot(args: argparse.Namespace) -> int:
    """Zero-shot similarity of one or more models on STS tasks, beside the TF-IDF cosine baseline; with
    --results-file, the models side by side as a generated section of that markdown file."""
    from ..data import resolve_data_dir
    from ..evaluation import load_encoder, zero_shot_task
    from ..evaluation.zero_shot import check_task_files, zero_shot_section

    data_dir = resolve_data_dir(args.data_dir, required=False)
    tasks = tasks_of(args)
    check_task_files(tasks, data_dir, args.split)
    if len(set(args.model)) != len(args.model):
        raise ValueError(f"zero-shot: a model is named twice ({' '.join(args.model)})")
    results = {}
    width = max(10, *(len(task.name) + 2 for task in tasks))  # a user task's name is its file path
    for name in args.model:
        model, tokenizer = load_encoder(name, args.pooling)
        if len(args.model) > 1:
            print(f"\n{name}")
        print(f"{'task':<{width}}{'split':<12}{'n':>6}{'model Spearman':>16}{'late interaction':>18}{'TF-IDF cosine':>15}")
        results[name] = []
        for task in tasks:
            result = zero_shot_task(model, tokenizer, task, data_dir, args.split)
            results[name].append(result)
            summary, baseline = result["summary"], result["baselines"]["tfidf_cosine"]
            for prefix, split in (("", args.split), ("heldout_", "held-out")):
                if f"{prefix}spearman" not in summary:
                    continue
                maxsim = summary.get(f"{prefix}maxsim_spearman")  # concept encoders only
                maxsim = "–" if maxsim is None else f"{100 * maxsim['mean']:.2f}"
                print(f"{task.name:<{width}}{split:<12}{result['sizes'][prefix.rstrip('_') or 'report']:>6}"
                      f"{100 * summary[f'{prefix}spearman']['mean']:>16.2f}{maxsim:>18}"
                      f"{100 * baseline[f'{prefix}spearman']:>15.2f}")
    if args.results_file:
        command = " ".join(["concept-encoder zero-shot", *args.model, "--tasks", *args.tasks]
                           + ([f"--pooling {args.pooling}"] if args.pooling != "mean" else [])
                           + ([f"--split {args.split}"] if args.split != "validation" else [])
                           + ([f"--columns {args.columns}"] if args.columns else []))
        write_section(args.results_file, args.section, zero_shot_section(results, command))
    return 0


def static_student(args: argparse.Namespace) -> int:
    """Distil the teacher into a model2vec static model (the cheapest student of the same teacher)."""
    from ..inference.static import distill_static

    out = distill_static(args.teacher, args.to, args.pca_dims)
    print(f"static student of {args.teacher}: {out} (score it with `zero-shot {out}` or `long-context --static {out}`)")
    return 0


def evaluation_folder(model: str, output_dir: str | None) -> Path:
    """Where `evaluate MODEL` writes: --output-dir; else MODEL/evaluation for a local folder; else (a Hub name)
    runs/evaluations/<the name with / as __>, never a path spelt by the name (`org/name` would create
    ./org/name/evaluation, which transformers would then take for the model)."""
    if output_dir:
        return Path(output_dir)
    if Path(model).is_dir():
        return Path(model) / "evaluation"
    return Path(DEFAULT_OUTPUT_ROOT) / "evaluations" / model.strip("/").replace("/", "__")


def evaluate(args: argparse.Namespace) -> int:
    """Fine-tune (or zero-shot) a model on benchmark tasks beside the baselines; results.json + results.md."""
    from ..data import resolve_data_dir
    from ..evaluation.finetune import check_evaluation, evaluate_tasks, load_settings, zero_shot_tasks
    from ..evaluation.zero_shot import check_task_files
    from ..inference.encoder import check_loadable
    from ..reporting import format_results

    data_dir = resolve_data_dir(args.data_dir, required=False)
    tasks = tasks_of(args)
    output = evaluation_folder(args.model, args.output_dir)
    if args.mode == "zero-shot":
        check_task_files(tasks, data_dir)
    else:
        rates = args.learning_rate[0] if args.learning_rate and len(args.learning_rate) == 1 else args.learning_rate
        settings = load_settings(args.config, [t.name for t in tasks], learning_rate=rates,
                                 num_train_epochs=args.epochs, max_train_examples=args.max_train_examples,
                                 max_eval_examples=args.max_eval_examples, head=args.head)
        for task in tasks:  # every task's files and head before the first fine-tuning (not after two tasks)
            check_evaluation(task, settings[task.name], data_dir)
    check_loadable(args.model)  # before any folder exists
    with removed_on_failure(output):
        check_writable(output)
        if args.mode == "zero-shot":
            path = zero_shot_tasks(args.model, tasks, data_dir, output, args.pooling)
        else:
            path = evaluate_tasks(args.model, tasks, data_dir, output, args.seeds, settings, args.keep_models)
    print(format_results(json.loads(path.read_text())))
    print(f"results: {path} (and results.md)")
    return 0


def analyze(args: argparse.Namespace) -> int:
    """Concept diagnostics of a run (or a model folder with --probe-file), with the gate verdicts."""
    from ..analysis.analyze import analyze as run_analysis
    from ..config import AnalysisConfig
    from ..data import resolve_data_dir

    settings = None
    if args.probe_file or args.probe_documents:
        settings = AnalysisConfig(probe_file=args.probe_file, probe_documents=args.probe_documents or 128)
    record = run_analysis(args.run, settings, resolve_data_dir(args.data_dir, required=False))
    width = max(len(k) for k in record["diagnostics"])
    print(f"probe: {record['probe']['source']}")
    for key, value in record["diagnostics"].items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(f"analysis: {record['output_dir']}/analysis.json (and {', '.join(record['plots'].values())})")
    return 0


def k_sweep(args: argparse.Namespace) -> int:
    """A recursive model's zero-shot STS at several iteration counts K (the plan's Gate 3)."""
    from ..analysis.k_sweep import finetuned_metrics
    from ..analysis.k_sweep import k_sweep as run_sweep
    from ..data import resolve_data_dir

    finetune = []
    if args.finetune:
        from ..data.tasks import get_task, resolve_tasks
        from ..evaluation.finetune import load_settings

        names = resolve_tasks(args.finetune)
        settings = load_settings(args.config, names, max_train_examples=args.max_train_examples,
                                 max_eval_examples=args.max_eval_examples)
        finetune = [(get_task(name, parse_columns(args.columns)), settings[name]) for name in names]
    record = run_sweep(args.run, args.ks, tasks_of(args), resolve_data_dir(args.data_dir, required=False),
                       pooling=args.pooling, finetune=finetune, seeds=args.seeds)
    finetuned = record.get("finetuned", {})
    columns = [f"{task} zero-shot" for task in record["by_task"]] + [
        f"{task} fine-tuned {metric.replace('heldout_', 'held-out ')}" for task, by_k in finetuned.items()
        for metric in finetuned_metrics(by_k)]
    print(f"{'K':>4}{'mean zero-shot':>16}  " + "  ".join(columns) + "   (x 100)")
    for k, value in record["points"].items():
        cells = [f"{100 * v[k]:.2f}" for v in record["by_task"].values()]
        cells += ["–" if metric not in by_k.get(k, {}) else f"{100 * by_k[k][metric]:.2f}"  # a K not fine-tuned
                  for by_k in finetuned.values() for metric in finetuned_metrics(by_k)]
        print(f"{k:>4}{100 * value:>16.2f}  " + "  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, columns)))
    gain = record.get("gain_12_over_6")
    print(f"trained at K = {record['trained_k']}; gain of K=12 over K=6: "
          + ("n/a" if gain is None else f"{100 * gain:+.2f} (x 100)"))
    return 0


def mteb(args: argparse.Namespace) -> int:
    """MTEB tasks through the mteb package (local files when a data folder is set); into the run and registry."""
    from ..data import resolve_data_dir
    from ..evaluation.mteb_runner import run_mteb
    from ..reporting import markdown_table, mteb_rows, text_table

    run_dir = Path(args.run) if is_run_folder(Path(args.run)) else None
    output = Path(args.output_dir) if args.output_dir else (run_dir / MTEB_RESULTS.parent if run_dir else None)
    if output is not None:
        check_writable(output)
    summary = run_mteb(args.run, args.tasks, resolve_data_dir(args.data_dir, required=False), output, args.pooling,
                       args.batch_size, args.max_examples, args.trust_remote_code)
    print(text_table(["task", "split", "main score", "x 100"], mteb_rows(summary), 3))
    if run_dir is not None and output == run_dir / MTEB_RESULTS.parent:
        record_stage(run_dir, "mteb", args.registry)
    elif output is None:
        print(markdown_table(["task", "split", "main score", "x 100"], mteb_rows(summary), 3))
    print(f"mteb: {summary['seconds']:.0f} s on {summary['data']} data" + (f"; results: {output}/results.json" if output else ""))
    return 0


def long_context(args: argparse.Namespace) -> int:
    """Long inputs: the local `article_halves` proxy as N grows (and SCROLLS from the Hub), beside TF-IDF and MiniLM."""
    from ..data import resolve_data_dir
    from ..evaluation.long_context import BASELINES, long_context_section, run_long_context
    from ..rundir import write_json

    data_dir = resolve_data_dir(args.data_dir, required=True)
    for model in args.models:
        if not Path(model).exists():
            raise FileNotFoundError(f"{model}: no such run or model folder")
    results = run_long_context(args.models, data_dir, tuple(args.lengths), args.articles,
                               references=not args.no_references, truncated=tuple(args.also_truncated),
                               scrolls=tuple(args.scrolls), static=args.static, baselines=tuple(args.baselines),
                               chunked=tuple(args.also_chunked))
    command = " ".join(["concept-encoder long-context", *args.models]
                       + (["--also-truncated", *map(str, args.also_truncated)] if args.also_truncated else [])
                       + (["--also-chunked", *map(str, args.also_chunked)] if args.also_chunked else [])
                       + (["--static", args.static] if args.static else [])
                       + (["--baselines", *args.baselines] if tuple(args.baselines) != BASELINES else []))
    section = long_context_section(results, command)
    print(section)
    if args.output:
        write_json(Path(args.output), results)
    if args.results_file:
        write_section(args.results_file, args.section, section)
    return 0


def _chunk_size(text: str) -> int:
    """A chunk holds [CLS], at least one text token and [SEP]."""
    value = int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"{value}: a chunk needs room for [CLS], a token and [SEP] (3 or more)")
    return value


def register(verbs) -> None:
    p = add_verb(verbs, "zero-shot", "zero-shot STS: cosine of pooled vectors, Spearman x 100, beside TF-IDF",
                 ["concept-encoder zero-shot runs/demo_20261206_120000",
                  "concept-encoder zero-shot RUN sentence-transformers/all-MiniLM-L6-v2 --tasks stsb sick-r "
                  "--results-file docs/results.md --section sts"])
    p.add_argument("model", nargs="+", help="run folders, model folders (concept encoder, HF encoder, model2vec) "
                   "or Hub names; several are scored one after another")
    p.add_argument("--tasks", nargs="+", default=["zero-shot"], help="sts tasks or groups, or user files")
    p.add_argument("--split", default="validation", help="the split to score (a held-out part of train is "
                                                         "scored beside it where the task has one)")
    add_pooling(p, help="concept encoders: mean of concepts, a fine-tuned weighted pooling, or the pretrained "
                        "decoder's states (no bypass)")
    add_columns(p)
    add_data_dir(p)
    p.add_argument("--results-file", help="markdown file whose --section is rewritten with the models side by side")
    p.add_argument("--section", default="zero-shot", help="the generated section of --results-file to rewrite")
    add_quiet(p)
    p.set_defaults(run_verb=zero_shot)

    p = add_verb(verbs, "static-student", "distil a teacher into a model2vec static model (a baseline)",
                 "concept-encoder static-student --to runs/m2v_minilm")
    p.add_argument("--teacher", default=TEACHER,
                   help="sentence encoder folder or Hub name (the default loads offline from its PyPI package)")
    p.add_argument("--to", required=True, help="the folder to write (kept as it is when it already holds one)")
    p.add_argument("--pca-dims", type=int, default=256, help="output width")
    p.set_defaults(run_verb=static_student)

    p = add_verb(verbs, "evaluate", "fine-tune on benchmark tasks; report beside the baselines",
                 ["concept-encoder evaluate runs/demo_20261206_120000 --tasks stsb mrpc --seeds 1 2 3",
                  "concept-encoder evaluate sentence-transformers/all-MiniLM-L6-v2 --tasks stsb --mode zero-shot"])
    p.add_argument("model", help="a concept-encoder model folder, or any HF encoder folder or Hub name")
    p.add_argument("--tasks", nargs="+", default=["all"], help="tasks or groups, or user files")
    p.add_argument("--mode", choices=["finetune", "zero-shot"], default="finetune",
                   help="fine-tune a head per task and seed, or score pooled vectors as they are")
    add_pooling(p, help="zero-shot mode: as in zero-shot")
    p.add_argument("--keep-models", action="store_true",
                   help="keep each fine-tuned best model under OUTPUT/models/TASK_seedS (e.g. for weighted pooling)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="fine-tuning seeds (mean ± std)")
    p.add_argument("--config", help="per-task fine-tuning settings, e.g. configs/eval/default.yaml "
                                    "(unset: the built-in defaults)")
    add_columns(p)
    p.add_argument("--learning-rate", type=float, nargs="+",
                   help="overrides the config for every task; several rates: a grid, chosen per seed on the "
                        "selection split (never on the reported one); put the model before it")
    p.add_argument("--epochs", type=float, help="overrides the config for every task")
    p.add_argument("--max-train-examples", type=int, help="a fixed slice of the training split (quick runs)")
    p.add_argument("--max-eval-examples", type=int, help="a fixed slice of the reported split (quick runs)")
    p.add_argument("--head", choices=["weighted", "via_decoder", "via_decoder_bypass", "pair", "pair_cosine"],
                   help="concept-encoder head (unset: the config's; HF encoders use their own)")
    add_data_dir(p)
    p.add_argument("--output-dir", help="where results.json goes (unset: MODEL/evaluation for a model folder, "
                                        "runs/evaluations/ORG__NAME for a Hub name)")
    p.set_defaults(run_verb=evaluate)

    p = add_verb(verbs, "analyze", "concept diagnostics of a trained run (probe set, plots, analysis.json)",
                 ["concept-encoder analyze runs/demo_20261206_120000",
                  "concept-encoder analyze MODEL_DIR --probe-file texts.txt"])
    p.add_argument("run", help="a run folder (probe: its held-out documents) or a model folder (needs --probe-file)")
    p.add_argument("--probe-file", help="one text per line (.txt or .gz)")
    p.add_argument("--probe-documents", type=int, help="held-out documents to probe (unset: 128)")
    add_data_dir(p)
    add_quiet(p)
    p.set_defaults(run_verb=analyze)

    p = add_verb(verbs, "k-sweep", "a recursive model's zero-shot STS at several iteration counts K",
                 ["concept-encoder k-sweep runs/recursive_k6_20261206_120000 --ks 2 4 6 8 12",
                  "concept-encoder k-sweep RUN --ks 2 6 12 --finetune stsb --config configs/eval/study.yaml --seeds 1 2 3"])
    p.add_argument("run", help="a run folder or a model folder of a weight-shared concept encoder")
    p.add_argument("--ks", nargs="+", type=int, default=[2, 4, 6, 8, 12], help="iteration counts to score")
    p.add_argument("--tasks", nargs="+", default=["zero-shot"], help="sts tasks or groups, or user files")
    add_columns(p)
    add_pooling(p, choices=["mean", "decoder"])
    p.add_argument("--finetune", nargs="+", metavar="TASK",
                   help="also fine-tune these tasks at every K, by the evaluation protocol (e.g. stsb)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="fine-tuning seeds (mean) with --finetune")
    p.add_argument("--config", help="per-task fine-tuning settings with --finetune, e.g. configs/eval/study.yaml "
                                    "(unset: the built-in defaults)")
    p.add_argument("--max-train-examples", type=int, help="with --finetune: a fixed slice of each train split")
    p.add_argument("--max-eval-examples", type=int, help="with --finetune: a fixed slice of each reported split")
    add_data_dir(p)
    p.set_defaults(run_verb=k_sweep)

    p = add_verb(verbs, "mteb", "MTEB tasks through the mteb package; local files when a data folder is set",
                 "concept-encoder mteb runs/demo_20261206_120000 --tasks STSBenchmark SICK-R")
    p.add_argument("run", help="a run folder, a concept-encoder model folder, or any sentence-transformers model")
    p.add_argument("--tasks", nargs="+", default=["STSBenchmark", "SICK-R"],
                   help="mteb task names; offline: STSBenchmark SICK-R GlueSST2 GlueMRPC")
    add_pooling(p)
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--max-examples", type=int, help="the first rows of each local split only (quick runs)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a sentence-transformers folder run the code it names (this package's own exports "
                        "are recognised and need no flag)")
    p.add_argument("--output-dir", help="where results.json goes (unset: RUN/evaluation/mteb for a run folder)")
    add_data_dir(p)
    add_registry(p)
    add_quiet(p)
    p.set_defaults(run_verb=mteb)

    p = add_verb(verbs, "long-context", "long inputs: accuracy and seconds per 1,000 documents as N grows",
                 ["concept-encoder long-context runs/teacher_long_rotary_20261206_120000 --lengths 512 8192",
                  "concept-encoder long-context --static runs/m2v_minilm --results-file docs/results.md"])
    p.add_argument("models", nargs="*", help="concept-encoder run or model folders (rotary positions read any N)")
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192],
                   help="document lengths N in WordPiece tokens; each half is N/2")
    p.add_argument("--articles", type=int, default=200, help="articles in the task")
    p.add_argument("--no-references", action="store_true", help="skip TF-IDF and MiniLM")
    p.add_argument("--also-truncated", nargs="*", type=int, default=[], metavar="TOKENS",
                   help="each concept encoder again, reading only its first TOKENS tokens (does reading further help?)")
    p.add_argument("--also-chunked", nargs="*", type=_chunk_size, default=[], metavar="TOKENS",
                   help="each concept encoder again, reading the whole half in TOKENS-token chunks, their vectors "
                        "averaged (a model trained on short windows reads a long text as its windows)")
    p.add_argument("--static", metavar="DIR", help="a model2vec student folder (`static-student --to DIR`) as a row")
    baselines = ["tfidf", "bm25", "minilm", "minilm-chunked"]  # evaluation.long_context.BASELINES (not imported here)
    p.add_argument("--baselines", nargs="*", default=baselines, choices=baselines, help="reference rows")
    p.add_argument("--section", default="long-context", help="the generated section of --results-file to rewrite")
    p.add_argument("--scrolls", nargs="*", default=[], choices=["contract_nli", "quality"],
                   help="SCROLLS tasks from the Hub (needs the network)")
    p.add_argument("--output", help="results JSON")
    p.add_argument("--results-file", help="markdown file whose long-context section is rewritten (docs/results.md)")
    add_data_dir(p, hub_fallback=False)
    add_quiet(p)
    p.set_defaults(run_verb=long_context)
