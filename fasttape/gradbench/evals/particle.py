"""GradBench's ``particle``: the charge position w that makes a particle, pushed by the gradient of a potential,
land at the origin.  A derivative inside a derivative: the particle's path is an Euler integration whose
acceleration is −∇ₓ p(x) (the inner derivative, in x), and w is found by the descent of ``descent.argmin`` on
the squared landing point, differentiated in w (the outer derivative, through the whole path and the inner
one).

Functions ``rr``, ``rf``, ``fr`` and ``ff``: the first letter is the outer derivative's mode, the second the
inner one's (r: reverse, ``ft.grad``; f: forward, ``ft.jacfwd``).  Input ``{"w": w0}``; output the final w.
"""

import numpy as np

import fasttape as ft

from . import descent
from .inputs import number

STEP = 0.1  # Euler time step
START, VELOCITY = np.array([0.0, 8.0]), np.array([0.75, 0.0])


def potential(charges, x):
    """p(x) = Σ_c 1 / ‖x − c‖."""
    return np.sum(1.0 / np.sqrt(np.sum((charges - x) ** 2, axis=1)))


def landing(w, inner):
    """The squared horizontal position where the particle crosses y = 0, charges at (10, 10 − w) and (10, 0);
    ``inner(charges, x)`` is ∇ₓ p."""
    charges = np.array([[10.0, 10.0], [10.0, 0.0]]) - w * np.array([[0.0, 1.0], [0.0, 0.0]])
    x, velocity = START, VELOCITY
    while True:
        acceleration = -inner(charges, x)
        x = x + STEP * velocity
        if x[1] <= 0.0:
            x_final = x - x[1] / velocity[1] * velocity  # back along the last step to y = 0
            return x_final[0] ** 2
        velocity = velocity + STEP * acceleration


INNER = {"r": ft.grad(potential, argnums=1), "f": ft.jacfwd(potential, argnums=1)}  # ∇ₓ p by either mode


def _objective(inner):
    def objective(w):  # (w: an array of one)
        return landing(w[0], inner)

    return objective


OBJECTIVES = {mode: _objective(inner) for mode, inner in INNER.items()}
# The descent's objective runs eagerly: the landing step's number changes with w, so a tape of it would
# rarely replay (each change of that branch is a new trace).
DERIVATIVES = {
    outer + inner: (ft.grad if outer == "r" else ft.jacfwd)(objective)
    for outer in "rf"
    for inner, objective in OBJECTIVES.items()
}


def search(modes: str, w0: float) -> float:
    """The charge position w at which the descent from ``w0`` stops (``modes``: outer and inner mode)."""
    w = descent.argmin(OBJECTIVES[modes[1]], DERIVATIVES[modes], np.array([w0]))
    return float(w[0])


def _function(modes):
    def prepare(data):
        w0 = number(data, "w")
        return lambda: search(modes, w0)

    return prepare


FUNCTIONS = {modes: _function(modes) for modes in ("rr", "rf", "fr", "ff")}
