"""The plugin manager: loads plugins from the ``refquant`` entry-point group.

The built-in strategies (``plugins/refquant_static`` …) are ordinary packages that declare an
entry point in that group, exactly as a third-party plugin does. ``REFQUANT_PLUGINS`` chooses
what loads: unset loads everything, a comma-separated list of entry-point names loads only
those, and an empty string loads none. A plugin that fails to import is reported by name
(:func:`load_errors`) while the others still load.

The engine's own hook implementations (:mod:`refquant.builtin`: the kernel backends, the
min-max QAT quantizers, the shipped models) are always registered, under the name
``refquant``. Like every plugin they are loaded by name (:data:`BUILTIN_PLUGIN`), not
imported here: plugins sit above the plugin manager and the registry, and use them.

:func:`generation` counts changes to the set of registered plugins, so that what was collected
from them (:mod:`refquant.registry`) knows when to collect again.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from ._version import __version__

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_PLUGIN", "PluginError", "get_plugin_manager", "load_errors",
           "plugin_source", "describe_plugin", "record_hook_error", "unknown_selected", "available_plugins",
           "call_hook", "register_plugin", "unregister_plugin", "reset", "generation"]

ENTRY_POINT_GROUP = "refquant"
#: the module with the engine's own hook implementations, registered as plugin ``refquant``
ZOO_PLUGIN = "refquant.zoo.plugin"
BUILTIN_PLUGIN = "refquant.builtin"
_pm: pluggy.PluginManager | None = None
_errors: dict[str, str] = {}
_sources: dict[str, tuple[str, str]] = {}
_available: list[str] = []
_generation = 0


class PluginError(ValueError):
    """A plugin broke at load or use time; the message names the plugin and its package."""


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (the plugin called sys.exit)"
    return f"{type(exc).__name__}: {exc}"


def _selected(name: str) -> bool:
    wanted = os.environ.get("REFQUANT_PLUGINS")
    if wanted is None:
        return True
    return name in {w.strip() for w in wanted.split(",") if w.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        pm.register(importlib.import_module(BUILTIN_PLUGIN), name="refquant")
        _sources["refquant"] = ("refquant", __version__)
        # the real models from packages: a built-in plugin of their own, so the shipped
        # (golden-covered) models stay those of plugin "refquant"
        pm.register(importlib.import_module(ZOO_PLUGIN), name="refquant.zoo")
        _sources["refquant.zoo"] = ("refquant", __version__)
        _available.clear()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _available.append(ep.name)
            if not _selected(ep.name):
                continue
            dist = ep.dist
            _sources[ep.name] = (dist.name, dist.version) if dist else (ep.value, "?")
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 — reported by name, not fatal
                # SystemExit too: a plugin's sys.exit() at import must not end every command
                package = f"{dist.name} {dist.version}" if dist else ep.value
                _errors[ep.name] = f"failed to load (package {package}): {_exc_text(exc)}"
                _sources.pop(ep.name, None)
                continue
        _pm = pm
    return _pm


def load_errors() -> dict[str, str]:
    """Plugin name → error text for plugins that failed to load or whose ``register_*`` hook
    failed (``failed to load (package D V): ImportError: …``, ``hook register_models failed
    (package D V): …``); the other plugins still work."""
    get_plugin_manager()
    return dict(_errors)


def record_hook_error(plugin: str, hook_name: str, exc: BaseException) -> None:
    """Report that ``plugin``'s ``hook_name`` failed (shown by :func:`load_errors`); what the
    hook registered is dropped, the other plugins keep working."""
    dist, version = _sources.get(plugin, ("(registered at run time)", ""))
    _errors.setdefault(plugin, f"hook {hook_name} failed (package {f'{dist} {version}'.strip()}): "
                               f"{_exc_text(exc)}")


def available_plugins() -> list[str]:
    """Entry-point names installed in the ``refquant`` group (loaded or not)."""
    get_plugin_manager()
    return sorted(set(_available))


def unknown_selected() -> list[str]:
    """Names in ``REFQUANT_PLUGINS`` that no installed entry point has (a misspelling)."""
    wanted = os.environ.get("REFQUANT_PLUGINS")
    if not wanted:
        return []
    have = set(available_plugins())
    return sorted({w.strip() for w in wanted.split(",") if w.strip()} - have)


def describe_plugin(name: str, dist: str | None = None) -> str:
    """``plugin 'NAME' (package DIST VERSION)`` — how errors name a plugin."""
    if dist is None:
        dist, version = _sources.get(name, ("(registered at run time)", ""))
        dist = f"{dist} {version}".strip()
    return f"plugin {name!r} (package {dist})"


def call_hook(hook_name: str, **kwargs) -> None:
    """Call an event hook implementation by implementation; a failure names its plugin.

    Raises :class:`PluginError` (``plugin 'x' (package y): hook layer_executed raised …``)
    instead of a traceback that does not say whose code failed.
    """
    pm = get_plugin_manager()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — re-raised naming the plugin
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            raise PluginError(f"{describe_plugin(name)}: hook {hook_name} failed: {_exc_text(exc)}") from exc


def plugin_source(plugin) -> tuple[str, str, str]:
    """``(plugin name, distribution, version)`` for a registered plugin object."""
    pm = get_plugin_manager()
    name = pm.get_name(plugin) or repr(plugin)
    dist, version = _sources.get(name, ("(registered at run time)", ""))
    return name, dist, version


def generation() -> int:
    """A number that changes whenever plugins are registered, unregistered or reset."""
    return _generation


def _changed() -> None:
    global _generation
    _generation += 1


def register_plugin(plugin, name: str) -> None:
    """Register a plugin object at run time (tests, notebooks); what it registers is seen at once.

    A hook implementation whose signature does not match the hook is an error naming the plugin.
    """
    try:
        get_plugin_manager().register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise PluginError(f"{describe_plugin(name, '(registered at run time)')}: {text}") from None
    _changed()


def unregister_plugin(plugin) -> None:
    """Undo :func:`register_plugin`."""
    get_plugin_manager().unregister(plugin)
    _changed()


def reset() -> None:
    """Forget the loaded plugins (the next call reloads them; used by tests and REFQUANT_PLUGINS)."""
    global _pm
    _pm = None
    _errors.clear()
    _sources.clear()
    _available.clear()
    _changed()
