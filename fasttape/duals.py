"""Matrix arithmetic on stacks, so that each matrix rule is written once for every sweep.

A *stack* is a float64 array (D, r, c): D matrices of the same shape.  Read as a dual, slot 0
is a value and slots 1.. are its tangents; a stack of depth 1 is a constant (its tangents are
zero).  Every operation below is the value's operation on slot 0 and its derivative on the
others (``mm``: d(AB) = dA B + A dB), so a reverse rule written with them, ``x̄ = R(x, y, ȳ)``,
gives in one evaluation

* the first-order rule, on stacks of depth 1;
* forward-over-reverse, on x, y, ȳ carrying k tangents: slot 0 is x̄ and slot d its tangent
  along direction d (ȳ's tangents are the second-order adjoints of the output);
* the k-seed reverse, on constant x and y and a stack of k cotangents ȳ: R is linear in ȳ,
  and with a constant operand each operation treats every slot alike (``mm(A, B)[j] = A[0]
  B[j]``), so slot j is R(x, y, ȳ_j).

Tangent rules use the last reading too: a stack of k directions through operations whose
other operands are constants.  The functions are ``register_jitable``: plain Python (NumPy and
the SciPy side of ``fasttape.lapack``) in the executor tier, compiled into the kernels of
``fasttape.families.factor``.  Two operands that both have tangents have the same depth.  In the
linear readings (tangent rules, the k-seed reverse) a constant may multiply a stack (``mm``, a
product) but never be added to one: ``add`` adds a constant to slot 0 only, as a dual's value.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from . import lapack


# Loops over flat runs rather than array expressions: the same work, and Numba compiles them in a
# fraction of the time (every kernel that uses a rule compiles it).
@register_jitable
def _axpy(dst, src, s):
    """dst += s src (contiguous arrays of one size)."""
    d = dst.reshape(-1)
    x = src.reshape(-1)
    for i in range(d.size):
        d[i] += s * x[i]


@register_jitable
def const(A):
    """A 2-D matrix as a constant stack (a copy)."""
    r, c = A.shape
    out = np.empty((1, r, c))
    for i in range(r):
        for j in range(c):
            out[0, i, j] = A[i, j]
    return out


@register_jitable
def tr(A):
    """Transpose of every slot (in 32 x 32 tiles, which stay in cache)."""
    D, r, c = A.shape
    out = np.empty((D, c, r))
    for d in range(D):
        for i0 in range(0, r, 32):
            for j0 in range(0, c, 32):
                for i in range(i0, min(i0 + 32, r)):
                    for j in range(j0, min(j0 + 32, c)):
                        out[d, j, i] = A[d, i, j]
    return out


@register_jitable
def mm(A, B):
    """Matrix product: A[0] B[0], then dA B + A dB."""
    D = max(A.shape[0], B.shape[0])
    out = np.empty((D, A.shape[1], B.shape[2]))
    np.dot(A[0], B[0], out[0])
    for d in range(1, D):
        if A.shape[0] > 1:
            np.dot(A[d], B[0], out[d])
            if B.shape[0] > 1:
                _axpy(out[d], np.dot(A[0], B[d]), 1.0)
        else:
            np.dot(A[0], B[d], out[d])
    return out


@register_jitable
def triangular_mm(T, B, lower, transposed):
    """op(T) B for the triangle of T (the other is taken as zeros), op(T) = T or Tᵀ: as ``mm``, by BLAS's
    triangular product."""
    D = max(T.shape[0], B.shape[0])
    out = np.empty((D, T.shape[2] if transposed else T.shape[1], B.shape[2]))
    out[0] = lapack.triangular_times(T[0], B[0], lower, transposed)
    for d in range(1, D):
        if T.shape[0] > 1:
            out[d] = lapack.triangular_times(T[d], B[0], lower, transposed)
            if B.shape[0] > 1:
                _axpy(out[d], lapack.triangular_times(T[0], B[d], lower, transposed), 1.0)
        else:
            out[d] = lapack.triangular_times(T[0], B[d], lower, transposed)
    return out


@register_jitable
def add(A, B, s):
    """A + s B (s a number); a constant operand adds to the value only."""
    D = max(A.shape[0], B.shape[0])
    out = np.zeros((D, A.shape[1], A.shape[2]))
    _axpy(out[: A.shape[0]], A, 1.0)
    _axpy(out[: B.shape[0]], B, s)
    return out


@register_jitable
def lower_part(A, diagonal):
    """The lower triangle of every slot, its diagonal scaled by ``diagonal`` (0, ½ or 1)."""
    D, r, c = A.shape
    out = np.zeros((D, r, c))
    for d in range(D):
        for i in range(r):
            for j in range(min(i, c)):
                out[d, i, j] = A[d, i, j]
            if i < c:
                out[d, i, i] = diagonal * A[d, i, i]
    return out


@register_jitable
def triangle(A, lower, diagonal):
    """The lower (or upper) triangle of every slot, its diagonal scaled by ``diagonal``."""
    if lower:
        return lower_part(A, diagonal)
    return tr(lower_part(tr(A), diagonal))


@register_jitable
def _unit_value(T, unit):
    """T's value (a view), or a copy with its diagonal set to ones with ``unit``."""
    if not unit:
        return T[0]
    T0 = T[0].copy()
    for i in range(T0.shape[0]):
        T0[i, i] = 1.0
    return T0


@register_jitable
def _solve_one(T0, B0, lower, transposed, right):
    if right:
        return lapack.solve_triangular_right(T0, B0, lower, transposed)
    return lapack.solve_triangular(T0, B0, lower, transposed)


@register_jitable
def _solve(T, B, lower, transposed, unit, right):
    """(X, ok): op(T) X = B, or X op(T) = B with ``right``; dX = op(T)⁻¹ (dB - op(dT) X), or
    (dB - X op(dT)) op(T)⁻¹."""
    D = max(T.shape[0], B.shape[0])
    T0 = _unit_value(T, unit)
    R = np.zeros((D, B.shape[1], B.shape[2]))
    _axpy(R[: B.shape[0]], B, 1.0)
    X0, ok = _solve_one(T0, R[0], lower, transposed, right)
    R[0] = X0
    if T.shape[0] > 1:  # the tangents need the value
        dT = triangle(T[1:], lower, 0.0 if unit else 1.0)
        if transposed:
            dT = tr(dT)
        for d in range(1, D):
            _axpy(R[d], np.dot(X0, dT[d - 1]) if right else np.dot(dT[d - 1], X0), -1.0)
    for d in range(1, D):
        R[d] = _solve_one(T0, R[d], lower, transposed, right)[0]
    return R, ok


@register_jitable
def solve_triangular(T, B, lower, transposed, unit):
    """(X, ok): op(T) X = B for the triangle of T (its diagonal taken as ones when ``unit``), op(T) = T
    or Tᵀ.  ok is False where T[0] has a zero on its diagonal."""
    return _solve(T, B, lower, transposed, unit, False)


@register_jitable
def solve_triangular_right(T, B, lower, transposed, unit):
    """(X, ok): X op(T) = B."""
    return _solve(T, B, lower, transposed, unit, True)


@register_jitable
def swap_rows(X, piv, inverse):
    """LAPACK's row interchanges on the matrix X, in place: row i with row piv[i] in order (Pᵀ X, for
    A = P L U), or in reverse order (P X)."""
    n = piv.shape[0]
    for step in range(n):
        i = n - 1 - step if inverse else step
        p = int(piv[i])
        if p != i:
            for j in range(X.shape[1]):
                X[i, j], X[p, j] = X[p, j], X[i, j]


@register_jitable
def _lu_solve_one(L, U, piv, B0, transposed):
    """(X, ok): op(P L U) X = B0 by the factors (L with its unit diagonal set, U upper); ok is False where
    U has an exact zero on its diagonal."""
    if transposed:  # Uᵀ Lᵀ Pᵀ X = B
        Y, ok = lapack.solve_triangular(U, B0, False, True)
        Y = lapack.solve_triangular(L, Y, True, True)[0]
        swap_rows(Y, piv, True)
        return Y, ok
    Y = B0.copy()
    swap_rows(Y, piv, False)
    Y = lapack.solve_triangular(L, Y, True, False)[0]
    return lapack.solve_triangular(U, Y, False, False)


@register_jitable
def solve(A, B, transposed):
    """op(A) X = B for a square A, by the LU factors (partial pivoting) of its value, op(A) = A or Aᵀ;
    dX = op(A)⁻¹ (dB - op(dA) X).  A singular value (an exact zero on U's diagonal) gives NaN."""
    LU, piv = lapack.lu(A[0])
    L = LU.copy()
    for i in range(L.shape[0]):
        L[i, i] = 1.0
    D = max(A.shape[0], B.shape[0])
    R = np.zeros((D, B.shape[1], B.shape[2]))
    _axpy(R[: B.shape[0]], B, 1.0)
    X0, ok = _lu_solve_one(L, LU, piv, R[0], transposed)
    if not ok:
        R[:, :, :] = np.nan
        return R
    R[0] = X0
    if A.shape[0] > 1:  # the tangents need the value
        dA = tr(A[1:]) if transposed else A[1:]
        for d in range(1, D):
            _axpy(R[d], np.dot(dA[d - 1], X0), -1.0)
    for d in range(1, D):
        R[d] = _lu_solve_one(L, LU, piv, R[d], transposed)[0]
    return R


# --------------------------------------------------------------------------
# the factorisations' elementwise pieces (fasttape.families.factor_rules)
# --------------------------------------------------------------------------
@register_jitable
def inverse_gaps(w):
    """F with F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it, from a stack w (D, 1, n); its tangent
    is -(dw_j - dw_i) F_ij²."""
    D_, n = w.shape[0], w.shape[2]
    F = np.zeros((D_, n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                F[0, i, j] = 1.0 / (w[0, 0, j] - w[0, 0, i])
                for d in range(1, D_):
                    F[d, i, j] = -(w[d, 0, j] - w[d, 0, i]) * F[0, i, j] * F[0, i, j]
    return F


@register_jitable
def gap_product(F, C):
    """F ∘ C on duals, an exact zero of C giving zero even where F is infinite (equal eigenvalues): as
    JAX's symbolic zeros, so the eigenvalues alone (``eigvalsh``) keep finite derivatives there."""
    D_ = max(F.shape[0], C.shape[0])
    out = np.zeros((D_, F.shape[1], F.shape[2]))
    for i in range(F.shape[1]):
        for j in range(F.shape[2]):
            if C[0, i, j] != 0.0:
                out[0, i, j] = F[0, i, j] * C[0, i, j]
            for d in range(1, D_):
                s = 0.0
                if F.shape[0] > 1 and C[0, i, j] != 0.0:
                    s += F[d, i, j] * C[0, i, j]
                if C.shape[0] > 1 and C[d, i, j] != 0.0:
                    s += F[0, i, j] * C[d, i, j]
                out[d, i, j] = s
    return out


@register_jitable
def diagonal_matrix(w):
    """diag(w) on every slot of a stack w (D, 1, n)."""
    D_, n = w.shape[0], w.shape[2]
    out = np.zeros((D_, n, n))
    for d in range(D_):
        for i in range(n):
            out[d, i, i] = w[d, 0, i]
    return out


@register_jitable
def diagonal(P):
    """The diagonal of every slot of P (D, k, k), as a stack (D, 1, k)."""
    out = np.empty((P.shape[0], 1, P.shape[1]))
    for d in range(P.shape[0]):
        for i in range(P.shape[1]):
            out[d, 0, i] = P[d, i, i]
    return out


@register_jitable
def squares(s):
    # d s² = 2 s ds
    out = np.empty(s.shape)
    for i in range(s.shape[2]):
        out[0, 0, i] = s[0, 0, i] * s[0, 0, i]
        for d in range(1, s.shape[0]):
            out[d, 0, i] = 2.0 * s[0, 0, i] * s[d, 0, i]
    return out


@register_jitable
def scaled(A, s, columns):
    """A diag(s) (``columns``) or diag(s) A, s a stack (D, 1, k): d(A S) = dA S + A dS."""
    D_ = max(A.shape[0], s.shape[0])
    out = np.zeros((D_, A.shape[1], A.shape[2]))
    for i in range(A.shape[1]):
        for j in range(A.shape[2]):
            f = s[0, 0, j] if columns else s[0, 0, i]
            out[0, i, j] = A[0, i, j] * f
            for d in range(1, D_):
                if A.shape[0] > 1:
                    out[d, i, j] += A[d, i, j] * f
                if s.shape[0] > 1:
                    out[d, i, j] += A[0, i, j] * (s[d, 0, j] if columns else s[d, 0, i])
    return out


@register_jitable
def over_columns(A, s):
    """A diag(s)⁻¹, an exact zero of A giving zero even where s is zero (as JAX's symbolic zeros: the
    singular values alone keep finite derivatives for a rank-deficient A).  d(a/s) = da/s - a ds/s²."""
    D_ = max(A.shape[0], s.shape[0])
    out = np.zeros((D_, A.shape[1], A.shape[2]))
    for i in range(A.shape[1]):
        for j in range(A.shape[2]):
            r = 1.0 / s[0, 0, j]
            if A[0, i, j] != 0.0:
                out[0, i, j] = A[0, i, j] * r
            for d in range(1, D_):
                v = 0.0
                if A.shape[0] > 1 and A[d, i, j] != 0.0:
                    v += A[d, i, j] * r
                if s.shape[0] > 1 and A[0, i, j] != 0.0:
                    v -= A[0, i, j] * s[d, 0, j] * r * r
                out[d, i, j] = v
    return out


@register_jitable
def columns(A, start, stop):
    return np.ascontiguousarray(A[:, :, start:stop])


@register_jitable
def rows(A, start, stop):
    return np.ascontiguousarray(A[:, start:stop, :])


@register_jitable
def swapped(X, piv, inverse):
    """LAPACK's row interchanges on every slot of X: Pᵀ X, or P X with ``inverse`` (``duals.swap_rows``)."""
    out = X.copy()
    for d in range(out.shape[0]):
        swap_rows(out[d], piv, inverse)
    return out
