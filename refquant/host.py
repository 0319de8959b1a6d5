"""What machine a measurement was taken on: the CPU's model name and instruction sets.

Benchmarks, the papers' tables and the import grids record it with every figure (speed and
onnxruntime's integer products depend on it). Read from ``/proc/cpuinfo`` on Linux; elsewhere
the platform's processor or machine name and no flags.
"""

from __future__ import annotations

import os
import platform

__all__ = ["INT8_FLAGS", "cpu_flags", "cpu_model", "cpu_summary"]

#: the instruction-set flags that decide integer (int8) dot-product speed and exactness
INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:  # not Linux
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":", 1)[0].strip() == name), None)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor or machine name."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set:
    """The CPU's instruction-set flags (empty where ``/proc/cpuinfo`` is not available)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_summary() -> str:
    """One line: model, machine, usable CPUs and the :data:`INT8_FLAGS` present, e.g.
    ``AMD EPYC (x86_64), 2 CPUs, avx2 fma``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = cpu_flags()
    isa = " ".join(f for f in INT8_FLAGS if f in flags) or "no int8 SIMD flags read"
    return f"{cpu_model()} ({platform.machine()}), {cpus} CPUs, {isa}"
