"""`concept-encoder` command line: thin verbs over the packages."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from .errors import USER_ERRORS, ConfigError, RegistryError, TaskError
from .data import DATA_ENV_VAR
from .rundir import DEFAULT_OUTPUT_ROOT, EXPERIMENT_FILE, check_writable, is_run_folder

REGISTRY_HELP = "CONCEPT_ENCODER_REGISTRY, else runs/registry.sqlite"


def describe(args: argparse.Namespace) -> int:
    """Build the model a config describes and print its parameters and tensor shapes."""
    import torch

    from .modeling import ConceptEncoderForMaskedLM

    config, vocabulary = _described_config(args.config, args.set)
    model = ConceptEncoderForMaskedLM(config).eval()
    groups: dict[str, int] = {}
    seen = set()
    for name, param in model.named_parameters():  # named_parameters skips tied duplicates
        if id(param) in seen:
            continue
        seen.add(id(param))
        group = ".".join(name.split(".")[:2]) if name.startswith("encoder.") else name.split(".")[0]
        groups[group] = groups.get(group, 0) + param.numel()
    total = sum(groups.values())
    print(f"{type(model).__name__}  {config.short_name}  layer_type={config.layer_type}  "
          f"weight_sharing={config.weight_sharing}  decoder={config.decoder_type}")
    print(f"{'component':<24}{'parameters':>14}")
    for group, count in groups.items():
        print(f"{group:<24}{count:>14,}")
    print(f"{'total':<24}{total:>14,}")

    B, N = 2, min(args.tokens, config.max_position_embeddings)
    ids = torch.randint(0, config.vocab_size, (B, N))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    print(f"\ninput_ids [B={B}, N={N}] -> tokens [B, N, Dt={config.token_dim}] -> "
          f"concepts {list(out.concepts.shape)} (B, C, H) -> logits {list(out.logits.shape)} (B, N, V)")
    print(f"encoder steps: {config.encoder_steps} ({len(out.hidden_states)} hidden states)")
    print(f"vocabulary: V = {config.vocab_size:,} ({vocabulary})")
    return 0


def _described_config(path: str, overrides: list[str]):
    """The model `describe` builds, with the vocabulary the run would have: the size of the tokenizer it trains,
    else the configured tokenizer's own when it loads here, else the config's (said so)."""
    from .config import build_model_config, load_config, load_experiment
    from .data.tokenizer import load_tokenizer

    raw = load_config(path, overrides)
    if "data" not in raw:  # a model file (configs/model/): no tokenizer named
        return build_model_config(raw, path), "the config's: the file names no tokenizer"
    experiment = load_experiment(path, overrides)
    data = experiment.data
    if data.train_tokenizer:
        vocab = raw.get("model", {}).get("vocab_size", data.tokenizer_vocab_size)
        return (build_model_config({"model": {**raw.get("model", {}), "vocab_size": vocab}}, path),
                f"the {data.train_tokenizer} tokenizer the run trains, data.tokenizer_vocab_size")
    try:
        tokenizer = load_tokenizer(data.tokenizer)
    except Exception:  # noqa: BLE001  (offline Hub name: describe still works, and says where V came from)
        return build_model_config(raw, path), f"the config's: tokenizer {data.tokenizer!r} is not at hand here"
    return experiment.resolve(tokenizer), f"tokenizer {data.tokenizer!r}"


def pretrain(args: argparse.Namespace) -> int:
    from .analysis.callbacks import attach_during_training
    from .training import pretrain as run_pretraining

    run_dir = run_pretraining(args.config, args.set, args.data_dir, args.output_dir, args.resume,
                              attach=attach_during_training)
    print(f"run folder: {run_dir}")
    return 0


def data_mirror(args: argparse.Namespace) -> int:
    from .data.corpus import mirror

    for path in mirror(args.names, Path(args.to), max_documents=args.max_documents):
        print(f"wrote {path}")
    return 0


def parse_columns(text: str | None) -> dict[str, str] | None:
    """`text_a=left,text_b=right,label=score` -> a column mapping for user tasks."""
    if not text:
        return None
    pairs = [item.split("=", 1) for item in text.split(",")]
    mapping = {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2)}
    unknown = set(mapping) - {"text_a", "text_b", "label"} or (len(mapping) != len(pairs))
    if unknown:
        raise TaskError(f"--columns {text!r}: expected text_a=..., text_b=..., label=...")
    return mapping


def _tasks(args):
    from .data.tasks import get_task, resolve_tasks

    return [get_task(name, parse_columns(args.columns)) for name in resolve_tasks(args.tasks)]


def zero_shot(args: argparse.Namespace) -> int:
    """Zero-shot similarity of one or more models on STS tasks, beside the TF-IDF cosine baseline; with
    --results-file, the models side by side as a generated section of that markdown file."""
    from .data import resolve_data_dir
    from .evaluation import load_encoder, zero_shot_task
    from .evaluation.zero_shot import check_task_files, zero_shot_section
    from .reporting import with_section
    from .rundir import write_atomic

    data_dir = resolve_data_dir(args.data_dir, required=False)
    tasks = _tasks(args)
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
        path = Path(args.results_file)
        write_atomic(path, with_section(path.read_text(encoding="utf-8") if path.exists() else None, args.section,
                                        zero_shot_section(results, command)))
        print(f"results: {args.results_file} (section {args.section})")
    return 0


def static_student(args: argparse.Namespace) -> int:
    """Distil the teacher into a model2vec static model (the cheapest student of the same teacher)."""
    from .inference.static import distill_static

    out = distill_static(args.teacher, args.to, args.pca_dims)
    print(f"static student of {args.teacher}: {out} (score it with `zero-shot {out}` or `long-context --static {out}`)")
    return 0


def _one_or_grid(rates: list[float] | None) -> float | list[float] | None:
    return rates[0] if rates and len(rates) == 1 else rates


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
    from .data import resolve_data_dir
    from .evaluation.finetune import check_evaluation, evaluate_tasks, load_settings, zero_shot_tasks
    from .evaluation.zero_shot import check_task_files
    from .inference.encoder import check_loadable
    from .reporting import format_results

    data_dir = resolve_data_dir(args.data_dir, required=False)
    tasks = _tasks(args)
    output = evaluation_folder(args.model, args.output_dir)
    if args.mode == "zero-shot":
        check_task_files(tasks, data_dir)
    else:
        settings = load_settings(args.config, [t.name for t in tasks], learning_rate=_one_or_grid(args.learning_rate),
                                 num_train_epochs=args.epochs, max_train_examples=args.max_train_examples,
                                 max_eval_examples=args.max_eval_examples, head=args.head)
        for task in tasks:  # every task's files and head before the first fine-tuning (not after two tasks)
            check_evaluation(task, settings[task.name], data_dir)
    check_loadable(args.model)  # before any folder exists
    with _removed_on_failure(output):
        check_writable(output)
        if args.mode == "zero-shot":
            path = zero_shot_tasks(args.model, tasks, data_dir, output, args.pooling)
        else:
            path = evaluate_tasks(args.model, tasks, data_dir, output, args.seeds, settings, args.keep_models)
    print(format_results(json.loads(path.read_text())))
    print(f"results: {path} (and results.md)")
    return 0


@contextlib.contextmanager
def _removed_on_failure(folder: Path):
    """A folder this command creates is removed again if the command fails before any result is in it."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and not (folder / "results.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def analyze(args: argparse.Namespace) -> int:
    """Concept diagnostics of a run (or a model folder with --probe-file), with the gate verdicts."""
    from .analysis.analyze import analyze as run_analysis
    from .config import AnalysisConfig
    from .data import resolve_data_dir

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
    from .analysis.k_sweep import k_sweep as run_sweep
    from .data import resolve_data_dir

    record = run_sweep(args.run, args.ks, _tasks(args), resolve_data_dir(args.data_dir, required=False),
                       pooling=args.pooling)
    print(f"{'K':>4}{'mean Spearman':>15}  " + "  ".join(record["by_task"]))
    for k, value in record["points"].items():
        print(f"{k:>4}{100 * value:>15.2f}  " + "  ".join(f"{100 * v[k]:.2f}" for v in record["by_task"].values()))
    print(f"trained at K = {record['trained_k']}; gain of K=12 over K=6: {record.get('gain_12_over_6', 'n/a')}")
    return 0


def report(args: argparse.Namespace) -> int:
    """Markdown + self-contained HTML report of a run folder, with the gate verdicts."""
    from .analysis.gates import format_verdicts
    from .registry.report import build_report, verdicts_for

    run_dir = _run_folder(args.run, args.registry)
    md, html = build_report(run_dir)
    print(format_verdicts(verdicts_for(run_dir), markdown=False))
    print(f"report: {md}\nreport: {html}")
    return 0


def _run_folder(reference: str, registry_path: str | None) -> Path:
    """A run folder given directly, or a run id (or unique part of one) looked up in the registry."""
    if is_run_folder(Path(reference)):
        return Path(reference)
    if Path(reference).is_dir():
        raise FileNotFoundError(f"{reference}: not a run folder (no {EXPERIMENT_FILE}); give a run folder or a run id")
    from .registry import Registry

    with Registry(_existing_registry(registry_path)) as registry:
        return Path(registry.get(reference)["run_dir"])


def _existing_registry(path: str | None) -> Path:
    """The registry to read; looking something up never creates an empty database."""
    from .registry import default_registry_path

    path = Path(path) if path else default_registry_path()
    if not path.exists():
        raise RegistryError(f"{path}: no run registry here yet (experiments create it; or pass --registry PATH)")
    return path


def experiment(args: argparse.Namespace) -> int:
    """Pretrain -> analyze -> evaluate -> report -> registry, resumable per stage."""
    from .analysis.gates import format_verdicts
    from .experiment import run_experiment

    run_dir, verdicts = run_experiment(args.config, args.set, args.data_dir, args.output_dir, args.resume,
                                       args.registry)
    print("\ndecision gates:")
    print(format_verdicts(verdicts, markdown=False))
    print(f"run folder: {run_dir}")
    print(f"report: {run_dir / 'report' / 'report.html'} (and report.md)")
    return 0


def study(args: argparse.Namespace) -> int:
    """Every contender of a study under one token budget, then the comparison tables in the results file."""
    from .study import check_study, run_study

    if args.check:  # exit 1 when a config changed (its rows are stale), 0 with a warning when only code did
        configs, code = check_study(args.study)
        for line in configs:
            print(f"stale: {line}")
        for line in code:
            print(f"warning: {line}")
        if not configs and not code:
            print(f"{args.study}: every row is up to date with today's configs and code")
        return 1 if configs else 0

    results = run_study(args.study, args.data_dir, args.only, args.tables_only)
    print(f"results: {results}")
    return 0


def runs(args: argparse.Namespace) -> int:
    """The run registry: list, show one run, compare two (with deltas, optionally against a baseline run)."""
    from .registry import Registry, format_compare, format_run, format_run_list

    with Registry(_existing_registry(args.registry)) as registry:
        if args.runs_verb == "list":
            print(format_run_list(registry.list_runs()))
        elif args.runs_verb == "show":
            print(format_run(registry.get(args.run)))
        else:
            baseline = registry.get(args.baseline) if args.baseline else None
            print(format_compare(registry.get(args.a), registry.get(args.b), baseline))
    return 0


def publish(args: argparse.Namespace) -> int:
    """Prepare a Hub folder (weights, code with auto_map, model card) and push it, or only prepare it."""
    from .registry.publish import MARKER as PUBLISH_MARKER
    from .registry.publish import prepare_folder, push

    run_dir = _run_folder(args.run, args.registry)
    folder = prepare_folder(run_dir, args.repo_id, Path(args.folder or run_dir / "publish"))
    print(f"prepared: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PUBLISH_MARKER)
    print(f"would push to https://huggingface.co/{args.repo_id} ({'private' if args.private else 'PUBLIC'}), "
          f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB:")
    for path in files:
        print(f"  {path.relative_to(folder)}  ({path.stat().st_size:,} bytes)")
    if args.dry_run:
        print("dry run: nothing pushed")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("publish: not pushed; confirm with --yes (stdin is not a terminal to ask on)")
        if input(f"push these files to {args.repo_id}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not pushed")
            return 1
    print(f"pushed: {push(folder, args.repo_id, args.private)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """A trained concept encoder as a sentence-transformers folder."""
    from .inference.sentence_transformers import export as write_export

    folder = write_export(args.run, args.to, args.format, args.pooling, args.max_length)
    print(f"exported: {folder} (load: SentenceTransformer({str(folder)!r}, trust_remote_code=True))")
    return 0


def encode(args: argparse.Namespace) -> int:
    """A file of texts -> a vectors file, streamed and resumable."""
    from .inference.corpus import encode_file

    summary = encode_file(args.run, args.file, args.out, pooling=args.pooling, what=args.what,
                          normalize=not args.no_normalize, field=args.field, id_field=args.id_field,
                          batch_size=args.batch_size, max_length=args.max_length, chunk_rows=args.chunk_rows,
                          progress=not args.quiet)
    resumed = f", resumed at row {summary['resumed_from_row']}" if summary["resumed_from_row"] else ""
    print(f"vectors: {summary['output']} {tuple(summary['shape'])} ({summary['what']}, {summary['pooling']} "
          f"pooling, <= {summary['max_length']} tokens{resumed})")
    return 0


def mteb(args: argparse.Namespace) -> int:
    """MTEB tasks through the mteb package (local files when a data folder is set); into the run and registry."""
    from .data import resolve_data_dir
    from .evaluation.mteb_runner import run_mteb
    from .reporting import markdown_table, mteb_rows, text_table
    from .rundir import MTEB_RESULTS

    run_dir = Path(args.run) if is_run_folder(Path(args.run)) else None
    output = Path(args.output_dir) if args.output_dir else (run_dir / MTEB_RESULTS.parent if run_dir else None)
    if output is not None:
        check_writable(output)
    summary = run_mteb(args.run, args.tasks, resolve_data_dir(args.data_dir, required=False), output, args.pooling,
                       args.batch_size, args.max_examples, args.trust_remote_code)
    print(text_table(["task", "split", "main score", "x 100"], mteb_rows(summary), 3))
    if run_dir is not None and output == run_dir / MTEB_RESULTS.parent:
        _record_stage(run_dir, "mteb", args.registry)
    elif output is None:
        print(markdown_table(["task", "split", "main score", "x 100"], mteb_rows(summary), 3))
    print(f"mteb: {summary['seconds']:.0f} s on {summary['data']} data" + (f"; results: {output}/results.json" if output else ""))
    return 0


def long_context(args: argparse.Namespace) -> int:
    """Long inputs: the local `article_halves` proxy as N grows (and SCROLLS from the Hub), beside TF-IDF and MiniLM."""
    from .data import resolve_data_dir
    from .evaluation.long_context import BASELINES, long_context_section, run_long_context
    from .reporting import with_section
    from .rundir import write_atomic, write_json

    data_dir = resolve_data_dir(args.data_dir, required=True)
    for model in args.models:
        if not Path(model).exists():
            raise FileNotFoundError(f"{model}: no such run or model folder")
    results = run_long_context(args.models, data_dir, tuple(args.lengths), args.articles,
                               references=not args.no_references, truncated=tuple(args.also_truncated),
                               scrolls=tuple(args.scrolls), static=args.static, baselines=tuple(args.baselines))
    command = " ".join(["concept-encoder long-context", *args.models]
                       + (["--also-truncated", *map(str, args.also_truncated)] if args.also_truncated else [])
                       + (["--static", args.static] if args.static else [])
                       + (["--baselines", *args.baselines] if tuple(args.baselines) != BASELINES else []))
    section = long_context_section(results, command)
    print(section)
    if args.output:
        write_json(Path(args.output), results)
    if args.results_file:
        path = Path(args.results_file)
        write_atomic(path, with_section(path.read_text(encoding="utf-8") if path.exists() else None,
                                        args.section, section))
        print(f"results: {args.results_file} (section {args.section})")
    return 0


def _record_stage(run_dir: Path, stage: str, registry_path: str | None) -> None:
    """A verb run on a run folder afterwards: its stage into the registry (when the run is recorded there) and
    the report rebuilt (when there is one)."""
    from .registry import Registry, default_registry_path
    from .registry.collect import artefacts, run_metrics
    from .registry.report import build_report
    from .rundir import REPORT_DIR

    path = Path(registry_path) if registry_path else default_registry_path(run_dir.parent)
    if path.exists():
        with Registry(path) as registry:
            if run_dir.name in {r["run_id"] for r in registry.list_runs()}:
                registry.record_metrics(run_dir.name, stage, run_metrics(run_dir).get(stage, {}))
                registry.record_artefacts(run_dir.name, artefacts(run_dir))
                print(f"registry: {stage} metrics of {run_dir.name} recorded in {path}")
    if (run_dir / REPORT_DIR / "report.md").exists():
        md, _ = build_report(run_dir)
        print(f"report: {md}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="concept-encoder", description=__doc__)
    parser.add_argument("--version", action="version", version=f"concept-encoder {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("describe", help="build a model from a config; print parameters and shapes")
    p.add_argument("config", help="experiment YAML (its `model` section is used)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--tokens", type=int, default=128, help="sequence length of the shape trace")
    p.set_defaults(run_verb=describe)

    p = verbs.add_parser("pretrain", help="pretrain a concept encoder from an experiment config")
    p.add_argument("config", nargs="?", help="experiment YAML (sections model, data, objective, training)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_ROOT, help="root of run folders (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint")
    p.set_defaults(run_verb=pretrain)

    p = verbs.add_parser("zero-shot", help="zero-shot STS: cosine of pooled vectors, Spearman x 100, with baseline")
    p.add_argument("model", nargs="+", help="run folders, model folders (concept encoder, HF encoder, model2vec) "
                   "or Hub names; several are scored one after another")
    p.add_argument("--tasks", nargs="+", default=["zero-shot"], help="sts tasks or groups (default: %(default)s)")
    p.add_argument("--split", default="validation")
    p.add_argument("--pooling", default="mean", choices=["mean", "weighted", "decoder"],
                   help="concept encoders: mean of concepts, a fine-tuned weighted pooling, or the pretrained "
                        "decoder's states (no bypass)")
    p.add_argument("--columns", help="user task columns, e.g. text_a=left,text_b=right,label=score")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--results-file", help="markdown file whose --section is rewritten with the models side by side")
    p.add_argument("--section", default="zero-shot", help="the generated section of --results-file to rewrite")
    p.set_defaults(run_verb=zero_shot)

    p = verbs.add_parser("static-student", help="distil a teacher into a model2vec static model (a baseline)")
    p.add_argument("--teacher", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="sentence encoder folder or Hub name (default: %(default)s, offline from its PyPI package)")
    p.add_argument("--to", required=True, help="the folder to write (kept as it is when it already holds one)")
    p.add_argument("--pca-dims", type=int, default=256, help="output width (default: %(default)s)")
    p.set_defaults(run_verb=static_student)

    p = verbs.add_parser("evaluate", help="fine-tune on benchmark tasks; report beside the baselines")
    p.add_argument("model", help="a concept-encoder model folder, or any HF encoder folder or Hub name")
    p.add_argument("--tasks", nargs="+", default=["all"], help="tasks or groups (default: %(default)s)")
    p.add_argument("--mode", choices=["finetune", "zero-shot"], default="finetune")
    p.add_argument("--pooling", default="mean", choices=["mean", "weighted", "decoder"], help="zero-shot mode")
    p.add_argument("--keep-models", action="store_true",
                   help="keep each fine-tuned best model under OUTPUT/models/TASK_seedS (e.g. for weighted pooling)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--config", help="per-task fine-tuning settings (e.g. configs/eval/default.yaml)")
    p.add_argument("--columns", help="user task columns, e.g. text_a=question,text_b=answer,label=y")
    p.add_argument("--learning-rate", type=float, nargs="+",
                   help="overrides the config for every task; several rates: a grid, chosen per seed on the "
                        "selection split (never on the reported one); put the model before it")
    p.add_argument("--epochs", type=float, help="overrides the config for every task")
    p.add_argument("--max-train-examples", type=int, help="a fixed slice of the training split (quick runs)")
    p.add_argument("--max-eval-examples", type=int, help="a fixed slice of the reported split (quick runs)")
    p.add_argument("--head", choices=["weighted", "via_decoder", "via_decoder_bypass", "pair", "pair_cosine"],
                   help="concept-encoder head (HF encoders use their own)")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--output-dir", help="where results.json goes (default: MODEL/evaluation for a model folder, "
                                        "runs/evaluations/ORG__NAME for a Hub name)")
    p.set_defaults(run_verb=evaluate)

    p = verbs.add_parser("analyze", help="concept diagnostics of a trained run (probe set, plots, analysis.json)")
    p.add_argument("run", help="a run folder (probe: its held-out documents) or a model folder (needs --probe-file)")
    p.add_argument("--probe-file", help="one text per line (.txt or .gz)")
    p.add_argument("--probe-documents", type=int, help="held-out documents to probe (default 128)")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.set_defaults(run_verb=analyze)

    p = verbs.add_parser("experiment", help="pretrain -> analyze -> evaluate -> report -> registry, resumable")
    p.add_argument("config", nargs="?", help="experiment YAML (sections model, data, objective, training, "
                                             "analysis, evaluation)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_ROOT, help="root of run folders (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted experiment")
    p.add_argument("--registry", help=f"run database (default: ${REGISTRY_HELP})")
    p.set_defaults(run_verb=experiment)

    p = verbs.add_parser("study", help="run a study's contenders under one token budget and write its tables")
    p.add_argument("study", help="study YAML, e.g. configs/study/cpu.yaml")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--only", nargs="+", metavar="CONTENDER", help="run only these contenders (tables cover all)")
    p.add_argument("--tables-only", action="store_true", help="run nothing; rewrite the tables from the run folders")
    p.add_argument("--check", action="store_true", help="run nothing; list the rows whose config changed (exit 1) "
                   "or whose code changed (a warning) since they ran")
    p.set_defaults(run_verb=study)

    p = verbs.add_parser("k-sweep", help="a recursive model's zero-shot STS at several iteration counts K")
    p.add_argument("run", help="a run folder or a model folder of a weight-shared concept encoder")
    p.add_argument("--ks", nargs="+", type=int, default=[2, 4, 6, 8, 12])
    p.add_argument("--tasks", nargs="+", default=["zero-shot"], help="sts tasks or groups (default: %(default)s)")
    p.add_argument("--columns", help="user task columns, e.g. text_a=left,text_b=right,label=score")
    p.add_argument("--pooling", default="mean", choices=["mean", "decoder"])
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.set_defaults(run_verb=k_sweep)

    p = verbs.add_parser("report", help="markdown + self-contained HTML report of a run, with gate verdicts")
    p.add_argument("run", help="a run folder or a run id in the registry")
    p.add_argument("--registry", help=f"run database (default: ${REGISTRY_HELP})")
    p.set_defaults(run_verb=report)

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--registry", help=f"run database (default: ${REGISTRY_HELP})")
    runs_parser = verbs.add_parser("runs", help="the run registry: list | show RUN | compare A B")
    runs_verbs = runs_parser.add_subparsers(dest="runs_verb", required=True)
    runs_verbs.add_parser("list", parents=[database], help="every recorded run, newest first")
    p = runs_verbs.add_parser("show", parents=[database], help="one run's fields and metrics by stage")
    p.add_argument("run", help="run id or a unique part of it")
    p = runs_verbs.add_parser("compare", parents=[database], help="two runs side by side with deltas (B - A)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--baseline", help="a third run to show B against")
    runs_parser.set_defaults(run_verb=runs)

    p = verbs.add_parser("publish", help="prepare a Hugging Face Hub folder for a run and push it")
    p.add_argument("run", help="a run folder or a run id in the registry")
    p.add_argument("--repo-id", required=True, help="e.g. user/concept-encoder-demo")
    p.add_argument("--dry-run", action="store_true", help="prepare the folder only (works offline)")
    p.add_argument("--folder", help="where to prepare it (default: RUN/publish)")
    p.add_argument("--private", action="store_true", help="create the repository private (default: public)")
    p.add_argument("--yes", action="store_true", help="push without asking (it lists what it pushes, then asks)")
    p.add_argument("--registry", help=f"run database (default: ${REGISTRY_HELP})")
    p.set_defaults(run_verb=publish)

    p = verbs.add_parser("export", help="a trained concept encoder as a sentence-transformers folder")
    p.add_argument("run", help="a run folder or a concept-encoder model folder")
    p.add_argument("--to", required=True, help="a new folder to write")
    p.add_argument("--format", default="sentence-transformers", choices=["sentence-transformers"])
    p.add_argument("--pooling", default="mean", choices=["mean", "weighted", "decoder"], help="as in zero-shot")
    p.add_argument("--max-length", type=int, help="truncation (default: the model's position table)")
    p.set_defaults(run_verb=export)

    p = verbs.add_parser("encode", help="a file of texts -> vectors (.parquet or .npy), streamed and resumable")
    p.add_argument("run", help="a run folder, a concept-encoder model folder, or any HF encoder")
    p.add_argument("file", help=".txt (a text per line), .jsonl, .tsv, .csv or .parquet; gzip'd or not")
    p.add_argument("--out", required=True, help="vectors.parquet (id + vector columns) or vectors.npy")
    p.add_argument("--what", default="pooled", choices=["pooled", "concepts"],
                   help="pooled vectors [rows, H] or every concept [rows, C, H]")
    p.add_argument("--pooling", default="mean", choices=["mean", "weighted", "decoder"], help="as in zero-shot")
    p.add_argument("--field", default="text", help="the text field / column (default: %(default)s)")
    p.add_argument("--id-field", help="an id field / column for the parquet `id` (default: the row number)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw vectors (default: L2-normalised)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, help="truncation (default: the model's position table)")
    p.add_argument("--chunk-rows", type=int, default=4096, help="rows per resumable part (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run_verb=encode)

    p = verbs.add_parser("mteb", help="MTEB tasks through the mteb package; local files when a data folder is set")
    p.add_argument("run", help="a run folder, a concept-encoder model folder, or any sentence-transformers model")
    p.add_argument("--tasks", nargs="+", default=["STSBenchmark", "SICK-R"],
                   help="mteb task names; offline: STSBenchmark SICK-R GlueSST2 GlueMRPC (default: %(default)s)")
    p.add_argument("--pooling", default="mean", choices=["mean", "weighted", "decoder"], help="as in zero-shot")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-examples", type=int, help="the first rows of each local split only (quick runs)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a sentence-transformers folder run the code it names (this package's own exports "
                        "are recognised and need no flag)")
    p.add_argument("--output-dir", help="where results.json goes (default: RUN/evaluation/mteb for a run folder)")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR}; unset: the Hub)")
    p.add_argument("--registry", help=f"run registry database ({REGISTRY_HELP})")
    p.set_defaults(run_verb=mteb)

    p = verbs.add_parser("long-context", help="long inputs: accuracy and seconds per 1,000 documents as N grows")
    p.add_argument("models", nargs="*", help="concept-encoder run or model folders (rotary positions read any N)")
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192],
                   help="document lengths N in WordPiece tokens; each half is N/2 (default: %(default)s)")
    p.add_argument("--articles", type=int, default=200, help="articles in the task (default: %(default)s)")
    p.add_argument("--no-references", action="store_true", help="skip TF-IDF and MiniLM")
    p.add_argument("--also-truncated", nargs="*", type=int, default=[], metavar="TOKENS",
                   help="each concept encoder again, reading only its first TOKENS tokens (does reading further help?)")
    p.add_argument("--static", metavar="DIR", help="a model2vec student folder (`static-student --to DIR`) as a row")
    baselines = ["tfidf", "bm25", "minilm", "minilm-chunked"]  # evaluation.long_context.BASELINES (not imported here)
    p.add_argument("--baselines", nargs="*", default=baselines, choices=baselines, help="reference rows (default: all)")
    p.add_argument("--section", default="long-context", help="the generated section of --results-file to rewrite")
    p.add_argument("--scrolls", nargs="*", default=[], choices=["contract_nli", "quality"],
                   help="SCROLLS tasks from the Hub (needs the network)")
    p.add_argument("--output", help="results JSON")
    p.add_argument("--results-file", help="markdown file whose long-context section is rewritten (docs/results.md)")
    p.add_argument("--data-dir", help=f"local data folder (default: ${DATA_ENV_VAR})")
    p.set_defaults(run_verb=long_context)

    data = verbs.add_parser("data", help="local data folder tools").add_subparsers(dest="data_verb", required=True)
    p = data.add_parser("mirror", help="copy Hub corpora into a local data folder (for offline clusters)")
    p.add_argument("names", nargs="+", help="corpus names, optionally NAME:SPLIT (e.g. wikitext-103-raw-v1)")
    p.add_argument("--to", required=True, help="the local data folder to fill")
    p.add_argument("--max-documents", type=int, help="only the first documents of each split")
    p.set_defaults(run_verb=data_mirror)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run_verb(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `runs show | head` closed the pipe: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Under torchrun, leave the process group before the interpreter exits: a group left to the exit's
    destructors can abort a rank (`terminate called without an active exception`, seen once on 2 CPU ranks)."""
    if "torch.distributed" not in sys.modules:  # a verb that never touched torch has no group to leave
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
