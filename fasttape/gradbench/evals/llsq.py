"""GradBench's ``llsq``: ½ Σ_i (s_i − Σ_j x_j t_i^j)², t_i = −1 + 2i/(n−1), s_i = sign(t_i): a least-squares fit
of a polynomial of m coefficients to a step (``primal``), and its gradient in x (``gradient``)."""

import numpy as np

import fasttape as ft

from .inputs import count, vector
from .replay import replayed


def points(n: int) -> np.ndarray:
    """t_i = −1 + 2i/(n−1), as the reference computes them."""
    return -1.0 + np.arange(n) * 2.0 / (n - 1)


def basis(t: np.ndarray, m: int) -> np.ndarray:
    """The n × m matrix of t_i^j (powers by repeated products, as the reference computes them)."""
    n = t.size
    powers = np.ones((n, m))
    if m > 1:
        powers[:, 1:] = np.cumprod(np.broadcast_to(t[:, None], (n, m - 1)), axis=1)
    return powers


def loss(x, n):
    """½ ‖s − T x‖² for n points (the basis T and the signs s depend on n alone: constants of the tape)."""
    t = points(n)
    r = np.sign(t) - basis(t, x.shape[0]) @ x
    return 0.5 * np.sum(r * r)


_gradient = ft.grad(loss)


def _arrays(data):
    return vector(data, "x"), count(data, "n", least=2)


def _primal(data):
    return replayed(loss, *_arrays(data))


def _gradient_of(data):
    x, n = _arrays(data)
    return lambda: _gradient(x, n)


FUNCTIONS = {"primal": _primal, "gradient": _gradient_of}
