"""The strategy seam: where the executor calls a plugin's strategy, and checks what comes back.

Every call the executor makes into a strategy (``quantize_weight``, ``prepare``,
``qparams_for_float``, ``qparams_before``, ``qparams_after``, ``make_observer``, an observer's
``observe`` and ``qparams``) goes through :func:`call`. A strategy that raises gets an error
naming the layer, the strategy and its plugin and package (an error of the same type for
``ValueError``/``TypeError`` — a strategy's message about bad options stays what it was, with
the provenance in front; :class:`refquant.plugins.PluginError` for anything else, including
``sys.exit``). What it returns is checked against the contract:

* qparams (:func:`check_qparams`): a :class:`~refquant.numerics.QParams` on an integer grid of
  at most 8 bits (the int8 kernels), scales finite and > 0, zero points integers on the grid,
  one scale or one per channel — O(channels), cheap enough for every call of a before/after
  strategy;
* a quantized weight (:func:`check_weight`, once per layer at quantization time): a
  :class:`~refquant.strategies.QuantizedWeight` whose values have the float weight's shape (a
  transposed weight is caught here), integers inside the grid (integer execution) or finite
  floats (float execution), with qparams as above (one scale or one per output channel).
"""

from __future__ import annotations

import math

import numpy as np

from ..numerics import QParams
from ..plugins import PluginError
from ..registry import quantizers
from ..strategies import QuantizedWeight

__all__ = ["strategy_label", "call", "check_qparams", "check_weight", "ContractError"]


class ContractError(PluginError):
    """A strategy returned something that breaks the strategy contract."""


def strategy_label(strategy) -> str:
    """``strategy 'NAME' (plugin 'P', package D V)`` — found by identity in the registry."""
    name = getattr(strategy, "name", type(strategy).__name__)
    for entry in quantizers().values():
        if entry.obj is strategy:
            return (f"strategy {name!r} (plugin {entry.plugin!r}, package "
                    f"{f'{entry.distribution} {entry.version}'.strip()})")
    return f"strategy {name!r} (not registered through a plugin)"


def _where(layer: str, strategy, method: str) -> str:
    return f"layer {layer!r}: {strategy_label(strategy)}: {method}()"


def call(strategy, method: str, layer: str, *args, target=None, **kwargs):
    """``getattr(target or strategy, method)(*args, **kwargs)``; a failure names the layer,
    the strategy and its plugin."""
    fn = getattr(target if target is not None else strategy, method)
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, PluginError):
            raise
        own = str(exc)
        own = own[len(f"layer {layer!r}: "):] if own.startswith(f"layer {layer!r}: ") else own
        text = f"{_where(layer, strategy, method)} failed: {own}"
        try:
            err = type(exc)(text)
        except Exception:  # noqa: BLE001 — an exception type with its own constructor
            err = PluginError(text)
        raise err from exc
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — anything else a plugin raises
        code = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
        raise PluginError(f"{_where(layer, strategy, method)} raised {code}: {exc}") from exc


def check_qparams(qp, strategy, method: str, layer: str, *, channels: int | None = None) -> QParams:
    """``qp`` if it keeps the qparams contract (module doc), else :class:`ContractError`.

    The error's provenance (:func:`strategy_label`, a registry look-up) is built only when a
    check fails: a before/after strategy's qparams are checked on every call."""
    def broken(text: str) -> ContractError:
        return ContractError(f"{_where(layer, strategy, method)} {text}")

    if not isinstance(qp, QParams):
        raise broken(f"must return QParams, got {type(qp).__name__}")
    fmt = qp.fmt
    qmin, qmax, bits = getattr(fmt, "qmin", None), getattr(fmt, "qmax", None), getattr(fmt, "bits", None)
    if qmin is None or qmax is None or bits is None or bits > 8:
        raise broken(f"returned qparams on {fmt!r}; the int8 kernels need an integer "
                            f"grid of at most 8 bits")
    scale = np.asarray(qp.scale)
    zp = np.asarray(qp.zero_point)
    if (scale.size == 1 and zp.size == 1 and scale.ndim <= 1 and scale.dtype.kind == "f" and zp.dtype.kind in "iu"
            and math.isfinite(scale.item()) and scale.item() > 0 and qmin <= zp.item() <= qmax):
        return qp  # one scale and zero point that pass every check below (the common case, without reductions)
    if (scale.ndim > 1 and not qp.block_size) or scale.size == 0:
        raise broken(f"returned a scale of shape {scale.shape}; expected one scale, "
                            f"one per channel, or blocked scales (block_size > 0: per row)")
    if channels is not None and scale.size not in (1, channels):
        raise broken(f"returned {scale.size} scales for {channels} channels")
    if scale.dtype.kind != "f" or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        bad = scale.reshape(-1)[~(np.isfinite(scale) & (scale > 0)).reshape(-1)] if scale.dtype.kind == "f" else scale
        raise broken(f"returned scale(s) that are not finite and positive: "
                            f"{bad.reshape(-1)[:4].tolist()}")
    if zp.shape != scale.shape and zp.size != 1:
        raise broken(f"returned {zp.size} zero points for {scale.size} scales")
    if zp.dtype.kind not in "iu" or zp.size and (zp.min() < qmin or zp.max() > qmax):
        raise broken(f"returned zero point(s) {zp.reshape(-1)[:4].tolist()} that are not "
                            f"integers on the grid [{qmin}, {qmax}]")
    return qp


def check_weight(qw, w: np.ndarray, strategy, layer: str) -> QuantizedWeight:
    """``qw`` if it keeps the quantized-weight contract for the float weight ``w`` (module doc)."""
    method = "quantize_weight"
    where = _where(layer, strategy, method)
    if not isinstance(qw, QuantizedWeight):
        raise ContractError(f"{where} must return a QuantizedWeight, got {type(qw).__name__}")
    execution = getattr(qw, "execution", "integer")
    if execution not in ("integer", "float"):
        raise ContractError(f"{where} returned execution {execution!r}; expected 'integer' or 'float'")
    values = np.asarray(qw.values)
    if execution == "integer" and values.shape != w.shape:
        raise ContractError(f"{where} returned values of shape {values.shape}; the float weight has shape "
                            f"{w.shape} (output channels first) — transposed or reshaped?")
    check_qparams(qw.qparams, strategy, method, layer, channels=w.shape[0])
    if execution == "float":
        fv = qw.float_values
        if fv is None or np.shape(fv) != w.shape:
            raise ContractError(f"{where} returned float execution with float_values of shape "
                                f"{None if fv is None else np.shape(fv)}; expected {w.shape}")
        if not np.all(np.isfinite(np.asarray(fv, np.float32))):
            raise ContractError(f"{where} returned non-finite float_values")
        return qw
    if values.dtype.kind not in "iu":
        raise ContractError(f"{where} returned values of dtype {values.dtype}; expected integers")
    qmin, qmax = qw.qparams.fmt.qmin, qw.qparams.fmt.qmax
    if values.size and (values.min() < qmin or values.max() > qmax):
        raise ContractError(f"{where} returned values in [{values.min()}, {values.max()}], off the grid "
                            f"[{qmin}, {qmax}]")
    return qw
