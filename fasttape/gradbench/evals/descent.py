"""The gradient descent that GradBench's ``particle`` and ``saddle`` evals prescribe (``cpp/gradbench/gd.hpp``),
step for step, so that every tool lands on the same point: the step size starts at 1e-5, doubles after ten
accepted steps and halves on a step that does not decrease the objective; the search stops when the gradient's
norm or the step's length is at most 1e-5.

Written with NumPy on small arrays, it runs as well on traced values inside a function that fasttape
differentiates (``saddle`` differentiates through a whole inner search): its comparisons become guards.
"""

import numpy as np

TOLERANCE = 1e-5
FIRST_STEP = 1e-5


def argmin(objective, gradient, x0):
    """The point where the descent from ``x0`` stops (``objective(x)`` a scalar, ``gradient(x)`` an array of
    x's shape)."""
    x = x0
    fx = objective(x)
    gx = gradient(x)
    accepted, eta = 0, FIRST_STEP
    while True:
        if np.sqrt(np.sum(gx * gx)) <= TOLERANCE:
            return x
        if accepted == 10:
            eta, accepted = eta * 2.0, 0
            continue
        x_next = x - eta * gx
        if np.sqrt(np.sum((x - x_next) ** 2)) <= TOLERANCE:
            return x
        f_next = objective(x_next)
        if f_next < fx:
            x, fx = x_next, f_next
            gx = gradient(x)
            accepted += 1
        else:
            eta, accepted = eta / 2.0, 0


def argmax(objective, gradient, x0):
    """``argmin`` of the negated objective."""
    return argmin(lambda x: -objective(x), lambda x: -gradient(x), x0)
