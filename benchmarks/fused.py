"""Hand-written fused adjoints, compiled with Numba: the practical floor for a gradient on one core.

Each function returns ``(value, gradient)`` from one or two loops over the data, with the reverse
sweep derived by hand and no temporaries beyond what the adjoint needs.  They are written for these
benchmarks only (for Rosenbrock, logistic regression and Lorenz) and checked against JAX before they
are timed.  Like fasttape's kernels they use no ``fastmath``.
"""

import numba
import numpy as np

from .workloads import BETA, DT, LORENZ_STEPS, RHO, SIGMA

_jit = numba.njit(cache=True, error_model="numpy")


@_jit
def rosenbrock_vg(x):
    """Value and gradient of the Rosenbrock function in one pass over x."""
    n = x.shape[0]
    grad = np.zeros(n)
    value = 0.0
    for i in range(n - 1):
        head = x[i]
        gap = x[i + 1] - head * head
        rest = 1.0 - head
        value += 100.0 * gap * gap + rest * rest
        grad[i] += -400.0 * gap * head - 2.0 * rest
        grad[i + 1] += 200.0 * gap
    return value, grad


@_jit
def logistic_vg(w, X, y):
    """Value and gradient in w of ``mean(logaddexp(0, -y * (X @ w)))``: one pass over the rows of X,
    each row read once for its margin and once for its contribution to the gradient."""
    m, d = X.shape
    grad = np.zeros(d)
    total = 0.0
    for i in range(m):
        margin = 0.0
        for j in range(d):
            margin += X[i, j] * w[j]
        t = -y[i] * margin
        if t > 0.0:  # log(1 + e^t) and its derivative sigmoid(t), without overflow
            e = np.exp(-t)
            total += t + np.log1p(e)
            slope = 1.0 / (1.0 + e)
        else:
            e = np.exp(t)
            total += np.log1p(e)
            slope = e / (1.0 + e)
        coefficient = -y[i] * slope / m
        for j in range(d):
            grad[j] += coefficient * X[i, j]
    return total / m, grad


@_jit
def lorenz_vg(u, steps=LORENZ_STEPS):
    """Value and gradient of ``workloads.lorenz``: the trajectory forward (kept), then the transposed
    Jacobian of each Euler step backward."""
    path = np.empty((steps + 1, 3))
    x, y, z = u[0], u[1], u[2]
    path[0, 0], path[0, 1], path[0, 2] = x, y, z
    for s in range(steps):
        dx = SIGMA * (y - x)
        dy = x * (RHO - z) - y
        dz = x * y - BETA * z
        x, y, z = x + DT * dx, y + DT * dy, z + DT * dz
        path[s + 1, 0], path[s + 1, 1], path[s + 1, 2] = x, y, z
    value = x * x + y * y + z * z
    gx, gy, gz = 2.0 * x, 2.0 * y, 2.0 * z
    for s in range(steps - 1, -1, -1):
        x, y, z = path[s, 0], path[s, 1], path[s, 2]
        gx, gy, gz = (
            gx * (1.0 - DT * SIGMA) + gy * DT * (RHO - z) + gz * DT * y,
            gx * DT * SIGMA + gy * (1.0 - DT) + gz * DT * x,
            -gy * DT * x + gz * (1.0 - DT * BETA),
        )
    grad = np.empty(3)
    grad[0], grad[1], grad[2] = gx, gy, gz
    return value, grad


FUSED = {"rosenbrock": rosenbrock_vg, "logistic": logistic_vg, "lorenz": lorenz_vg}
