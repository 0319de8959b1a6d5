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

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_PLUGIN", "get_plugin_manager", "load_errors", "plugin_source",
           "register_plugin", "unregister_plugin", "reset", "generation"]

ENTRY_POINT_GROUP = "refquant"
#: the module with the engine's own hook implementations, registered as plugin ``refquant``
ZOO_PLUGIN = "refquant.zoo.plugin"
BUILTIN_PLUGIN = "refquant.builtin"
_pm: pluggy.PluginManager | None = None
_errors: dict[str, str] = {}
_sources: dict[str, tuple[str, str]] = {}
_generation = 0


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
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if not _selected(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 — any import failure is reported, not fatal
                _errors[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            pm.register(module, name=ep.name)
            dist = ep.dist
            _sources[ep.name] = (dist.name, dist.version) if dist else (ep.value, "?")
        _pm = pm
    return _pm


def load_errors() -> dict[str, str]:
    """Entry-point name → error text for plugins that failed to load."""
    get_plugin_manager()
    return dict(_errors)


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
    """Register a plugin object at run time (tests, notebooks); what it registers is seen at once."""
    get_plugin_manager().register(plugin, name=name)
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
    _changed()
