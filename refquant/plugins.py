"""The plugin manager: loads plugins from the ``refquant`` entry-point group.

The built-in strategies (``plugins/refquant_static`` …) are ordinary packages that declare an
entry point in that group, exactly as a third-party plugin does. ``REFQUANT_PLUGINS`` chooses
what loads: unset loads everything, a comma-separated list of entry-point names loads only
those, and an empty string loads none. A plugin that fails to import is reported by name
(:func:`load_errors`) while the others still load.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pluggy

from . import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "get_plugin_manager", "load_errors", "plugin_source", "register_plugin",
           "unregister_plugin", "reset"]

ENTRY_POINT_GROUP = "refquant"
_pm: pluggy.PluginManager | None = None
_errors: dict[str, str] = {}
_sources: dict[str, tuple[str, str]] = {}


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
        from . import builtin, __version__

        pm.register(builtin, name="refquant")
        _sources["refquant"] = ("refquant", __version__)
        from .zoo import plugin as zoo_plugin

        pm.register(zoo_plugin, name="refquant.zoo")
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


def register_plugin(plugin, name: str) -> None:
    """Register a plugin object at run time (tests, notebooks); what it registers is seen at once."""
    from . import registry

    get_plugin_manager().register(plugin, name=name)
    registry.clear_cache()


def unregister_plugin(plugin) -> None:
    """Undo :func:`register_plugin`."""
    from . import registry

    get_plugin_manager().unregister(plugin)
    registry.clear_cache()


def reset() -> None:
    """Forget the loaded plugins (the next call reloads them; used by tests and REFQUANT_PLUGINS)."""
    global _pm
    _pm = None
    _errors.clear()
    _sources.clear()
    from . import registry

    registry.clear_cache()
