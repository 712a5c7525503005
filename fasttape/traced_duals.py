"""``fasttape.duals``' stack operations on traced matrices, so that the factorisations' rules record
themselves as primitives.

``families/factor_rules`` writes each factorisation's tangent and adjoint once, in the stack
arithmetic of ``fasttape.duals``, for the compiled kernels.  A derivative taken inside a traced
function (``fasttape.nesting``) needs the same rules as instructions on the enclosing tape, so that
an outer transformation can differentiate them again.  :func:`recording` runs the rule text of that
module with ``D`` bound to this module: every operation below is the plain matrix operation on
batched tracers (b, r, c), a leading axis of batch elements where the kernels have a stack's
slots, and each records ordinary primitives (matmul, trisolve, permute, elementwise), whose own
rules give every higher derivative.

Two readings differ from the kernels': the solves report success (a singular triangle raises
while tracing, as ``scipy.linalg.solve_triangular`` does), and the gap products multiply without
the kernels' exact-zero guard (an exactly repeated eigenvalue or a zero singular value gives
inf or NaN at second order).
"""

from __future__ import annotations

import functools
import sys
import types

import numpy as np

from . import numpy as fnp


def _triangle_mask(r, c, lower, diagonal):
    """The lower (or upper) triangle of an r x c matrix as 0/1 weights, its diagonal weighted ``diagonal``."""
    strict = np.tril(np.ones((r, c)), -1) if lower else np.triu(np.ones((r, c)), 1)
    return strict + diagonal * np.eye(r, c)


def const(A):
    return np.asarray(A, dtype=np.float64)[None]


def tr(A):
    return fnp.swapaxes(A, -1, -2)


def mm(A, B):
    return fnp.matmul(A, B)


def triangular_mm(T, B, lower, transposed):
    L = triangle(T, lower, 1.0)
    return mm(tr(L) if transposed else L, B)


def add(A, B, s):
    return A + s * B


def lower_part(A, diagonal):
    return A * _triangle_mask(A.shape[-2], A.shape[-1], True, diagonal)


def triangle(A, lower, diagonal):
    return A * _triangle_mask(A.shape[-2], A.shape[-1], lower, diagonal)


def solve_triangular(T, B, lower, transposed, unit):
    from .scipy_linalg import _solve_triangular

    return _solve_triangular(T, B, lower, transposed, unit, "scipy.linalg.solve_triangular"), True


def solve_triangular_right(T, B, lower, transposed, unit):
    X, ok = solve_triangular(T, tr(B), lower, not transposed, unit)  # X op(T) = B  ⇔  op(T)ᵀ Xᵀ = Bᵀ
    return tr(X), ok


def solve(A, B, transposed):
    return np.linalg.solve(tr(A) if transposed else A, B)


def inverse_gaps(w):
    """F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it, from w (b, 1, n) (the diagonal's denominators kept
    away from 0, so that no derivative of F meets 0/0)."""
    eye = np.eye(w.shape[-1]) == 1.0
    gaps = w - tr(w)
    return fnp.where(eye, 0.0, 1.0 / fnp.where(eye, 1.0, gaps))


def gap_product(F, C):
    return F * C


def diagonal_matrix(w):
    return w * np.eye(w.shape[-1])


def diagonal(P):
    """The diagonal of each matrix of P (b, k, k) as (b, 1, k)."""
    return fnp.sum(P * np.eye(P.shape[-1]), axis=-2, keepdims=True)


def squares(s):
    return s * s


def scaled(A, s, columns):
    return A * (s if columns else tr(s))


def over_columns(A, s):
    return A / s


def columns(A, start, stop):
    return A[..., start:stop]


def rows(A, start, stop):
    return A[..., start:stop, :]


def swapped(X, piv, inverse):
    from .scipy_linalg import _permuted

    return _permuted(piv, X, inverse)


@functools.cache
def recording(module: types.ModuleType) -> types.SimpleNamespace:
    """The functions of ``module`` (written with ``D`` for ``fasttape.duals``), each with ``D`` bound to
    this module: the same rule text, recording primitives on tracers."""
    namespace = dict(vars(module))
    namespace["D"] = sys.modules[__name__]
    functions = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__
    }
    for name, fn in functions.items():
        namespace[name] = types.FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
    return types.SimpleNamespace(**{name: namespace[name] for name in functions})
