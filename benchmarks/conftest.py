"""Shared benchmark setup: Numba kernels warmed once, JAX (optional) in float64 on the CPU."""

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from Numba's on-disk cache) every sweep before anything is timed."""
    import fasttape as ft

    def f(v):
        return np.sum(np.tanh(v) * v)

    x = np.linspace(0.1, 1.0, 40)
    ft.value_and_grad(f)(x)
    ft.hvp(f, (x,), (x,))  # the forward-over-reverse sweep
    ft.hessian(f)(x)


@pytest.fixture(scope="session")
def jax():
    """The ``jax`` module configured for float64 on the CPU; skips the benchmark if JAX is not installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax
