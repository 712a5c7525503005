"""GradBench's ``ode``: y' = f(x, y), y_0' = x_0, y_i' = x_i y_{i-1}, from y = 0 over [0, 2] by s classical
Runge-Kutta steps; ``primal`` is the final y, ``gradient`` the gradient of its last component in x."""

import numpy as np

import fasttape as ft

from .inputs import count, vector
from .replay import replayed

END = 2.0  # integrated over [0, END]


def rhs(x, y, xp=np):
    """f(x, y): y_0' = x_0, y_i' = x_i y_{i-1}."""
    return x * xp.concatenate([xp.ones(1), y[:-1]])


def rk4_step(x, y, h, xp=np):
    k1 = rhs(x, y, xp)
    k2 = rhs(x, y + h / 2 * k1, xp)
    k3 = rhs(x, y + h / 2 * k2, xp)
    k4 = rhs(x, y + h * k3, xp)
    return y + h / 6 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def solve(x, steps: int, xp=np):
    """y at END after ``steps`` steps (a Python loop: its count is static for every tool)."""
    h = END / steps
    y = xp.zeros(x.shape[0])
    for _ in range(steps):
        y = rk4_step(x, y, h, xp)
    return y


def last(x, ticks):
    """The last component of y (``ticks``: an array whose length is the step count, so that the tape of
    one count serves every call with it)."""
    return solve(x, ticks.shape[0])[-1]


_gradient = ft.grad(last)


def _arrays(data):
    return vector(data, "x"), np.zeros(count(data, "s"))


def _primal(data):
    x, ticks = _arrays(data)
    return replayed(solve, x, ticks.shape[0])


def _gradient_of(data):
    x, ticks = _arrays(data)
    return lambda: _gradient(x, ticks)


FUNCTIONS = {"primal": _primal, "gradient": _gradient_of}
