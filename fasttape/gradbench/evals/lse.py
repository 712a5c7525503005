"""GradBench's ``lse``: log Σ exp(x_i) of a long vector (``primal``) and its gradient (``gradient``)."""

import numpy as np

import fasttape as ft

from .inputs import vector
from .replay import replayed


def logsumexp(x):
    a = np.max(x)
    return a + np.log(np.sum(np.exp(x - a)))


_gradient = ft.grad(logsumexp)


def _primal(data):
    x = vector(data, "x")
    return replayed(logsumexp, x)


def _gradient_of(data):
    x = vector(data, "x")
    return lambda: _gradient(x)


FUNCTIONS = {"primal": _primal, "gradient": _gradient_of}
