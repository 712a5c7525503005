"""Shared test setup: JAX in float64, hypothesis profiles, kernels warmed once."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=15, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
# nox -s debug: bounds-checked or interpreted sweeps are slow; fewer examples, same derandomised draws as CI
settings.register_profile(
    "debug", deadline=None, max_examples=5, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from the on-disk cache) every sweep once per test session."""
    from fasttape import tiers
    from fasttape.warm import warm

    if tiers.mode() != "executor":  # FASTTAPE_TIERS=executor: nothing is compiled
        warm(quiet=True)
    yield
