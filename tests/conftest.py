"""Shared test configuration: hypothesis profiles.

``dev`` (default) keeps the edit-test loop quick; ``ci`` (selected when ``CI`` is set, or by
``HYPOTHESIS_PROFILE=ci``) runs more examples. Neither has a deadline: timing never decides a
test (the first call of a Numba kernel compiles, or loads from cache).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
