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


@pytest.fixture(scope="session", autouse=True)
def interpreter_unless_asked():
    """Tapes stay in the interpreter (tests/test_tape_kernels.py holds the tier of per-tape kernels to it),
    unless FASTTAPE_TAPE_KERNELS asks otherwise (``always``: the whole suite on per-tape kernels)."""
    import fasttape as ft

    if not os.environ.get("FASTTAPE_TAPE_KERNELS"):
        ft.set_options(tape_kernels="never")
    yield
