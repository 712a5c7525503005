"""The linalg family: linear solves and log-determinants of batched square matrices.

``solve``: X = A⁻¹ B for A (batch, n, n), B (batch, n, m).  ``slogdet``: for each A of the
batch the pair (sign, log |det A|), an output of shape (batch, 2); the sign's derivative is 0.
NumPy's ``inv``, ``det`` and ``slogdet`` lower onto these (``fasttape.linalg``).

The forward sweep LU-factors each A once (LAPACK's ``getrf``, ``fasttape.lapack``) into the
instruction's side store: the factors, then the pivots.  Every other sweep of the same call
solves against those factors (``getrs``), never forming an inverse except where a rule's
result is one (d log|det A| = A⁻ᵀ).  The buffer is row-major, LAPACK column-major: the
side store holds the factors of Aᵀ, which solve A Y = R as Aᵀ's transposed system.

A matrix that is exactly singular (a zero pivot) raises ``numpy.linalg.LinAlgError`` naming the
function and the batch element, from ``solve`` in every sweep and from ``slogdet``'s
derivatives; ``slogdet``'s value is then NumPy's (0, -inf).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from ..jit import jit
from ..lapack import getrf, getrs
from ..layout import (
    C_A,
    C_B,
    C_FLAGS,
    C_N,
    C_NA,
    C_NB,
    C_OP,
    C_OUT,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    linear_planes,
    param_columns,
)
from ..loops import zero_first_writes
from ..primitives import opcode

KINDS = ("solve", "slogdet")
PARAMS = ("batch", "n", "m", "side")
P_BATCH, P_N, P_M, P_SIDE = param_columns(PARAMS)
OP_SOLVE = opcode("solve")
OP_SLOGDET = opcode("slogdet")
LinAlgError = np.linalg.LinAlgError


# --------------------------------------------------------------------------
# compiled helpers: factors in the side store, solves against them
# --------------------------------------------------------------------------
@jit
def _factor(buf, a, lu, n):
    """LU-factor the n x n matrix at ``a`` into the side store at ``lu`` (factors, then n pivots
    as floats); return whether a pivot is exactly zero."""
    buf[lu : lu + n * n] = buf[a : a + n * n]
    piv = np.empty(n, dtype=np.int32)
    info = getrf(buf[lu : lu + n * n], piv, n)
    for j in range(n):
        buf[lu + n * n + j] = piv[j]
    return info > 0


@jit
def _pivots(buf, lu, n):
    piv = np.empty(n, dtype=np.int32)
    for j in range(n):
        piv[j] = np.int32(buf[lu + n * n + j])
    return piv


@jit
def _singular(buf, lu, n):
    for j in range(n):
        if buf[lu + j * n + j] == 0.0:
            return True
    return False


@jit
def _solve(buf, lu, n, R, m, transposed):
    """Y with A Y = R (or Aᵀ Y = R with ``transposed``): R and Y flat row-major n x m arrays, A the
    matrix whose factors are at ``lu``; R is overwritten with Y."""
    piv = _pivots(buf, lu, n)
    factors = buf[lu : lu + n * n]
    if m == 1:  # a vector is the same run in either order
        getrs(factors, piv, R, n, 1, not transposed)
        return
    columns = np.ascontiguousarray(R.reshape(n, m).T).reshape(-1)  # column-major n x m
    getrs(factors, piv, columns, n, m, not transposed)
    R.reshape(n, m)[:, :] = columns.reshape(m, n).T


@jit
def _raise_singular(name, t):
    raise LinAlgError("numpy.linalg." + name + ": singular matrix (batch element " + str(t) + ")")


@jit
def _fields(ins, i):
    """A row: (output, A, B, batch, n, m, side, flags, A takes adjoints, B takes adjoints)."""
    flags = ins[i, C_FLAGS]
    return (ins[i, C_OUT], ins[i, C_A], ins[i, C_B], ins[i, P_BATCH], ins[i, P_N], ins[i, P_M], ins[i, P_SIDE],
            flags, (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0)  # fmt: skip


@jit
def _inverse_transpose(buf, lu, n):
    """A⁻ᵀ (flat row-major) from the factors at ``lu``: Aᵀ W = I."""
    W = np.zeros(n * n)
    for j in range(n):
        W[j * n + j] = 1.0
    _solve(buf, lu, n, W, n, True)
    return W


@jit
def _sub_product_t(dst, P, Q, n, m, p):
    """dst (n x p) -= P (n x m) Qᵀ (Q: p x m), flat row-major."""
    dst.reshape(n, p)[:, :] -= np.dot(P.reshape(n, m), Q.reshape(p, m).T)


# --------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------
@jit
def forward(ins, i, aux, buf):
    o, a, b, batch, n, m, side, _, _, _ = _fields(ins, i)
    for t in range(batch):
        lu = side + t * (n * n + n)
        singular = _factor(buf, a + t * n * n, lu, n)
        if ins[i, C_OP] == OP_SOLVE:
            if singular:
                _raise_singular("solve", t)
            X = buf[o + t * n * m : o + (t + 1) * n * m]
            X[:] = buf[b + t * n * m : b + (t + 1) * n * m]
            _solve(buf, lu, n, X, m, False)
        else:  # (sign, log|det|) from the diagonal of U and the row swaps
            sign, logabs = 1.0, 0.0
            for j in range(n):
                u = buf[lu + j * n + j]
                if u < 0.0:
                    sign = -sign
                elif u != u:
                    sign = u
                if int(buf[lu + n * n + j]) != j + 1:
                    sign = -sign
                logabs += np.log(np.abs(u))
            if singular:
                sign, logabs = 0.0, -np.inf
            buf[o + 2 * t] = sign
            buf[o + 2 * t + 1] = logabs


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    o, a, b, batch, n, m, side, flags, ga, gb = _fields(ins, i)
    for t in range(batch):
        lu = side + t * (n * n + n)
        A0 = a + t * n * n
        if ins[i, C_OP] == OP_SOLVE:
            # d(A⁻¹ B) = A⁻¹ (dB - dA X)
            B0, X0 = b + t * n * m, o + t * n * m
            X = buf[X0 : X0 + n * m]
            for d in range(k):
                T = tan[d * NV : (d + 1) * NV]
                R = T[B0 : B0 + n * m].copy() if gb else np.zeros(n * m)
                if ga:
                    R.reshape(n, m)[:, :] -= np.dot(T[A0 : A0 + n * n].reshape(n, n), X.reshape(n, m))
                _solve(buf, lu, n, R, m, False)
                T[X0 : X0 + n * m] = R
        else:
            if _singular(buf, lu, n):
                _raise_singular("slogdet", t)
            # d log|det A| = tr(A⁻¹ dA) = <A⁻ᵀ, dA>; the sign is piecewise constant
            W = _inverse_transpose(buf, lu, n)
            for d in range(k):
                T = tan[d * NV : (d + 1) * NV]
                s = 0.0
                for j in range(n * n):
                    s += W[j] * T[A0 + j]
                T[o + 2 * t] = 0.0
                T[o + 2 * t + 1] = s


@jit
def _solve_adjoints(buf, lu, n, m, X, G, A_bar, B_bar, ga, gb):
    """The first-order rule on one cotangent plane: B̄ += A⁻ᵀ G, Ā -= (A⁻ᵀ G) Xᵀ; returns A⁻ᵀ G."""
    Y = G.copy()
    _solve(buf, lu, n, Y, m, True)
    if gb:
        B_bar += Y
    if ga:
        _sub_product_t(A_bar, Y, X, n, m, n)
    return Y


@jit
def reverse(ins, i, aux, buf, N):
    o, a, b, batch, n, m, side, flags, ga, gb = _fields(ins, i)
    if flags & F_INIT_A and ga:
        buf[N + a : N + a + batch * n * n] = 0.0
    if flags & F_INIT_B and gb and ins[i, C_OP] == OP_SOLVE:
        buf[N + b : N + b + batch * n * m] = 0.0
    for t in range(batch):
        lu = side + t * (n * n + n)
        A0 = a + t * n * n
        if ins[i, C_OP] == OP_SOLVE:
            # X = A⁻¹ B:  B̄ = A⁻ᵀ X̄,  Ā = -B̄ Xᵀ
            B0, X0 = b + t * n * m, o + t * n * m
            _solve_adjoints(buf, lu, n, m, buf[X0 : X0 + n * m], buf[N + X0 : N + X0 + n * m],
                            buf[N + A0 : N + A0 + n * n], buf[N + B0 : N + B0 + n * m], ga, gb)  # fmt: skip
        else:
            if _singular(buf, lu, n):
                _raise_singular("slogdet", t)
            # d log|det A| / dA = A⁻ᵀ
            g = buf[N + o + 2 * t + 1]
            buf[N + A0 : N + A0 + n * n] += g * _inverse_transpose(buf, lu, n)


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    o, a, b, batch, n, m, side, flags, ga, gb = _fields(ins, i)
    flat = second and (flags & F_CONST_ADJOINT) != 0  # the output adjoint's tangent is a structural zero
    for t in range(batch):
        lu = side + t * (n * n + n)
        A0 = a + t * n * n
        if ins[i, C_OP] == OP_SOLVE:
            B0, X0 = b + t * n * m, o + t * n * m
            X = buf[X0 : X0 + n * m]
            Y = np.zeros(0)
            if second:  # the first-order adjoints too; B̄ = A⁻ᵀ X̄ is reused below
                Y = _solve_adjoints(buf, lu, n, m, X, buf[N + X0 : N + X0 + n * m],
                                    buf[N + A0 : N + A0 + n * n], buf[N + B0 : N + B0 + n * m], ga, gb)  # fmt: skip
            for d in range(k):
                P = adj2[d * N : (d + 1) * N]
                if not second:  # the k-seed reverse: the first-order rule on each plane
                    _solve_adjoints(buf, lu, n, m, X, P[X0 : X0 + n * m], P[A0 : A0 + n * n],
                                    P[B0 : B0 + n * m], ga, gb)  # fmt: skip
                    continue
                # B̄' = A⁻ᵀ (X̄' - dAᵀ B̄),  Ā' = -(B̄' Xᵀ + B̄ dXᵀ)
                T = tan[d * N : (d + 1) * N]
                R = np.zeros(n * m) if flat else P[X0 : X0 + n * m].copy()
                if ga:
                    R.reshape(n, m)[:, :] -= np.dot(T[A0 : A0 + n * n].reshape(n, n).T, Y.reshape(n, m))
                _solve(buf, lu, n, R, m, True)
                if gb:
                    P[B0 : B0 + n * m] += R
                if ga:
                    _sub_product_t(P[A0 : A0 + n * n], R, X, n, m, n)
                    _sub_product_t(P[A0 : A0 + n * n], Y, T[X0 : X0 + n * m], n, m, n)
        else:
            if _singular(buf, lu, n):
                _raise_singular("slogdet", t)
            W = _inverse_transpose(buf, lu, n)
            g = buf[N + o + 2 * t + 1]
            if second:
                buf[N + A0 : N + A0 + n * n] += g * W
            for d in range(k):
                P = adj2[d * N : (d + 1) * N]
                if not flat:
                    P[A0 : A0 + n * n] += P[o + 2 * t + 1] * W
                if second:  # d(g A⁻ᵀ) = g' A⁻ᵀ - g A⁻ᵀ dAᵀ A⁻ᵀ
                    dA = tan[d * N + A0 : d * N + A0 + n * n].reshape(n, n)
                    Wm = W.reshape(n, n)
                    P[A0 : A0 + n * n] -= g * np.dot(np.dot(Wm, dA.T), Wm).reshape(-1)


# --------------------------------------------------------------------------
# NumPy rules (the executor tier): the same factors, through SciPy
# --------------------------------------------------------------------------
def _row_fields(row):
    return row[C_OUT], row[C_A], row[C_B], row[P_BATCH], row[P_N], row[P_M], row[P_SIDE], row[C_FLAGS]


def _factors(buf, side, t, n):
    """The side store's factors of batch element t as SciPy's (lu, piv) of Aᵀ."""
    lu = side + t * (n * n + n)
    return buf[lu : lu + n * n].reshape(n, n).T, buf[lu + n * n : lu + n * n + n].astype(np.int64) - 1


def _lu_solve(factors, R, transposed):
    """A⁻¹ R (or A⁻ᵀ R): the factors are Aᵀ's, so A's system is their transposed one."""
    return scipy.linalg.lu_solve(factors, R, trans=0 if transposed else 1, check_finite=False)


def _check_singular(name, factors, t):
    if np.any(np.diagonal(factors[0]) == 0.0):
        raise LinAlgError(f"numpy.linalg.{name}: singular matrix (batch element {t})")


def numpy_forward(row, aux, buf):
    o, a, b, batch, n, m, side, _ = _row_fields(row)
    for t in range(batch):
        A = buf[a + t * n * n : a + (t + 1) * n * n].reshape(n, n)
        with warnings.catch_warnings():  # a singular matrix: raised below (solve) or NumPy's (0, -inf)
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            lu, piv = scipy.linalg.lu_factor(A.T, check_finite=False)
        start = side + t * (n * n + n)
        buf[start : start + n * n] = lu.T.reshape(-1)  # LAPACK's column-major factors, as getrf leaves them
        buf[start + n * n : start + n * n + n] = piv + 1
        singular = bool(np.any(np.diagonal(lu) == 0.0))
        if row[C_OP] == OP_SOLVE:
            if singular:
                _check_singular("solve", (lu, piv), t)
            B = buf[b + t * n * m : b + (t + 1) * n * m].reshape(n, m)
            buf[o + t * n * m : o + (t + 1) * n * m] = _lu_solve((lu, piv), B, False).reshape(-1)
        elif singular:
            buf[o + 2 * t : o + 2 * t + 2] = (0.0, -np.inf)
        else:
            u = np.diagonal(lu)
            swaps = np.count_nonzero(piv != np.arange(n))
            buf[o + 2 * t] = np.prod(np.sign(u)) * (-1.0) ** swaps
            buf[o + 2 * t + 1] = np.sum(np.log(np.abs(u)))


def _inverse_t(factors, n):
    return _lu_solve(factors, np.eye(n), True)


def numpy_tangent(row, aux, buf, T):
    o, a, b, batch, n, m, side, flags = _row_fields(row)
    k = T.shape[0]
    for t in range(batch):
        factors = _factors(buf, side, t, n)
        dA = T[:, a + t * n * n : a + (t + 1) * n * n].reshape(k, n, n)
        if row[C_OP] == OP_SOLVE:  # d(A⁻¹ B) = A⁻¹ (dB - dA X)
            X = buf[o + t * n * m : o + (t + 1) * n * m].reshape(n, m)
            R = np.zeros((k, n, m))
            if flags & F_GRAD_B:
                R += T[:, b + t * n * m : b + (t + 1) * n * m].reshape(k, n, m)
            if flags & F_GRAD_A:
                R -= np.matmul(dA, X)
            for d in range(k):
                T[d, o + t * n * m : o + (t + 1) * n * m] = _lu_solve(factors, R[d], False).reshape(-1)
        else:  # d log|det A| = <A⁻ᵀ, dA>
            _check_singular("slogdet", factors, t)
            W = _inverse_t(factors, n)
            T[:, o + 2 * t] = 0.0
            T[:, o + 2 * t + 1] = np.einsum("ij,kij->k", W, dA)


def numpy_reverse(row, aux, buf, G, G2, T):
    o, a, b, batch, n, m, side, flags = _row_fields(row)
    ga, gb = flags & F_GRAD_A, flags & F_GRAD_B
    for t in range(batch):
        factors = _factors(buf, side, t, n)
        A_at, B_at = slice(a + t * n * n, a + (t + 1) * n * n), slice(b + t * n * m, b + (t + 1) * n * m)
        if row[C_OP] == OP_SOLVE:
            X_at = slice(o + t * n * m, o + (t + 1) * n * m)
            X = buf[X_at].reshape(n, m)
            if T is not None and ga:  # B̄' gets -A⁻ᵀ dAᵀ B̄, Ā' gets -(that) Xᵀ - B̄ dXᵀ
                Y = _lu_solve(factors, G[0, X_at].reshape(n, m), True)
                for d in range(T.shape[0]):
                    R = _lu_solve(factors, -T[d, A_at].reshape(n, n).T @ Y, True)
                    if gb:
                        G2[d, B_at] += R.reshape(-1)
                    G2[d, A_at] -= (R @ X.T + Y @ T[d, X_at].reshape(n, m).T).reshape(-1)
            for plane in linear_planes(row, G, G2, T):  # B̄ = A⁻ᵀ X̄, Ā = -B̄ Xᵀ
                for d in range(plane.shape[0]):
                    Y = _lu_solve(factors, plane[d, X_at].reshape(n, m), True)
                    if gb:
                        plane[d, B_at] += Y.reshape(-1)
                    if ga:
                        plane[d, A_at] -= (Y @ X.T).reshape(-1)
        else:
            _check_singular("slogdet", factors, t)
            W = _inverse_t(factors, n)
            if T is not None:  # d(g A⁻ᵀ) = g' A⁻ᵀ - g A⁻ᵀ dAᵀ A⁻ᵀ
                g = G[0, o + 2 * t + 1]
                for d in range(T.shape[0]):
                    G2[d, A_at] -= g * (W @ T[d, A_at].reshape(n, n).T @ W).reshape(-1)
            for plane in linear_planes(row, G, G2, T):
                plane[:, A_at] += plane[:, o + 2 * t + 1 : o + 2 * t + 2] * W.reshape(1, -1)


# --------------------------------------------------------------------------
# declarations, saved form, listing, JAX
# --------------------------------------------------------------------------
def side_size(prim, params):
    return params["batch"] * (params["n"] * params["n"] + params["n"])  # factors and pivots per matrix


def validate(prim, row, n_values, pool_end):
    n_out, na, nb = row[C_N], row[C_NA], row[C_NB]
    batch, n, m, side = row[P_BATCH : P_SIDE + 1]
    if min(batch, n, m) < 0:
        return f"bad extents {(batch, n, m)}"
    if n < 1 or (prim.name == "solve" and m < 1):  # LAPACK refuses them; the tracer records them as constants
        return f"empty matrices {(batch, n, m)}: an empty result is never recorded"
    if na != batch * n * n:
        return f"operand of size {na} is not {batch} matrices of {n}x{n}"
    if prim.name == "solve" and (nb != batch * n * m or n_out != batch * n * m):
        return f"sizes {nb} -> {n_out} do not match {batch} right-hand sides of {n}x{m}"
    if prim.name == "slogdet" and (n_out != 2 * batch or m != 0 or nb != 0):
        return f"output of size {n_out} is not {batch} (sign, log|det|) pairs"
    if side < 0 or side + batch * (n * n + n) > n_values:
        return f"side store [{side}, {side + batch * (n * n + n)}) outside the {n_values} values"
    return None


def describe(prim, params):
    if prim.name == "slogdet":
        return f"[{params['batch']}x{params['n']}x{params['n']}]"
    return f"[{params['batch']}x{params['n']}x{params['n']} \\ {params['n']}x{params['m']}]"


def jax_call(jnp, fn, operands, params, index):
    return fn(*operands, params["batch"], params["n"], params["m"])
