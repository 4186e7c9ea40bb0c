"""The package's floors: every import points down (or within its own package), so no arrow runs back up and no
two packages form a circle. docs/architecture.md draws the same floors."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "concept_encoder"
FLOORS = [  # lowest first; a module imports its own package and the floors below it, never a sibling or above
    {"errors"},  # the errors a user can cause: no import, so the command line catches them without loading torch
    {"rundir", "precision", "offline", "reporting"},  # run folder files, precision, offline weights, tables
    {"modeling"},
    {"data", "objectives"},
    {"config"},
    {"inference"},  # a trained model -> vectors: loading, pooling, corpus encoding, the sentence-transformers export
    {"training", "evaluation"},
    {"analysis"},
    {"registry"},
    {"experiment"},  # the pipeline: pretrain -> analyze -> evaluate -> report -> registry
    {"study"},  # several experiments under one budget
    {"__init__"},  # the package's public names (the model classes on first use) and its version
    {"cli"},  # the verbs
]
FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}


def part_of(module: Path) -> str:
    """The floor-plan name of a module: its subpackage, or the module itself at the top of the package."""
    relative = module.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(module: Path) -> set[str]:
    """The package parts a module imports, function-level imports included (they are edges too)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    here = module.relative_to(PACKAGE).parent.parts  # () at the top, ("training",) in a subpackage
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb `level - 1` packages from this module's package
                base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if target else [[alias.name if alias.name in FLOOR else "__init__"]
                                                  for alias in node.names]  # `from . import __version__`
            elif node.module and node.module.split(".")[0] == "concept_encoder":
                names = [node.module.split(".")[1:] or [alias.name for alias in node.names][:1]]
            else:
                continue
            found |= {name[0] for name in names if name}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names
                      if alias.name.startswith("concept_encoder.")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_on_a_floor():
    assert {part_of(m) for m in MODULES} <= set(FLOOR), {part_of(m) for m in MODULES} - set(FLOOR)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: str(m.relative_to(PACKAGE)))
def test_imports_point_down(module):
    mine = part_of(module)
    upward = {part for part in imported_parts(module) - {mine} if FLOOR[part] >= FLOOR[mine]}
    assert not upward, f"{module.relative_to(PACKAGE)} ({mine}, floor {FLOOR[mine]}) imports {sorted(upward)}"


def test_the_checker_sees_relative_absolute_and_function_level_imports(tmp_path):
    """The walk itself: a package module reaching up by a relative, a nested and an absolute import."""
    probe = PACKAGE / "training" / "pretrain.py"
    assert {"config", "data", "modeling", "objectives", "rundir", "precision"} <= imported_parts(probe)
    cli = set().union(*(imported_parts(m) for m in (PACKAGE / "cli").glob("*.py")))
    assert {"training", "registry", "analysis"} <= cli  # function-level imports of the verbs
    assert "offline" in imported_parts(PACKAGE / "modeling" / "backbone.py")  # absolute, guarded


RESULT_FILES = ("TRAIN_SUMMARY", "ANALYSIS_RESULTS", "FINETUNE_RESULTS", "ZERO_SHOT_RESULTS", "K_SWEEP_RESULTS",
                "LOG_HISTORY", "MTEB_RESULTS")


def test_one_reader_of_a_run_folders_results():
    """The report, the study, the gates and the registry read a run's result files through `read_run`; a module
    that opens one itself (`read_json(run_dir / FINETUNE_RESULTS)`) would have a second view of the run."""
    readers = set()
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "read_json":
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if names & set(RESULT_FILES):
                    readers.add(str(module.relative_to(PACKAGE)))
    assert readers == {"registry/collect.py"}, readers
