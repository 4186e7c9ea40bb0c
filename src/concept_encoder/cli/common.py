"""What the verb groups share: the help format, the options several verbs take, and run-folder lookups.

Nothing heavy is imported at module level: `--help` builds every parser and must answer in well under a second."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path

from ..data import DATA_ENV_VAR
from ..errors import RegistryError, TaskError
from ..reporting import QUIET_ENV_VAR
from ..rundir import DEFAULT_OUTPUT_ROOT, EXPERIMENT_FILE, is_run_folder

REGISTRY_HELP = "CONCEPT_ENCODER_REGISTRY, else runs/registry.sqlite"
POOLINGS = ["mean", "weighted", "decoder"]  # inference.encoder.POOLINGS (not imported here: it loads torch)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (none for flags and options without one); epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or isinstance(action, argparse._StoreConstAction):
            return action.help or ""
        return super()._get_help_string(action)


def add_verb(verbs, name: str, summary: str, example: str | list[str]) -> argparse.ArgumentParser:
    """A verb's parser: its one-line summary as help and description, and an example (or several) as epilog."""
    examples = [example] if isinstance(example, str) else example
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)
    return verbs.add_parser(name, help=summary, description=summary, epilog=epilog, formatter_class=HelpFormatter)


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable), e.g. training.max_steps=100")


def add_data_dir(p: argparse.ArgumentParser, hub_fallback: bool = True) -> None:
    p.add_argument("--data-dir", help=f"local data folder (unset: ${DATA_ENV_VAR}"
                                      + ("; neither: the Hub)" if hub_fallback else ")"))


def add_output_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_ROOT, help="root of run folders")


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help=f"run database (unset: ${REGISTRY_HELP})")


def add_pooling(p: argparse.ArgumentParser, choices: list[str] = POOLINGS, help: str = "as in zero-shot") -> None:
    p.add_argument("--pooling", default="mean", choices=choices, help=help)


class _Quiet(argparse.Action):
    """--quiet sets CONCEPT_ENCODER_QUIET, the one switch every progress bar reads (`main` restores it after)."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[QUIET_ENV_VAR] = "1"
        setattr(namespace, self.dest, True)


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action=_Quiet, nargs=0, help="no progress bars (bars show only on a terminal; "
                                                           "CONCEPT_ENCODER_QUIET=1 does the same)")


def add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--columns", help="user task columns, e.g. text_a=left,text_b=right,label=score")


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


def tasks_of(args: argparse.Namespace) -> list:
    from ..data.tasks import get_task, resolve_tasks

    return [get_task(name, parse_columns(args.columns)) for name in resolve_tasks(args.tasks)]


def run_folder(reference: str, registry_path: str | None) -> Path:
    """A run folder given directly, or a run id (or unique part of one) looked up in the registry."""
    if is_run_folder(Path(reference)):
        return Path(reference)
    if Path(reference).is_dir():
        raise FileNotFoundError(f"{reference}: not a run folder (no {EXPERIMENT_FILE}); give a run folder or a run id")
    from ..registry import Registry

    with Registry(existing_registry(registry_path)) as registry:
        return Path(registry.get(reference)["run_dir"])


def existing_registry(path: str | None) -> Path:
    """The registry to read; looking something up never creates an empty database."""
    from ..registry import default_registry_path

    path = Path(path) if path else default_registry_path()
    if not path.exists():
        raise RegistryError(f"{path}: no run registry here yet (experiments create it; or pass --registry PATH)")
    return path


def record_stage(run_dir: Path, stage: str, registry_path: str | None) -> None:
    """A verb run on a run folder afterwards: its stage into the registry (when the run is recorded there) and
    the report rebuilt (when there is one)."""
    from ..registry import Registry, default_registry_path
    from ..registry.collect import artefacts, run_metrics
    from ..registry.report import build_report
    from ..rundir import REPORT_DIR

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


@contextlib.contextmanager
def removed_on_failure(folder: Path):
    """A folder this command creates is removed again if the command fails before any result is in it."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and not (folder / "results.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def write_section(results_file: str, section: str, text: str) -> None:
    """Rewrite one generated section of a markdown results file (created if missing)."""
    from ..reporting import with_section
    from ..rundir import write_atomic

    path = Path(results_file)
    write_atomic(path, with_section(path.read_text(encoding="utf-8") if path.exists() else None, section, text))
    print(f"results: {results_file} (section {section})")
