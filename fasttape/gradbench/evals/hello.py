"""GradBench's ``hello``: ``square`` (x²) and ``double`` (its derivative, 2x, by ``ft.grad``)."""

import numpy as np

import fasttape as ft


def square(x):
    return x * x


_derivative = ft.grad(square)


def _number(value) -> np.float64:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"hello's input is a number, got {type(value).__name__} {value!r}")
    return np.float64(value)


def _square(value):
    x = _number(value)
    return lambda: square(x)


def _double(value):
    x = _number(value)
    return lambda: _derivative(x)


FUNCTIONS = {"square": _square, "double": _double}
