"""Golden sets of many plans of one model: the shared part computed once, one task per plan.

``refquant golden export MODEL DIR --plan P1 P2 …`` writes one golden set per plan, into
``DIR/NN-PLAN`` (``NN`` the plan's position, ``PLAN`` its text made a file name). What the
plans share — the graph, the chosen test images, and the calibration pass
(:func:`refquant.executor.trace_calibration`) — is an :class:`ExportJob`, made once; each
plan is a task :func:`export_plan` (``ExportJob``, ``(index, plan)``) that a sweep executor
(:mod:`refquant.sweep.executors`) runs here or on a Dask worker. The sets are the same
whichever runs them: a task depends on nothing but the job and its plan. With a remote
scheduler, ``DIR`` must be a directory every worker sees (a shared file system).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..executor import quantize_model
from ..sweep import numba_threads
from .export import export_golden, safe_name

__all__ = ["ExportJob", "export_plan", "plan_directory"]


@dataclass
class ExportJob:
    """What every plan's export shares (built once by the caller)."""

    graph: object
    model_name: str
    inputs: object
    trace: object  # the recorded calibration pass
    root: str
    requant: str = "float32"
    backend: str = "reference"
    seed: int | None = None
    input_description: str = ""
    accumulators: bool = False
    onnx: bool = False
    threads: int = 1  # Numba threads per task (refquant.sweep.numba_threads)


def plan_directory(root, index: int, plan: str) -> Path:
    """Where plan number ``index`` is written: ``root/NN-PLAN``."""
    return Path(root) / f"{index:02d}-{safe_name(plan)}"[:120]


def export_plan(job: ExportJob, item) -> dict:
    """Quantize ``job``'s model with ``item = (index, plan)``, write its golden set, and return
    its summary (directory, plan, layers, files, bytes, manifest SHA-256)."""
    index, plan = item
    with numba_threads(job.threads):
        qm = quantize_model(job.graph, plan, job.trace, requant=job.requant)
        gs = export_golden(qm, job.inputs, plan_directory(job.root, index, plan), model_name=job.model_name,
                           backend=job.backend, seed=job.seed, input_description=job.input_description,
                           accumulators=job.accumulators, onnx=job.onnx)
    return {"golden": str(gs.root), "model": job.model_name, "plan": str(qm.plan), "requant": job.requant,
            "layers": len(gs.layers), "files": len(gs.manifest["files"]),
            "bytes": sum(e["bytes"] for e in gs.manifest["files"].values()), "manifest_sha256": gs.manifest_sha256}
