"""Which floating-point precision a run computes in: `precision` of the training config, resolved for this machine.

bf16 autocast pays only where the hardware multiplies bf16 natively: CUDA GPUs that support it, and CPUs with
AVX512-BF16 or AMX (Zen 4+, Cooper Lake, Sapphire Rapids+), where bf16 matmuls run 2-2.5x the fp32 rate
(`benchmarks/bf16.py`). Elsewhere oneDNN emulates bf16 and it is slower than fp32.
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # resolved per machine by resolve_precision
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read, so nothing is assumed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def cpu_has_native_bf16() -> bool:
    """True where the CPU flags include a bf16 dot-product instruction."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(requested: str, cuda: bool | None = None) -> str:
    """`auto` -> bf16 on a GPU with native bf16, else fp32. CPU bf16 is opt-in (`precision: bf16`) even where
    it is native: it changes the numbers a CPU run reproduces, so a config has to ask for it."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {PRECISIONS}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if requested == "fp16" and not cuda:
        raise ValueError("precision fp16 needs a CUDA GPU; on a CPU use bf16 (native on AVX512-BF16/AMX) or fp32")
    if requested == "bf16" and not cuda and not cpu_has_native_bf16():
        warnings.warn("precision bf16 on a CPU without AVX512-BF16/AMX: bf16 is emulated there, slower than fp32",
                      stacklevel=2)
    return requested
