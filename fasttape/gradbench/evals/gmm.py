"""GradBench's ``gmm``: the log-posterior of a Gaussian mixture's parameters given n points (``objective``)
and its gradient in every parameter (``jacobian``: a dict ``alpha``, ``mu``, ``q``, ``l``).

Component k has weight softmax(α)_k, mean μ_k and inverse covariance Q_kᵀQ_k, with Q_k lower triangular:
diagonal exp(q_k), strict lower part l_k filled column by column.  The prior is a Wishart with scale I/γ²
and m extra degrees of freedom (GradBench's definition, ``cpp/gradbench/evals/gmm.hpp``)."""

import math

import numpy as np

import fasttape as ft

from .inputs import count, number, shaped
from .replay import replayed


def triangle_index(d):
    """Where each entry of a d x d lower-triangular factor comes from in the row
    ``[exp(q_1..q_d), l_1..l_{d(d-1)/2}, 0]``: the diagonal from the exponentiated log-diagonal, the
    strictly lower part from ``l`` filled column by column, everything above the diagonal from the 0."""
    zero = d + d * (d - 1) // 2
    index = np.full((d, d), zero)
    position = d
    for col in range(d):
        index[col, col] = col
        for row in range(col + 1, d):
            index[row, col] = position
            position += 1
    return index.ravel()


def logsumexp(x, axis, xp=np):
    top = xp.max(x, axis=axis, keepdims=True)
    return xp.log(xp.sum(xp.exp(x - top), axis=axis)) + xp.squeeze(top, axis=axis)


def constant(n, d, k, gamma, m):
    """The log-posterior's parameter-free terms: the n points' Gaussian normalisation −n d/2 log 2π, and K times
    the log of the Wishart density's normalising constant, n' d log(γ/√2) − log Γ_d(n'/2) with n' = d + m + 1
    degrees of freedom."""
    dof = d + m + 1
    log_multigamma = 0.25 * d * (d - 1) * math.log(math.pi)
    log_multigamma += sum(math.lgamma(0.5 * dof - 0.5 * j) for j in range(d))
    wishart = dof * d * (math.log(gamma) - 0.5 * math.log(2.0)) - log_multigamma
    return -0.5 * n * d * math.log(2.0 * math.pi) + k * wishart


def log_posterior(alpha, mu, q, l, X, gamma, m, xp=np):
    """Σ_i logsumexp_k(α_k + Σ_j q_kj − ½‖Q_k (x_i − μ_k)‖²) − n logsumexp(α), plus the Wishart log-prior
    Σ_k (m Σ_j q_kj − γ²/2 ‖Q_k‖²_F), plus ``constant``.  Q_k is built by one gather."""
    n, d = X.shape
    k = alpha.shape[0]
    row = xp.concatenate([xp.exp(q), l, xp.zeros((k, 1))], axis=1)
    Q = xp.reshape(row[:, triangle_index(d)], (k, d, d))
    centred = X.T[None, :, :] - mu[:, :, None]  # k x d x n
    mahalanobis = xp.sum((Q @ centred) ** 2, axis=1)  # k x n
    sum_q = xp.sum(q, axis=1)
    inner = (alpha + sum_q)[:, None] - 0.5 * mahalanobis
    likelihood = xp.sum(logsumexp(inner, 0, xp)) - n * logsumexp(alpha, 0, xp)
    frobenius = xp.sum(xp.exp(2.0 * q)) + xp.sum(l**2)
    prior = m * xp.sum(sum_q) - 0.5 * gamma**2 * frobenius
    return likelihood + prior + constant(n, d, k, gamma, m)


PARAMETERS = ("alpha", "mu", "q", "l")
_gradient = ft.grad(log_posterior, argnums=(0, 1, 2, 3), static_argnums=(5,))  # γ: a constant of the tape


def _arrays(data):
    d, k, n = count(data, "d"), count(data, "k"), count(data, "n")
    shapes = {"alpha": (k,), "mu": (k, d), "q": (k, d), "l": (k, d * (d - 1) // 2), "x": (n, d)}
    context = f" (d={d}, k={k}, n={n})"
    # (d = 1: l is k empty lists)
    values = {
        name: shaped(data, name, shape, context) if shape[-1] else np.zeros(shape) for name, shape in shapes.items()
    }
    gamma, m = number(data, "gamma"), count(data, "m", least=0)
    if not gamma > 0:
        raise ValueError(f"field 'gamma' should be a positive number, got {gamma!r}")
    return (*(values[name] for name in PARAMETERS), values["x"], gamma, m)


def _objective(data):
    return replayed(log_posterior, *_arrays(data), static_argnums=(5,))


def _jacobian(data):
    args = _arrays(data)

    def run():
        return dict(zip(PARAMETERS, _gradient(*args), strict=True))

    return run


FUNCTIONS = {"objective": _objective, "jacobian": _jacobian}
