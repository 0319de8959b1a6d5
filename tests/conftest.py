"""Shared test configuration: hypothesis profiles, and a fresh plugin manager for the tests that
register or select plugins.

``dev`` (default) keeps the edit-test loop quick; ``ci`` (selected when ``CI`` is set, or by
``HYPOTHESIS_PROFILE=ci``) runs more examples. Neither has a deadline: timing never decides a
test (the first call of a Numba kernel compiles, or loads from cache).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from refquant import plugins

settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def fresh_plugin_manager(monkeypatch):
    """A plugin manager built anew for the test (no ``REFQUANT_PLUGINS``), and again after it,
    so what a test registers or selects never leaks into another. Modules that need it for
    every test say ``pytestmark = pytest.mark.usefixtures("fresh_plugin_manager")``."""
    monkeypatch.delenv("REFQUANT_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()
