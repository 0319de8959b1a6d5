"""The float calibration pass, recorded once and replayed to any number of plans.

Calibration (step 4 of :func:`refquant.executor.quantize_model`) is one float pass over the
calibration inputs in batches, every activation observer seeing its tensor. That pass depends
on the float graph and the inputs only — not on the plan — so a sweep of many plans over one
model can run it once: :func:`trace_calibration` records, batch by batch, the input feeds and
every step's input ``x`` and output ``y`` (:class:`~refquant.executor.FloatEvent`), and
``quantize_model(graph, plan, trace)`` replays them to the plan's observers in the same
order, with the same arrays, as a live pass would show them. The qparams are therefore the
same bit for bit (``tests/test_sweep.py`` checks it on every registered strategy).

The recorded arrays are read-only: an observer that wrote into the tensor it is shown would
change what the next plan sees, and raises instead. Memory: the trace holds every step's
output for every calibration image once (``x`` of a step is ``y`` of the step before, the
same array) — :attr:`CalibrationTrace.nbytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Graph
from .float_exec import run_float
from .traverse import lower

__all__ = ["CalibrationTrace", "trace_calibration", "calibration_batches"]


@dataclass
class CalibrationTrace:
    """A recorded calibration pass: per batch, the feeds and ``(step output, x, y)`` in step order."""

    graph_name: str
    batch_size: int
    images: int
    batches: list  # [(feeds: dict, events: [(output name, x, y), ...]), ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the distinct arrays held (an array shared by two events counts once)."""
        seen, total = set(), 0
        for feeds, events in self.batches:
            for a in [*feeds.values(), *(e[1] for e in events), *(e[2] for e in events)]:
                if a is not None and id(a) not in seen:
                    seen.add(id(a))
                    total += a.nbytes
        return total


def calibration_batches(calibration, graph: Graph, batch_size: int):
    """``calibration`` as feeds batches and the number of samples: a list of feeds dicts is taken
    as the batches (sentences of different lengths); an array (the first input) or a dict of
    arrays is cut into ``batch_size`` rows, float inputs as float32, integer ones (token ids) as
    they are."""
    if isinstance(calibration, (list, tuple)):
        batches = [dict(b) for b in calibration]
        return batches, sum(len(next(iter(b.values()))) for b in batches)
    feeds = calibration if isinstance(calibration, dict) else {graph.inputs[0].name: calibration}
    n = len(next(iter(feeds.values())))
    return [{k: (np.asarray(v[start:start + batch_size], np.float32) if np.asarray(v).dtype.kind == "f"
                 else np.asarray(v[start:start + batch_size]))
             for k, v in feeds.items()} for start in range(0, n, batch_size)], n


def _frozen(a):
    if isinstance(a, np.ndarray):
        a.setflags(write=False)
    return a


def trace_calibration(graph: Graph, calibration, *, batch_size: int = 256,
                      max_bytes: int | None = None) -> CalibrationTrace | None:
    """Run the calibration float pass of ``graph`` once and record what observers would see.

    ``batch_size`` must be the one ``quantize_model`` is called with (its default, 256): an
    observer may summarise per batch, so the batches are part of the record. With
    ``max_bytes``, a trace that grows past it is abandoned (``None``: calibrate live instead).
    """
    steps = lower(graph)
    batches, n = calibration_batches(calibration, graph, batch_size)
    recorded = []
    trace = CalibrationTrace(graph.name, batch_size, n, recorded)
    for batch in batches:
        events = []
        run_float(graph, batch, steps=steps,
                  observe=lambda ev: events.append((ev.step.output, _frozen(ev.x), _frozen(ev.y))))
        recorded.append(({k: _frozen(v) for k, v in batch.items()}, events))
        if max_bytes is not None and trace.nbytes > max_bytes:
            return None
    return trace
