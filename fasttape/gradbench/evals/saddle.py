"""GradBench's ``saddle``: a saddle point of f(p1, p2) = ‖p1‖² − ‖p2‖² by nested searches.  The cost of p1 is
the maximum of f over p2, found by ``descent.argmax`` from the start; p1 is found by ``descent.argmin`` of that
cost, whose derivative is taken through the whole inner search (every step of it, with its gradients of f in
p2: a derivative inside a derivative); then p2 is searched again at the p1 found.

Functions ``rr``, ``rf``, ``fr`` and ``ff``: the first letter is the outer derivative's mode (of the cost in
p1), the second the inner one's (of f in p2); r: reverse (``ft.grad``), f: forward (``ft.jacfwd``).  Input
``{"start": [x, y]}``; output ``[p1x, p1y, p2x, p2y]``.
"""

import numpy as np

import fasttape as ft

from . import descent
from .inputs import vector
from .replay import compiled


def f(p1, p2):
    return np.sum(p1 * p1) - np.sum(p2 * p2)


INNER = {"r": ft.grad(f, argnums=1), "f": ft.jacfwd(f, argnums=1)}  # ∂f/∂p2 by either mode


def _cost(inner):
    def cost(p1, start):
        """max over p2 of f(p1, p2), by the descent from ``start``."""
        p2 = descent.argmax(lambda p2: f(p1, p2), lambda p2: inner(p1, p2), start)
        return f(p1, p2)

    return cost


COSTS = {mode: _cost(inner) for mode, inner in INNER.items()}
COMPILED_COSTS = {mode: compiled(cost) for mode, cost in COSTS.items()}  # the searches' objective: by its tape
DERIVATIVES = {
    outer + inner: (ft.grad if outer == "r" else ft.jacfwd)(cost) for outer in "rf" for inner, cost in COSTS.items()
}


def search(modes: str, start: np.ndarray) -> np.ndarray:
    """``[p1, p2]``: p1 by the outer descent, then p2 at it, both from ``start``."""
    inner, cost, derivative = INNER[modes[1]], COMPILED_COSTS[modes[1]], DERIVATIVES[modes]
    p1 = descent.argmin(lambda p1: cost(p1, start), lambda p1: derivative(p1, start), start)
    p2 = descent.argmax(lambda p2: f(p1, p2), lambda p2: inner(p1, p2), start)
    return np.concatenate([p1, p2])


def _function(modes):
    def prepare(data):
        start = vector(data, "start")
        if start.shape != (2,):
            raise ValueError(f"field 'start' should be a point [x, y], got {start.shape[0]} numbers")
        return lambda: search(modes, start)

    return prepare


FUNCTIONS = {modes: _function(modes) for modes in ("rr", "rf", "fr", "ff")}
