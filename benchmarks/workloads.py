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


def rosenbrock_hvp(x, v):
    """The exact Hessian-vector product of ``rosenbrock`` (its Hessian is tridiagonal), the reference
    that every HVP and Hessian benchmark checks against."""
    head, tail = x[:-1], x[1:]
    diag = np.zeros_like(x)
    diag[:-1] += 1200.0 * head**2 - 400.0 * tail + 2.0
    diag[1:] += 200.0
    off = -400.0 * head  # d²f / dx_i dx_{i+1}
    hv = diag * v
    hv[:-1] += off * v[1:]
    hv[1:] += off * v[:-1]
    return hv


# --------------------------------------------------------------------------
# A one-hidden-layer tanh MLP with a mean-squared-error loss
# --------------------------------------------------------------------------
MLP_SIZES = ((32, 8, 16), (1024, 64, 256))  # batch x inputs x hidden units; one output


def make_mlp_loss(xp=np):
    """``loss(params, X, Y)`` with ``params = (W1, b1, W2, b2)``; differentiated in params only."""

    def mlp_loss(params, X, Y):
        W1, b1, W2, b2 = params
        return xp.mean((xp.tanh(X @ W1 + b1) @ W2 + b2 - Y) ** 2)

    return mlp_loss


mlp_loss = make_mlp_loss(np)


def mlp_input(batch, n_in, hidden, seed=0):
    """``(params, X, Y)``: scaled Gaussian weights (pre-activations of order one, tanh far from
    saturation), Gaussian inputs and targets."""
    rng = np.random.default_rng(seed)
    params = (
        rng.standard_normal((n_in, hidden)) / np.sqrt(n_in),
        0.1 * rng.standard_normal(hidden),
        rng.standard_normal((hidden, 1)) / np.sqrt(hidden),
        0.1 * rng.standard_normal(1),
    )
    return params, rng.standard_normal((batch, n_in)), rng.standard_normal((batch, 1))


def directions(like, k=None, seed=1):
    """Deterministic Gaussian directions shaped like ``like`` (an array or a tuple of arrays), with a
    trailing axis of ``k`` directions when k is given: the ``v`` of the HVP benchmarks."""
    rng = np.random.default_rng(seed)
    extra = () if k is None else (k,)
    if isinstance(like, tuple):
        return tuple(rng.standard_normal(np.shape(leaf) + extra) for leaf in like)
    return rng.standard_normal(np.shape(like) + extra)
