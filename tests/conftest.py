"""Hypothesis profiles: ``ci`` (default; derandomized, so CI is reproducible) and ``long``
(local runs: ``HYPOTHESIS_PROFILE=long pytest -m 'not slow' tests/spec``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, stateful_step_count=120, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
