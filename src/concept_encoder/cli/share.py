"""Verbs that read, compare and ship finished runs: report, runs, publish, export, encode."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import add_pooling, add_quiet, add_registry, add_verb, existing_registry, run_folder


def report(args: argparse.Namespace) -> int:
    """Markdown + self-contained HTML report of a run folder, with the gate verdicts."""
    from ..analysis.gates import format_verdicts
    from ..registry.report import build_report, verdicts_for

    run_dir = run_folder(args.run, args.registry)
    md, html = build_report(run_dir)
    print(format_verdicts(verdicts_for(run_dir), markdown=False))
    print(f"report: {md}\nreport: {html}")
    return 0


def runs(args: argparse.Namespace) -> int:
    """The run registry: list, show one run, compare two (with deltas, optionally against a baseline run)."""
    from ..registry import Registry, format_compare, format_run, format_run_list

    with Registry(existing_registry(args.registry)) as registry:
        if args.runs_verb == "list":
            print(format_run_list(registry.list_runs()))
        elif args.runs_verb == "show":
            print(format_run(registry.get(args.run)))
        else:
            baseline = registry.get(args.baseline) if args.baseline else None
            print(format_compare(registry.get(args.a), registry.get(args.b), baseline))
    return 0


def publish(args: argparse.Namespace) -> int:
    """Prepare a Hub folder (transformers: weights, code with auto_map, model card; or the sentence-transformers
    export with its code and card), list what it would push, and push it when confirmed."""
    from ..registry.publish import MARKER as PUBLISH_MARKER
    from ..registry.publish import prepare_folder, push

    run_dir = run_folder(args.run, args.registry)
    folder = prepare_folder(run_dir, args.repo_id, Path(args.folder or run_dir / "publish"), args.format,
                            args.pooling)
    print(f"prepared: {folder} ({args.format})")
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
    """A trained concept encoder as a sentence-transformers folder that loads without this package."""
    from ..inference.sentence_transformers import export as write_export
    from ..registry.publish import export_card

    folder = write_export(args.run, args.to, args.format, args.pooling, args.max_length,
                          card=export_card(args.run, args.pooling))
    print(f"exported: {folder} (load: SentenceTransformer({str(folder)!r}, trust_remote_code=True); "
          "the folder carries its code and a model card)")
    return 0


def encode(args: argparse.Namespace) -> int:
    """A file of texts -> a vectors file, streamed and resumable."""
    from ..inference.corpus import encode_file

    summary = encode_file(args.run, args.file, args.out, pooling=args.pooling, what=args.what,
                          normalize=not args.no_normalize, field=args.field, id_field=args.id_field,
                          batch_size=args.batch_size, max_length=args.max_length, chunk_rows=args.chunk_rows,
                          progress=not args.quiet)
    resumed = f", resumed at row {summary['resumed_from_row']}" if summary["resumed_from_row"] else ""
    print(f"vectors: {summary['output']} {tuple(summary['shape'])} ({summary['what']}, {summary['pooling']} "
          f"pooling, <= {summary['max_length']} tokens{resumed})")
    return 0


def register(verbs) -> None:
    p = add_verb(verbs, "report", "markdown + self-contained HTML report of a run, with gate verdicts",
                 ["concept-encoder report runs/demo_20261206_120000", "concept-encoder report demo_2026"])
    p.add_argument("run", help="a run folder or a run id in the registry")
    add_registry(p)
    p.set_defaults(run_verb=report)

    runs_parser = verbs.add_parser("runs", help="the run registry: list | show RUN | compare A B",
                                   description="the run registry: list | show RUN | compare A B")
    runs_verbs = runs_parser.add_subparsers(dest="runs_verb", required=True)
    p = add_verb(runs_verbs, "list", "every recorded run, newest first", "concept-encoder runs list")
    add_registry(p)
    p = add_verb(runs_verbs, "show", "one run's fields and metrics by stage", "concept-encoder runs show demo_2026")
    p.add_argument("run", help="run id or a unique part of it")
    add_registry(p)
    p = add_verb(runs_verbs, "compare", "two runs side by side with deltas (B - A)",
                 "concept-encoder runs compare demo_20261205 demo_20261206 --baseline mlm_simcse")
    p.add_argument("a", help="run id (or a unique part): the reference")
    p.add_argument("b", help="run id (or a unique part): shown with its deltas against A")
    p.add_argument("--baseline", help="a third run to show B against")
    add_registry(p)
    runs_parser.set_defaults(run_verb=runs)

    p = add_verb(verbs, "publish", "prepare a Hugging Face Hub folder for a run, list it, and push it when confirmed",
                 ["concept-encoder publish runs/demo_20261206_120000 --repo-id me/concept-demo --dry-run",
                  "concept-encoder publish demo_2026 --repo-id me/concept-demo-st --format sentence-transformers --private"])
    p.add_argument("run", help="a run folder or a run id in the registry")
    p.add_argument("--repo-id", required=True, help="e.g. user/concept-encoder-demo")
    p.add_argument("--format", default="transformers", choices=["transformers", "sentence-transformers"],
                   help="transformers: AutoModel with remote code; sentence-transformers: the `export` folder")
    add_pooling(p, help="with --format sentence-transformers: as in zero-shot")
    p.add_argument("--dry-run", action="store_true", help="prepare the folder only (works offline)")
    p.add_argument("--folder", help="where to prepare it (unset: RUN/publish)")
    p.add_argument("--private", action="store_true", help="create the repository private (unset: public)")
    p.add_argument("--yes", action="store_true", help="push without asking (it lists what it pushes, then asks)")
    add_registry(p)
    p.set_defaults(run_verb=publish)

    p = add_verb(verbs, "export", "a trained concept encoder as a sentence-transformers folder (code and card inside)",
                 "concept-encoder export runs/demo_20261206_120000 --to exported/demo")
    p.add_argument("run", help="a run folder or a concept-encoder model folder")
    p.add_argument("--to", required=True, help="a new folder to write")
    p.add_argument("--format", default="sentence-transformers", choices=["sentence-transformers"],
                   help="the folder layout")
    add_pooling(p)
    p.add_argument("--max-length", type=int, help="truncation (unset: the model's position table)")
    p.set_defaults(run_verb=export)

    p = add_verb(verbs, "encode", "a file of texts -> vectors (.parquet or .npy), streamed and resumable",
                 ["concept-encoder encode runs/demo_20261206_120000 texts.txt --out vectors.parquet",
                  "concept-encoder encode RUN docs.jsonl --field body --id-field id --what concepts --out c.npy"])
    p.add_argument("run", help="a run folder, a concept-encoder model folder, or any HF encoder")
    p.add_argument("file", help=".txt (a text per line), .jsonl, .tsv, .csv or .parquet; gzip'd or not")
    p.add_argument("--out", required=True, help="vectors.parquet (id + vector columns) or vectors.npy")
    p.add_argument("--what", default="pooled", choices=["pooled", "concepts"],
                   help="pooled vectors [rows, H] or every concept [rows, C, H]")
    add_pooling(p)
    p.add_argument("--field", default="text", help="the text field / column")
    p.add_argument("--id-field", help="an id field / column for the parquet `id` (unset: the row number)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw vectors (unset: L2-normalised)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.add_argument("--max-length", type=int, help="truncation (unset: the model's position table)")
    p.add_argument("--chunk-rows", type=int, default=4096, help="rows per resumable part")
    add_quiet(p)
    p.set_defaults(run_verb=encode)
