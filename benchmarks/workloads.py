"""Benchmark workloads, written once as plain NumPy-style code.

The same source feeds every column of a benchmark: NumPy runs it on arrays,
fasttape traces it (plain ``np`` calls reach fasttape through NumPy's dispatch
protocols), and JAX runs it with ``xp=jax.numpy``.
"""

import math

import numpy as np

from fasttape.gradbench.evals import kmeans as gradbench_kmeans
from fasttape.gradbench.evals import ode as gradbench_ode
from fasttape.gradbench.evals.gmm import log_posterior, logsumexp

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


# --------------------------------------------------------------------------
# Logistic regression: mean log-loss of a linear classifier, labels in {-1, +1}
# --------------------------------------------------------------------------
LOGISTIC_SIZES = ((100, 10), (10_000, 100))  # samples m x features d


def make_logistic_loss(xp=np):
    """``loss(w, X, y) = mean(log(1 + exp(-y * (X @ w))))``; differentiated in w."""

    def logistic_loss(w, X, y):
        return xp.mean(xp.logaddexp(0.0, -y * (X @ w)))

    return logistic_loss


logistic_loss = make_logistic_loss(np)


def logistic_input(m, d, seed=0):
    """``(w, X, y)``: Gaussian features, labels from a noisy linear rule, weights of order one."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    truth = rng.standard_normal(d)
    y = np.where(X @ truth + 0.5 * rng.standard_normal(m) > 0.0, 1.0, -1.0)
    return 0.3 * rng.standard_normal(d), X, y


# --------------------------------------------------------------------------
# Softmax cross-entropy of a linear classifier, one-hot targets
# --------------------------------------------------------------------------
SOFTMAX_SIZES = ((128, 32, 10), (2048, 128, 100))  # batch x features x classes


def make_softmax_loss(xp=np):
    """``loss(W, X, Y)``: mean over the batch of ``logsumexp(X @ W) - <Y, X @ W>`` (Y one-hot)."""

    def softmax_loss(W, X, Y):
        logits = X @ W
        return xp.mean(logsumexp(logits, 1, xp) - xp.sum(Y * logits, axis=1))

    return softmax_loss


softmax_loss = make_softmax_loss(np)


def softmax_input(batch, features, classes, seed=0):
    """``(W, X, Y)``: small Gaussian weights, Gaussian inputs, one-hot random labels."""
    rng = np.random.default_rng(seed)
    Y = np.eye(classes)[rng.integers(0, classes, batch)]
    return rng.standard_normal((features, classes)) / np.sqrt(features), rng.standard_normal((batch, features)), Y


# --------------------------------------------------------------------------
# The same classifier with integer labels, picked by index (data of the tape: a new minibatch of
# labels replays it), and k-means' objective (each point's nearest centre, picked by argmin)
# --------------------------------------------------------------------------
XENT_SIZES = ((128, 32, 10), (2048, 128, 100))  # batch x features x classes
KMEANS_SIZES = ((1000, 2, 5), (10_000, 8, 32))  # points n x dimension d x centres k


def make_xent_loss(xp=np):
    """``loss(W, X, labels)``: mean of ``logsumexp(z) - z[label]`` over the batch, z = X @ W."""

    def xent_loss(W, X, labels):
        logits = X @ W
        return xp.mean(logsumexp(logits, 1, xp) - logits[xp.arange(labels.shape[0]), labels])

    return xent_loss


def xent_input(batch, features, classes, seed=0):
    """``(W, X, labels)``: small Gaussian weights, Gaussian inputs, integer labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, batch)
    return rng.standard_normal((features, classes)) / np.sqrt(features), rng.standard_normal((batch, features)), labels


def make_kmeans(xp=np):
    """``objective(C, X)``: the squared distance of every point to its nearest centre, summed (GradBench's
    kmeans objective, the GradBench tool's own: ``fasttape.gradbench.evals.kmeans``)."""

    def kmeans(C, X):
        return gradbench_kmeans.cost(C, X, xp)

    return kmeans


def kmeans_input(n, d, k, seed=0):
    """``(C, X)``: k centres drawn among n Gaussian points."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X[rng.choice(n, k, replace=False)] + 0.01 * rng.standard_normal((k, d)), X


# --------------------------------------------------------------------------
# The ADBench / GradBench Gaussian mixture model objective
# --------------------------------------------------------------------------
GMM_N = 1000
GMM_SIZES = ((2, 5), (10, 25))  # dimension d x components K
WISHART_GAMMA, WISHART_M = 1.0, 0


def make_gmm_objective(xp=np, gamma=WISHART_GAMMA, m=WISHART_M):
    """``objective(params, X)`` with ``params = (alphas[K], means[K, d], icf[K, d(d+1)/2])``: GradBench's GMM
    log-posterior (the GradBench tool's own, ``fasttape.gradbench.evals.gmm.log_posterior``), the inverse
    Cholesky factors' log-diagonal ``icf[:, :d]`` and strict lower part ``icf[:, d:]`` in one array."""

    def gmm_objective(params, X):
        alphas, means, icf = params
        d = X.shape[1]
        return log_posterior(alphas, means, icf[:, :d], icf[:, d:], X, gamma, m, xp)

    return gmm_objective


gmm_objective = make_gmm_objective(np)


def gmm_input(d, k, n=GMM_N, seed=0):
    """``(params, X)``: points and means uniform in [0, 1)^d, log-weights and factors Gaussian (as the
    ADBench data generator draws them, with its own random numbers)."""
    rng = np.random.default_rng(seed)
    alphas = rng.standard_normal(k)
    means = rng.random((k, d))
    icf = 0.5 * rng.standard_normal((k, d * (d + 1) // 2))
    return (alphas, means, icf), rng.random((n, d))


# --------------------------------------------------------------------------
# A Gaussian process's negative log marginal likelihood, by its Cholesky factor
# --------------------------------------------------------------------------
GP_SIZES = (100, 1000)  # points n (in the plane)


def make_gp_nll(xp=np):
    """``nll(log_params, X, y)``: a squared-exponential kernel with length scale, signal and noise
    (``exp(log_params)``), factored by Cholesky and solved with ``cho_solve`` (SciPy's for NumPy,
    jax.scipy's for JAX), as a user writes it."""
    if xp is np:
        import scipy.linalg as sla
    else:
        import jax.scipy.linalg as sla

    def gp_nll(log_params, X, y):
        ell, sf, sn = xp.exp(log_params[0]), xp.exp(log_params[1]), xp.exp(log_params[2])
        d2 = xp.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
        K = sf**2 * xp.exp(-0.5 * d2 / ell**2) + (sn**2 + 1e-6) * xp.eye(len(y))
        L = xp.linalg.cholesky(K)
        alpha = sla.cho_solve((L, True), y)
        return 0.5 * y @ alpha + xp.sum(xp.log(xp.diag(L))) + 0.5 * len(y) * math.log(2.0 * math.pi)

    return gp_nll


def gp_input(n, seed=0):
    """``(log_params, X, y)``: points uniform in [-3, 3)², a smooth signal plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1]) + 0.1 * rng.standard_normal(n)
    return np.array([0.0, 0.0, math.log(0.1)]), X, y


# --------------------------------------------------------------------------
# GradBench's lse and ode objectives
# --------------------------------------------------------------------------
LSE_SIZES = (10_000, 1_280_000)  # GradBench's lse runs n = 2 500 ... 1 280 000
# unknowns n x Runge-Kutta steps s.  GradBench runs n = 1e3 ... 1e5 with s <= 100, where the last component
# is exactly zero (s steps reach y_i for i < 4 s only): the second size is such a run (gradient zero, cost
# the same); at n = 100 it is not (about 1e-128)
ODE_SIZES = ((100, 100), (10_000, 100))
ODE_END = gradbench_ode.END  # integrated over [0, 2]


def make_lse(xp=np):
    """GradBench's lse: a stable logsumexp of one long vector."""

    def lse(x):
        top = xp.max(x)
        return xp.log(xp.sum(xp.exp(x - top))) + top

    return lse


def lse_input(n, seed=31337):
    return (np.random.default_rng(seed).random(n),)


def make_ode(xp=np):
    """GradBench's ode objective (the GradBench tool's: ``fasttape.gradbench.evals.ode``): ``ode(x, ticks)``
    integrates y' = f(x, y) from y = 0 over [0, 2] by ``len(ticks)`` classical Runge-Kutta steps (a Python
    loop: its count is a shape, static for every tool) and returns the last component (whose gradient the
    eval asks for)."""

    def ode(x, ticks):
        return gradbench_ode.solve(x, ticks.shape[0], xp)[-1]

    return ode


def make_ode_scan():
    """``make_ode(jax.numpy)`` with the steps as ``jax.lax.fori_loop`` (as GradBench's JAX tool writes it:
    XLA took minutes to compile the unrolled Python loop at n = 10 000)."""
    import jax.numpy as jnp
    from jax import lax

    def ode(x, ticks):
        h = ODE_END / ticks.shape[0]

        def step(_, y):
            return gradbench_ode.rk4_step(x, y, h, jnp)

        return lax.fori_loop(0, ticks.shape[0], step, jnp.zeros(x.shape[0]))[-1]

    return ode


def ode_input(n, steps, seed=31337):
    """``(x, ticks)``: x uniform in [0, 1) as GradBench draws it; ``ticks`` only carries the step count."""
    return np.random.default_rng(seed).random(n), np.zeros(steps)


def pendulum(theta, xp=np, steps=5000):
    """A Python loop of scalar Euler steps of a pendulum (``sin`` and four arithmetic rows a step)."""
    a, w = theta[0], theta[1]
    for _ in range(steps):
        w = w - 0.01 * 9.81 * xp.sin(a)
        a = a + 0.01 * w
    return a * a + w


def laplace_det(A, xp=np):
    """The determinant by expansion along the first row, as GradBench's ``det`` computes it: a deep
    recursion of element reads, products and sums (``xp`` unused: indexing and arithmetic only)."""

    def minor(rows, cols):
        if len(rows) == 1:
            return A[rows[0], cols[0]]
        total = 0.0
        for k, c in enumerate(cols):
            term = A[rows[0], c] * minor(rows[1:], cols[:k] + cols[k + 1 :])
            total = total + term if k % 2 == 0 else total - term
        return total

    return minor(list(range(A.shape[0])), list(range(A.shape[1])))
