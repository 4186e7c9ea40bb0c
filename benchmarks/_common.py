"""Shared benchmark plumbing: machine facts, the matmul peak, alternating timings, FLOP counts, peak memory,
and writing each benchmark's table into docs/benchmarks.md (its own marked section, replaced atomically)."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from concept_encoder.precision import cpu_flags

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT / "src"))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_vector_isa() -> str:
    """The widest vector instruction set of this CPU ("avx512", "avx2", or the architecture name). The same model
    name ("AMD EPYC") can run fp32 matmuls at 65 or 190 GFLOP/s depending on it, so CPU tables are kept per ISA."""
    flags = cpu_flags()
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine() or "cpu"


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, bf16 autocast)"
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({cpu_vector_isa()}), {torch.get_num_threads()} threads, fp32 (torch {torch.__version__})"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def alternate(candidates: dict[str, callable], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in turns (A B A B ...) so drift hits all alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_peak(size: int = 2048, repeats: int = 7, dtype: torch.dtype | None = None) -> float:
    """Measured FLOP/s of a square matmul in the training dtype (the denominator of every utilisation):
    by default bf16 on a GPU, fp32 on a CPU (how training runs unless the config asks for bf16)."""
    dtype = dtype if dtype is not None else (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    a = torch.randn(size, size, device=device(), dtype=dtype)
    b = torch.randn(size, size, device=device(), dtype=dtype)
    seconds = alternate({"mm": lambda: a @ b}, repeats, warmup=2)["mm"]
    return 2 * size**3 / seconds


def count_flops(fn) -> int:
    """FLOPs of one call (matmuls and attention, forward and backward), by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark. VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so a
    child started by a large parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: the best there is


def in_subprocess(script: Path, *args: str) -> dict:
    """Run `script --child ARGS` in a fresh interpreter (a clean memory high-water mark); its last stdout line is JSON."""
    out = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if out.returncode < 0:  # killed by a signal: on a CPU box, the kernel's out-of-memory killer
        return {"error": f"killed by signal {-out.returncode} (out of memory)"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (or append it), stamped with machine and date."""
    isa = None if device().type == "cuda" else cpu_vector_isa()
    name = f"{name}:{'cuda' if isa is None else 'cpu-' + isa}"  # GPU and each kind of CPU side by side
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    kind = "GPU" if isa is None else f"CPU, {isa.upper()}"
    section = f"{start}\n## {title} ({kind})\n\n_{machine()}; {date.today().isoformat()}._\n\n{body.strip()}\n{end}"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    temporary = DOC.with_suffix(".md.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(DOC)
    print(body)


def pretrained_at_seed(config: str, seed: int, overrides: list[str], data_dir: Path, output: Path,
                       name: str | None = None) -> Path:
    """The run of `config` at one seed (`training.seed`: initial weights and data order; `objective.seed`: the
    noise stream) under `output/NAME` (default seed{seed}): trained if absent, resumed if stopped, reused if done."""
    from concept_encoder.analysis.callbacks import attach_during_training
    from concept_encoder.training import pretrain

    name = name or f"seed{seed}"
    run_dir = output / name
    if run_dir.is_dir() and not (run_dir / "model").is_dir():  # stopped: continue from its last checkpoint
        pretrain(resume=run_dir, data_dir=data_dir, attach=attach_during_training)
    elif not run_dir.is_dir():
        pretrain(config, [*overrides, f"training.seed={seed}", f"objective.seed={seed}", f"training.run_name={name}"],
                 data_dir, output, attach=attach_during_training)
    return run_dir
