"""The recommended Hypothesis settings for running the harness on an adapter.

Sized so that the state machine on a local database takes about a minute: enough examples
and steps to reach ledgers past ten entries, boundaries crossed exactly, idempotency keys
shared by accounts and refunds repeated. Built on Hypothesis' own defaults, whatever
profile the importing test suite loaded; refine it with `settings(RECOMMENDED, ...)`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

PROFILE_NAME = "credits-domain-recommended"

RECOMMENDED = settings(
    settings.get_profile("default"),
    max_examples=150,
    stateful_step_count=40,
    # A database adapter's first example pays for its connection and schema.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(PROFILE_NAME, RECOMMENDED)
