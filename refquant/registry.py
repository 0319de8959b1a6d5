"""What the plugins registered: strategies, models and kernel backends, by name.

Each ``register_*`` hook is collected once (again after the plugins change) and every
registration is checked where it happens: a strategy must declare a known ``kind`` and, for
activations, a known ``timing``, and implement the methods those require
(:data:`refquant.strategies.REQUIRED_METHODS`, :data:`refquant.strategies.TIMING_METHODS`); a
QAT quantizer implements :data:`refquant.strategies.QAT_METHODS`. A registration that breaks
the contract is an error naming the plugin that made it. The executor, the functional API
(:mod:`refquant.functional`) and the command line all look things up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .graph import load_model
from .plugins import generation, get_plugin_manager, load_errors, plugin_source, record_hook_error
from .strategies import QAT_METHODS, REQUIRED_METHODS, TIMING_METHODS, TIMINGS

__all__ = ["Entry", "quantizers", "get_quantizer", "qat_quantizers", "get_qat_quantizer", "models", "get_model",
           "resolve_model", "backends", "get_backend", "clear_cache"]


@dataclass(frozen=True)
class Entry:
    """A registered thing with where it came from."""

    name: str
    obj: Any
    plugin: str
    distribution: str
    version: str
    doc: str = ""


_cache: dict[str, dict[str, Entry]] = {}
_cache_generation = -1


def clear_cache() -> None:
    _cache.clear()


def _collect(hook_name: str, make: Callable[..., tuple[str, Any, str]]) -> dict[str, Entry]:
    global _cache_generation
    if _cache_generation != generation():  # plugins were registered, unregistered or reset
        _cache.clear()
        _cache_generation = generation()
    if hook_name in _cache:
        return _cache[hook_name]
    pm = get_plugin_manager()
    found: dict[str, Entry] = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin, dist, version = plugin_source(impl.plugin)

        added: list[str] = []

        def register(*args, _plugin=plugin, _dist=dist, _version=version, _added=added):
            try:
                name, obj, doc = make(*args)
            except (TypeError, ValueError) as exc:
                err = type(exc)(f"plugin {_plugin!r}: {exc} (package {f'{_dist} {_version}'.strip()})")
                err.refquant_contract = True
                raise err from None
            if name in found:
                err = ValueError(f"{hook_name}: {name!r} is registered by both plugin "
                                 f"{found[name].plugin!r} and plugin {_plugin!r}")
                err.refquant_contract = True
                raise err
            found[name] = Entry(name, obj, _plugin, _dist, _version, doc)
            _added.append(name)

        try:
            impl.function(register)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — a broken hook is reported, not fatal
            if getattr(exc, "refquant_contract", False):
                raise  # a registration that breaks the contract: an error naming the plugin
            for name in added:  # the plugin is skipped; the others keep working
                found.pop(name, None)
            record_hook_error(plugin, hook_name, exc)
    _cache[hook_name] = found
    return found


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _require_methods(hook: str, what: str, obj, methods, why: str) -> None:
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"{hook}: {what} lacks {', '.join(f'{m}()' for m in missing)}, which {why}")


def _strategy(strategy):
    for attr in ("name", "kind", "doc"):
        if not hasattr(strategy, attr):
            raise TypeError(f"register_quantizers: {strategy!r} has no {attr!r} attribute")
    what = f"strategy {strategy.name!r}"
    if strategy.kind not in REQUIRED_METHODS:
        raise ValueError(f"register_quantizers: {what}: kind must be 'weights' or 'activations', "
                         f"got {strategy.kind!r}")
    _require_methods("register_quantizers", what, strategy, REQUIRED_METHODS[strategy.kind],
                     f"every {strategy.kind} strategy needs")
    if strategy.kind == "activations":
        timing = getattr(strategy, "timing", None)
        if timing not in TIMINGS:
            raise ValueError(f"register_quantizers: {what}: timing must be one of "
                             f"{', '.join(TIMINGS)}, got {timing!r}")
        _require_methods("register_quantizers", what, strategy, TIMING_METHODS[timing],
                         f"timing {timing!r} needs")
    return strategy.name, strategy, _first_line(strategy.doc)


def _failed_plugins() -> str:
    """`` (plugins that failed to load: a, b — see `refquant plugins`)`` or ``""``: a name
    may be missing because the plugin that registers it broke."""
    failed = sorted(load_errors())
    return f" (plugins that failed: {', '.join(failed)}; `refquant plugins` says why)" if failed else ""


def quantizers(kind: str | None = None) -> dict[str, Entry]:
    """Registered strategies (all, or only ``kind`` = ``"weights"`` / ``"activations"``)."""
    allq = _collect("register_quantizers", _strategy)
    return {n: e for n, e in allq.items() if kind is None or e.obj.kind == kind}


def get_quantizer(name: str, kind: str):
    """The strategy object registered as ``name`` for ``kind``; a clear error lists the others."""
    found = quantizers(kind)
    if name not in found:
        known = ", ".join(sorted(found)) or "(none loaded)"
        raise ValueError(f"unknown {kind} strategy {name!r}; registered: {known}{_failed_plugins()}")
    return found[name].obj


def _qat_quantizer(quantizer):
    for attr in ("name", "kind", "doc"):
        if not hasattr(quantizer, attr):
            raise TypeError(f"register_qat_quantizers: {quantizer!r} has no {attr!r} attribute")
    what = f"QAT quantizer {quantizer.name!r}"
    if quantizer.kind not in ("weights", "activations"):
        raise ValueError(f"register_qat_quantizers: {what}: kind must be 'weights' or 'activations', "
                         f"got {quantizer.kind!r}")
    _require_methods("register_qat_quantizers", what, quantizer, QAT_METHODS, "every QAT quantizer needs")
    return quantizer.name, quantizer, _first_line(quantizer.doc)


def qat_quantizers(kind: str | None = None) -> dict[str, Entry]:
    """Registered quantization-aware-training quantizers (all, or only ``kind``)."""
    allq = _collect("register_qat_quantizers", _qat_quantizer)
    return {n: e for n, e in allq.items() if kind is None or e.obj.kind == kind}


def get_qat_quantizer(name: str, kind: str | None = None):
    """The QAT quantizer registered as ``name`` (of ``kind``, if given); a clear error lists the others."""
    found = qat_quantizers(kind)
    if name not in found:
        known = ", ".join(sorted(found)) or "(none loaded)"
        what = f"{kind} QAT quantizer" if kind else "QAT quantizer"
        raise ValueError(f"unknown {what} {name!r}; registered: {known}{_failed_plugins()}")
    return found[name].obj


def models() -> dict[str, Entry]:
    return _collect("register_models", lambda name, loader, description="": (name, loader, description))


def get_model(name: str):
    found = models()
    if name not in found:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(found)) or '(none)'}")
    return found[name].obj()


def resolve_model(name_or_path: str):
    """A registered model by name, or a model file (``NAME.json``/``NAME``) by path."""
    if name_or_path in models():
        return get_model(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".json" or p.with_suffix(".json").exists():
        return load_model(p)
    known = ", ".join(sorted(models())) or "(none registered)"
    raise ValueError(f"unknown model {name_or_path!r}: not a registered model ({known}) "
                     f"and no file {p.with_suffix('.json')}")


def backends() -> dict[str, Entry]:
    return _collect("register_backends", lambda name, module: (name, module, _first_line(module.__doc__)))


def get_backend(name: str):
    found = backends()
    if name not in found:
        raise ValueError(f"unknown kernel backend {name!r}; registered: {', '.join(sorted(found))}")
    return found[name].obj
