"""Benchmark workloads, written once as plain NumPy-style code.

The same source feeds every column of a benchmark: NumPy runs it on arrays,
fasttape traces it (plain ``np`` calls reach fasttape through NumPy's dispatch
protocols), and JAX runs it with ``xp=jax.numpy``.
"""

import numpy as np

ROSENBROCK_SIZES = (10, 1_000, 100_000, 1_000_000)

LORENZ_STEPS = 1000
SIGMA, RHO, BETA, DT = 10.0, 28.0, 8.0 / 3.0, 0.01


def make_rosenbrock(xp=np):
    """The n-dimensional Rosenbrock function, using the array namespace ``xp`` for ``sum``."""

    def rosenbrock(x):
        return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return rosenbrock


rosenbrock = make_rosenbrock(np)


def rosenbrock_input(n):
    """A deterministic point away from the minimum, in [-1.5, 1.5]."""
    return np.linspace(-1.5, 1.5, n)


def lorenz_step(x, y, z):
    """One explicit-Euler step of the Lorenz system, on scalars of any kind."""
    dx = SIGMA * (y - x)
    dy = x * (RHO - z) - y
    dz = x * y - BETA * z
    return x + DT * dx, y + DT * dy, z + DT * dz


def lorenz(u, steps=LORENZ_STEPS):
    """Integrate from ``(u[0], u[1], u[2])`` with a Python loop; returns the squared final radius."""
    x, y, z = u[0], u[1], u[2]
    for _ in range(steps):
        x, y, z = lorenz_step(x, y, z)
    return x * x + y * y + z * z


def make_lorenz_fori(steps=LORENZ_STEPS):
    """``lorenz`` with the loop as ``jax.lax.fori_loop`` (tracing the Python loop in JAX takes seconds)."""
    from jax import lax

    def lorenz_fori(u):
        x, y, z = lax.fori_loop(0, steps, lambda _, s: lorenz_step(*s), (u[0], u[1], u[2]))
        return x * x + y * y + z * z

    return lorenz_fori


def lorenz_input():
    return np.array([1.0, 1.0, 1.0])
