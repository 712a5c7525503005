"""Hand-written fused adjoints, compiled with Numba: the practical floor for a gradient on one core.

Each function returns ``(value, gradient)`` from one or two loops over the data (and BLAS for the
matrix products, as every tool here uses), with the reverse sweep derived by hand and no temporaries
beyond what the adjoint needs.  They are written for these benchmarks only and checked against JAX
before they are timed.  Like fasttape's kernels they use no ``fastmath``.
"""

import numba
import numpy as np

from fasttape.gradbench.evals import gmm

from .workloads import BETA, DT, LORENZ_STEPS, ODE_END, RHO, SIGMA, WISHART_GAMMA, WISHART_M

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


@_jit
def lse_vg(x):
    """GradBench's lse: the maximum, then one pass for the sum of exponentials, one for the softmax."""
    top = x.max()
    grad = np.exp(x - top)
    total = grad.sum()
    grad /= total  # d lse / dx = softmax(x)
    return np.log(total) + top, grad


@_jit
def _softmax_rows(logits, picked_gradient):
    """Per row of ``logits``: logsumexp, and in place its gradient softmax(z) (the caller subtracts the
    picked logits' gradient); returns the summed logsumexp."""
    batch, classes = logits.shape
    total = 0.0
    for i in range(batch):
        top = logits[i, 0]
        for j in range(1, classes):
            top = max(top, logits[i, j])
        s = 0.0
        for j in range(classes):
            e = np.exp(logits[i, j] - top)
            logits[i, j] = e
            s += e
        total += np.log(s) + top
        for j in range(classes):
            logits[i, j] = logits[i, j] / s - picked_gradient[i, j]
    return total


@_jit
def softmax_vg(W, X, Y):
    """Mean over the batch of logsumexp(X W) - <Y, X W>: the logits by BLAS, softmax minus Y in place,
    the gradient X^T (softmax - Y) / batch by BLAS."""
    logits = X @ W
    picked = (Y * logits).sum()
    total = _softmax_rows(logits, Y)
    batch = X.shape[0]
    return (total - picked) / batch, X.T @ logits / batch


@_jit
def xent_vg(W, X, labels):
    """The same loss with integer labels: softmax minus the label's one-hot, without forming it."""
    logits = X @ W
    batch = X.shape[0]
    picked = 0.0
    for i in range(batch):
        picked += logits[i, labels[i]]
    onehot = np.zeros_like(logits)
    for i in range(batch):
        onehot[i, labels[i]] = 1.0
    total = _softmax_rows(logits, onehot)
    return (total - picked) / batch, X.T @ logits / batch


@_jit
def kmeans_vg(C, X):
    """GradBench's kmeans objective: one pass over the points, each finding its nearest centre and
    adding 2 (c - x) to that centre's gradient."""
    n, d = X.shape
    grad = np.zeros_like(C)
    total = 0.0
    for i in range(n):
        best, nearest = np.inf, 0
        for j in range(C.shape[0]):
            dist = 0.0
            for t in range(d):
                gap = X[i, t] - C[j, t]
                dist += gap * gap
            if dist < best:
                best, nearest = dist, j
        total += best
        for t in range(d):
            grad[nearest, t] += 2.0 * (C[nearest, t] - X[i, t])
    return total, grad


@_jit
def mlp_vg(W1, b1, W2, b2, X, Y):
    """mean((tanh(X W1 + b1) W2 + b2 - Y)^2): the hidden layer by BLAS with tanh in place, the residual
    scaled into the output's adjoint, then the two layers' transposed products by BLAS."""
    hidden = X @ W1 + b1
    np.tanh(hidden, hidden)
    residual = hidden @ W2 + b2 - Y
    count = residual.size
    value = (residual * residual).sum() / count
    adjoint = residual * (2.0 / count)  # d mean(r^2) / dr
    gW2 = hidden.T @ adjoint
    gb2 = adjoint.sum(axis=0)
    pre = adjoint @ W2.T
    pre *= 1.0 - hidden * hidden  # d tanh = 1 - tanh^2
    return value, (X.T @ pre, pre.sum(axis=0), gW2, gb2)


@_jit
def _ode_stages(x, y, h, y2, y3, y4):
    """One Runge-Kutta step of y' = x * (1, y[:-1]) in one pass over the components (component i's
    stages read component i - 1's): fills the stage inputs y2, y3, y4 and returns the next y."""
    out = np.empty_like(y)
    prev, prev2, prev3, prev4 = 1.0, 1.0, 1.0, 1.0  # (component 0's right-hand side is x_0 alone)
    for i in range(y.shape[0]):
        k1 = x[i] * prev
        y2[i] = y[i] + 0.5 * h * k1
        k2 = x[i] * prev2
        y3[i] = y[i] + 0.5 * h * k2
        k3 = x[i] * prev3
        y4[i] = y[i] + h * k3
        k4 = x[i] * prev4
        out[i] = y[i] + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        prev, prev2, prev3, prev4 = y[i], y2[i], y3[i], y4[i]
    return out


@_jit
def ode_vg(x, ticks):
    """GradBench's ode: the steps forward keeping each y, then each step's transpose backward, its stage
    inputs recomputed and the component chain walked from the last component to the first."""
    n, steps = x.shape[0], ticks.shape[0]
    h = ODE_END / steps
    path = np.empty((steps + 1, n))
    path[0] = 0.0
    y2, y3, y4 = np.empty(n), np.empty(n), np.empty(n)
    for s in range(steps):
        path[s + 1] = _ode_stages(x, path[s], h, y2, y3, y4)
    grad = np.zeros(n)
    adjoint = np.zeros(n)
    adjoint[n - 1] = 1.0  # the objective is the last component
    for s in range(steps - 1, -1, -1):
        y = path[s]
        _ode_stages(x, y, h, y2, y3, y4)
        c1, c2, c3, c4 = 0.0, 0.0, 0.0, 0.0  # x[i + 1] times the adjoints of component i + 1's slopes
        for i in range(n - 1, -1, -1):
            b = adjoint[i]
            kb4 = h / 6.0 * b
            kb3 = h / 3.0 * b + h * c4
            kb2 = h / 3.0 * b + 0.5 * h * c3
            kb1 = h / 6.0 * b + 0.5 * h * c2
            adjoint[i] = b + c2 + c3 + c4 + c1
            if i > 0:
                grad[i] += kb1 * y[i - 1] + kb2 * y2[i - 1] + kb3 * y3[i - 1] + kb4 * y4[i - 1]
            else:
                grad[i] += kb1 + kb2 + kb3 + kb4
            c1, c2, c3, c4 = x[i] * kb1, x[i] * kb2, x[i] * kb3, x[i] * kb4
    return path[steps, n - 1], grad


@_jit
def gmm_vg(alphas, means, icf, X, gamma, m):
    """GradBench's GMM log-posterior without its constant: per point, each component's z = Q (x - mu) (Q's
    strict lower part read from icf column by column, as ``gmm.triangle_index``), the logsumexp
    over components, then the responsibilities' contributions to every parameter; the weights'
    normaliser and the Wishart prior at the end."""
    n, d = X.shape
    k = alphas.shape[0]
    diag = np.exp(icf[:, :d])
    sum_log_diag = icf[:, :d].sum(axis=1)
    g_alphas, g_means, g_icf = np.zeros(k), np.zeros((k, d)), np.zeros_like(icf)
    centred, z, inner = np.empty((k, d)), np.empty((k, d)), np.empty(k)
    total = 0.0
    for i in range(n):
        for c in range(k):
            for j in range(d):
                centred[c, j] = X[i, j] - means[c, j]
                z[c, j] = diag[c, j] * centred[c, j]
            p = d
            for col in range(d):
                for row in range(col + 1, d):
                    z[c, row] += icf[c, p] * centred[c, col]
                    p += 1
            inner[c] = alphas[c] + sum_log_diag[c] - 0.5 * (z[c] * z[c]).sum()
        top = inner.max()
        scale = np.exp(inner - top).sum()
        total += np.log(scale) + top
        for c in range(k):
            w = np.exp(inner[c] - top) / scale  # the point's responsibility: d logsumexp / d inner
            g_alphas[c] += w
            for j in range(d):  # d(-|z|^2 / 2) / d mu = Q^T z; / d log Q_jj = -z_j (x - mu)_j Q_jj
                g_means[c, j] += w * diag[c, j] * z[c, j]
                g_icf[c, j] += w * (1.0 - z[c, j] * centred[c, j] * diag[c, j])
            p = d
            for col in range(d):
                for row in range(col + 1, d):  # / d Q_row,col = -z_row (x - mu)_col
                    g_means[c, col] += w * icf[c, p] * z[c, row]
                    g_icf[c, p] -= w * z[c, row] * centred[c, col]
                    p += 1
    top = alphas.max()
    weights = np.exp(alphas - top)
    scale = weights.sum()
    g_alphas -= n * weights / scale  # - n logsumexp(alphas)
    squares = np.exp(2.0 * icf[:, :d])
    lower = icf[:, d:]
    prior = m * sum_log_diag.sum() - 0.5 * gamma**2 * (squares.sum() + (lower * lower).sum())  # Wishart's log
    g_icf[:, :d] += m - gamma**2 * squares
    g_icf[:, d:] -= gamma**2 * lower
    return total - n * (np.log(scale) + top) + prior, (g_alphas, g_means, g_icf)


def gmm_params_vg(params, X):
    """``gmm_vg`` on the workload's ``(params, X)``, with the objective's constant."""
    alphas, means, icf = params
    value, grad = gmm_vg(alphas, means, icf, X, WISHART_GAMMA, WISHART_M)
    n, d = X.shape
    return value + gmm.constant(n, d, alphas.shape[0], WISHART_GAMMA, WISHART_M), grad


@_jit
def gp_vg(log_params, X, y):
    """The GP's negative log marginal likelihood and its gradient in the log parameters,
    (K^-1 - alpha alpha^T) : dK/dtheta / 2, with K^-1 from LAPACK's LU inverse (Numba has no Cholesky
    solve) and the kernel matrix and its derivatives in one pass over the pairs."""
    n = X.shape[0]
    ell, sf, sn = np.exp(log_params[0]), np.exp(log_params[1]), np.exp(log_params[2])
    signal, scaled = np.empty((n, n)), np.empty((n, n))  # sf^2 exp(-d2 / 2 ell^2), and times d2 / ell^2
    for i in range(n):
        for j in range(n):
            d2 = 0.0
            for t in range(X.shape[1]):
                gap = X[i, t] - X[j, t]
                d2 += gap * gap
            signal[i, j] = sf * sf * np.exp(-0.5 * d2 / (ell * ell))
            scaled[i, j] = signal[i, j] * d2 / (ell * ell)
    K = signal + (sn * sn + 1e-6) * np.eye(n)
    L = np.linalg.cholesky(K)
    inverse = np.linalg.inv(K)
    alpha = inverse @ y
    value = 0.5 * (y * alpha).sum() + np.log(np.diag(L)).sum() + 0.5 * n * np.log(2.0 * np.pi)
    grad = np.zeros(3)
    for i in range(n):
        for j in range(n):
            w = 0.5 * (inverse[i, j] - alpha[i] * alpha[j])
            grad[0] += w * scaled[i, j]  # dK / dlog ell
            grad[1] += 2.0 * w * signal[i, j]  # dK / dlog sf
        grad[2] += 0.5 * (inverse[i, i] - alpha[i] * alpha[i]) * 2.0 * sn * sn  # dK / dlog sn
    return value, grad


def mlp_params_vg(params, X, Y):
    """``mlp_vg`` on the workload's ``(params, X, Y)``."""
    return mlp_vg(*params, X, Y)


FUSED = {
    "rosenbrock": rosenbrock_vg,
    "logistic": logistic_vg,
    "lorenz": lorenz_vg,
    "lse": lse_vg,
    "softmax": softmax_vg,
    "xent": xent_vg,
    "kmeans": kmeans_vg,
    "mlp": mlp_params_vg,
    "ode": ode_vg,
    "gmm": gmm_params_vg,
    "gp": gp_vg,
}
