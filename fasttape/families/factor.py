"""The factor family: Cholesky factors, triangular solves, symmetric eigendecompositions, singular value
and QR decompositions of batched matrices.

``cholesky``: L (batch, n, n) with L Lᵀ = A for the symmetric matrix whose lower triangle A
holds (the upper triangle is not read: NumPy's and JAX's ``cholesky`` symmetrise A first, in
primitives, ``fasttape.linalg``).  ``trisolve``: X = op(T)⁻¹ B for T (batch, n, n) triangular
(only that triangle is read; with ``unit`` its diagonal is taken as ones), op(T) = T or Tᵀ,
B (batch, n, m).  The parameter ``mode`` holds LOWER | TRANSPOSED | UNIT.  ``eigh``: the
eigenvalues w (ascending) and eigenvectors V (columns) of the symmetric matrix whose lower
triangle A holds, one output (batch, n + n²): w, then V row by row; their derivatives need
distinct eigenvalues (dV has 1 / (w_j - w_i)), except where V's cotangent is exactly zero.
``svd``: the thin decomposition A = U diag(s) Vt of A (batch, n, m), k = min(n, m): one output
(batch, k + n k + k m), s (descending), then U (n x k), then Vt (k x m); its derivatives need distinct
singular values (1 / (s_j² - s_i²)), nonzero ones where n != m (1 / s), except where the singular
vectors' cotangents are exactly zero.  ``qr``: the thin A = Q R, one output (batch, n k + k m), Q then R;
its derivatives need A's first k columns independent (R⁻¹).  Both come from LAPACK exactly as NumPy
and JAX compute them (``dgesdd``; ``dgeqrf`` and ``dorgqr``), signs included.  ``lu``: A = P L U with
partial pivoting (LAPACK's ``dgetrf``, as SciPy and JAX), one output (batch, n² + n): the packed factors,
then the row interchanges (0-based, as floats; their derivative is zero); its derivatives need U
invertible.  ``permute``: those interchanges (operand A, (batch, n), read during the sweep and checked)
applied to the rows of B (batch, n, m): Pᵀ B, or P B with mode INVERSE; linear in B.

Every rule is written once (``factor_rules``), in ``fasttape.duals``' stack arithmetic, and serves
both tiers (compiled into the kernels, plain NumPy and SciPy in the executor) and every sweep: the
tangent rules on stacks of directions, the adjoint rules on constants (first order), on stacks
of cotangents (the k-seed reverse) and on duals (forward-over-reverse: the tangent of the
adjoint rule, so second order needs no rule of its own).  LAPACK does the factoring and the
solves (``fasttape.lapack``).

A matrix that is not positive definite (``cholesky``) or has a zero on its diagonal
(``trisolve``) raises ``numpy.linalg.LinAlgError`` naming the function and the batch element (for
a triangular solve, the SciPy function that made it, which its mode records).
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from .. import duals as D
from .. import lapack
from ..jit import jit
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
    param_columns,
)
from ..loops import zero_first_writes
from ..primitives import opcode
from .factor_rules import (
    LOWER,
    TRANSPOSED,
    UNIT,
    cholesky_adjoint,
    cholesky_tangent,
    eigh_adjoint,
    eigh_tangent,
    lu_adjoint,
    lu_tangent,
    qr_adjoint,
    qr_tangent,
    svd_adjoint,
    svd_tangent,
    trisolve_adjoint,
    trisolve_tangent,
)

KINDS = ("cholesky", "trisolve", "eigh", "svd", "qr", "lu", "permute")
PARAMS = ("batch", "n", "m", "mode")
P_BATCH, P_N, P_M, P_MODE = param_columns(PARAMS)
OP_CHOLESKY = opcode("cholesky")
OP_TRISOLVE = opcode("trisolve")
OP_EIGH = opcode("eigh")
OP_SVD = opcode("svd")
OP_QR = opcode("qr")
OP_LU = opcode("lu")
OP_PERMUTE = opcode("permute")

INVERSE = 1  # permute's mode: P X rather than Pᵀ X
COMPLETE = 1  # qr's mode: Q (n x n) of a tall A, its first k columns then their complement
# trisolve's mode above those bits: the user's function that made the solve, which its error names
CALLERS = ("scipy.linalg.solve_triangular", "scipy.linalg.cho_solve", "scipy.linalg.lu_solve", "scipy.linalg.solve")
CALLER_SHIFT = 3
LinAlgError = np.linalg.LinAlgError


@register_jitable
def pivots(buf, start, n, t):
    """The n row interchanges stored as floats from ``start``, checked: each a row index (ValueError
    otherwise, before any row is touched)."""
    piv = np.empty(n, dtype=np.int64)
    for i in range(n):
        p = buf[start + i]
        if not (0.0 <= p < n and p == np.floor(p)):
            raise ValueError(
                "lu_solve: the pivots are not row indices of the " + str(n) + "x" + str(n) + " factors (batch element "
                + str(t) + "); pass lu_factor's (lu, piv) unchanged"
            )  # fmt: skip
        piv[i] = int(p)
    return piv


# --------------------------------------------------------------------------
# one row, for both tiers: fields, stacks from the planes, the sweeps
# --------------------------------------------------------------------------
@register_jitable
def _fields(row):
    """(opcode, output, A, B, batch, n, m, mode, flags)."""
    return (row[C_OP], row[C_OUT], row[C_A], row[C_B], row[P_BATCH], row[P_N], row[P_M], row[P_MODE],
            row[C_FLAGS])  # fmt: skip


@register_jitable
def _const(buf, start, r, c):
    return D.const(buf[start : start + r * c].reshape(r, c))


@register_jitable
def _planes(P, start, r, c):
    """The stack of one matrix from each row of P (k, n_values)."""
    out = np.empty((P.shape[0], r, c))
    for d in range(P.shape[0]):
        out[d] = P[d, start : start + r * c].reshape(r, c)
    return out


@register_jitable
def _dual(buf, T, start, r, c, active):
    """The value with its tangents (rows of T), or the constant value where the operand is inactive."""
    if not active or T.shape[0] == 0:
        return _const(buf, start, r, c)
    out = np.empty((1 + T.shape[0], r, c))
    out[0] = buf[start : start + r * c].reshape(r, c)
    out[1:] = _planes(T, start, r, c)
    return out


@register_jitable
def _accumulate(P, start, S, first):
    """Add slots first.. of the stack S onto the rows of P, one slot per row."""
    r, c = S.shape[1], S.shape[2]
    for d in range(min(P.shape[0], S.shape[0] - first)):
        P[d, start : start + r * c] += S[first + d].reshape(-1)


@register_jitable
def _caller(mode):
    caller = mode >> CALLER_SHIFT
    if caller == 1:
        return "scipy.linalg.cho_solve"
    if caller == 2:
        return "scipy.linalg.lu_solve"
    if caller == 3:
        return "scipy.linalg.solve"
    return "scipy.linalg.solve_triangular"


@register_jitable
def _raise(op, t, mode):
    if op == OP_CHOLESKY:
        raise LinAlgError("cholesky: matrix is not positive definite (batch element " + str(t) + ")")
    raise LinAlgError(_caller(mode) + ": singular matrix, a zero on the diagonal (batch element " + str(t) + ")")


@register_jitable
def cholesky_factor(A, t):
    """The lower factor of the matrix whose lower triangle A holds (batch element t).  Where LAPACK stops
    (a pivot not positive): LinAlgError for a finite A, and for one holding NaN or inf a lower triangle of
    NaNs, as JAX gives (a NaN LAPACK passes over propagates through the factor, as in JAX)."""
    L, ok = lapack.cholesky_lower(A)
    if ok:
        return L
    n = A.shape[0]
    for i in range(n):
        for j in range(i + 1):
            if not np.isfinite(A[i, j]):
                for r in range(n):
                    L[r, : r + 1] = np.nan
                return L
    _raise(OP_CHOLESKY, t, 0)
    return L


def cholesky_values(A):
    """``cholesky_factor`` over the batch axes of A (..., n, n): the value the kernels compute."""
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    return np.stack([cholesky_factor(flat[t], t) for t in range(len(flat))]).reshape(A.shape)


@register_jitable
def _in_size(op, n, m):
    """Values of one batch element's matrix operand: A (n x m) for svd and qr, else (n x n)."""
    if op == OP_SVD or op == OP_QR:
        return n * m
    if op == OP_PERMUTE:
        return n  # the pivots; the rows permuted are operand B (n x m)
    return n * n


@register_jitable
def _q_columns(n, m, mode):
    """Columns of qr's Q: k = min(n, m), or n with COMPLETE."""
    return n if (mode & COMPLETE) != 0 else min(n, m)


def output_parts(op, n, m, mode) -> tuple:
    """(rows, columns) of each part of one batch element's packed output, in order: the layout that
    ``_out_size`` sums and the kernels address (nested derivatives unpack their operands by it)."""
    k = min(n, m)
    if op == OP_CHOLESKY:
        return ((n, n),)
    if op == OP_EIGH:
        return ((1, n), (n, n))
    if op == OP_SVD:
        return ((1, k), (n, k), (k, m))
    if op == OP_QR:
        return ((n, _q_columns(n, m, mode)), (k, m))
    if op == OP_LU:
        return ((n, n), (1, n))
    return ((n, m),)


@register_jitable
def _out_size(op, n, m, mode):
    """Values of one batch element's output: L (n x n), X (n x m), (w, V) (n + n x n), (s, U, Vt)
    (k + n x k + k x m), (Q, R) (n x q + k x m, q = _q_columns), k = min(n, m), (LU, piv) (n x n + n) or
    P X (n x m)."""
    k = min(n, m)
    if op == OP_CHOLESKY:
        return n * n
    if op == OP_EIGH:
        return n + n * n
    if op == OP_SVD:
        return k + n * k + k * m
    if op == OP_QR:
        return n * _q_columns(n, m, mode) + k * m
    if op == OP_LU:
        return n * n + n
    return n * m


def eigh_values(A):
    """``lapack.eigh`` over the batch axes of A (..., n, n): (w (..., n), V (..., n, n)), as the kernels."""
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    pairs = [lapack.eigh(flat[t]) for t in range(len(flat))]
    n = A.shape[-1]
    return np.stack([w for w, _ in pairs]).reshape(A.shape[:-1]), np.stack([V for _, V in pairs]).reshape(
        A.shape[:-2] + (n, n)
    )


def svd_values(A):
    """``lapack.svd`` over the batch axes of A (..., n, m): (s, U, Vt), as the kernels compute them."""
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    triples = [lapack.svd(flat[t]) for t in range(len(flat))]
    return tuple(np.stack([x[i] for x in triples]).reshape(A.shape[:-2] + triples[0][i].shape) for i in range(3))


def qr_values(A, complete):
    """``lapack.qr`` over the batch axes of A (..., n, m): (Q, R), as the kernels compute them."""
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    pairs = [lapack.qr(flat[t], complete) for t in range(len(flat))]
    return tuple(np.stack([x[i] for x in pairs]).reshape(A.shape[:-2] + pairs[0][i].shape) for i in range(2))


def lu_values(A):
    """``lapack.lu`` over the batch axes of A (..., n, n): (LU (..., n, n), piv (..., n) as floats)."""
    A = np.asarray(A, dtype=np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    pairs = [lapack.lu(flat[t]) for t in range(len(flat))]
    return tuple(np.stack([x[i] for x in pairs]).reshape(A.shape[:-2] + pairs[0][i].shape) for i in range(2))


def swapped_values(piv, B, inverse):
    """``swapped`` over the batch axes of piv (..., n) and B (..., n, m), as the kernels (the pivots
    checked)."""
    piv = np.asarray(piv, dtype=np.float64)
    n = piv.shape[-1]
    flat_piv, flat_B = piv.reshape(-1, n), np.asarray(B, dtype=np.float64).reshape(-1, *np.shape(B)[-2:])
    rows = [D.swapped(D.const(flat_B[t]), pivots(flat_piv[t], 0, n, t), inverse)[0] for t in range(len(flat_B))]
    return np.stack(rows).reshape(np.shape(B))


@register_jitable
def forward_rows(row, buf):
    op, o, a, b, batch, n, m, mode, _ = _fields(row)
    size_in, size_out, k = _in_size(op, n, m), _out_size(op, n, m, mode), min(n, m)
    for t in range(batch):
        if op == OP_SVD or op == OP_QR:
            A = buf[a + t * size_in : a + (t + 1) * size_in].reshape(n, m)
            start = o + t * size_out
            if op == OP_SVD:
                sv, U, Vt = lapack.svd(A)
                buf[start : start + k] = sv
                buf[start + k : start + k + n * k] = U.reshape(-1)
                buf[start + k + n * k : start + size_out] = Vt.reshape(-1)
            else:
                Q, R = lapack.qr(A, (mode & COMPLETE) != 0)
                buf[start : start + Q.size] = Q.reshape(-1)
                buf[start + Q.size : start + size_out] = R.reshape(-1)
            continue
        if op == OP_PERMUTE:
            piv = pivots(buf, a + t * n, n, t)
            Y = D.swapped(_const(buf, b + t * n * m, n, m), piv, (mode & INVERSE) != 0)
            buf[o + t * n * m : o + (t + 1) * n * m] = Y[0].reshape(-1)
            continue
        A = buf[a + t * n * n : a + (t + 1) * n * n].reshape(n, n)
        if op == OP_LU:
            LU, piv = lapack.lu(A)
            buf[o + t * (n * n + n) : o + t * (n * n + n) + n * n] = LU.reshape(-1)
            buf[o + t * (n * n + n) + n * n : o + (t + 1) * (n * n + n)] = piv
            continue
        if op == OP_CHOLESKY:
            buf[o + t * n * n : o + (t + 1) * n * n] = cholesky_factor(A, t).reshape(-1)
        elif op == OP_EIGH:
            w, V = lapack.eigh(A)
            start = o + t * (n + n * n)
            buf[start : start + n] = w
            buf[start + n : start + n + n * n] = V.reshape(-1)
        else:
            B = _const(buf, b + t * n * m, n, m)
            X, ok = D.solve_triangular(D.const(A), B, (mode & LOWER) != 0, (mode & TRANSPOSED) != 0, (mode & UNIT) != 0)
            if not ok:
                _raise(op, t, mode)
            buf[o + t * n * m : o + (t + 1) * n * m] = X[0].reshape(-1)


@register_jitable
def _put(T, start, S):
    """Slot d of the stack S into row d of T, from ``start``."""
    size = S.shape[1] * S.shape[2]
    for d in range(T.shape[0]):
        T[d, start : start + size] = S[d].reshape(-1)


@register_jitable
def tangent_rows(row, buf, T):
    """Tangents along the k rows of T (k, n_values)."""
    op, o, a, b, batch, n, m, mode, flags = _fields(row)
    ga, gb = (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0
    k = T.shape[0]
    r = min(n, m)
    for t in range(batch):
        A0, Y0 = a + t * _in_size(op, n, m), o + t * _out_size(op, n, m, mode)
        if op == OP_SVD:
            ds, dU, dVt = svd_tangent(_const(buf, Y0, 1, r), _const(buf, Y0 + r, n, r),
                                      _const(buf, Y0 + r + n * r, r, m), _planes(T, A0, n, m))  # fmt: skip
            _put(T, Y0, ds)
            _put(T, Y0 + r, dU)
            _put(T, Y0 + r + n * r, dVt)
        elif op == OP_QR:
            q = _q_columns(n, m, mode)
            dQ, dR = qr_tangent(_const(buf, Y0, n, q), _const(buf, Y0 + n * q, r, m), _const(buf, A0, n, m),
                                _planes(T, A0, n, m))  # fmt: skip
            _put(T, Y0, dQ)
            _put(T, Y0 + n * q, dR)
        elif op == OP_LU:
            piv = pivots(buf, Y0 + n * n, n, t)
            _put(T, Y0, lu_tangent(_const(buf, Y0, n, n), piv, _planes(T, A0, n, n)))
            T[:, Y0 + n * n : Y0 + n * n + n] = 0.0  # the pivots are constant where they are defined
        elif op == OP_PERMUTE:
            B0 = b + t * n * m
            if gb:
                _put(T, Y0, D.swapped(_planes(T, B0, n, m), pivots(buf, A0, n, t), (mode & INVERSE) != 0))
            else:
                T[:, Y0 : Y0 + n * m] = 0.0
        elif op == OP_CHOLESKY:
            _put(T, Y0, cholesky_tangent(_const(buf, Y0, n, n), _planes(T, A0, n, n)))
        elif op == OP_EIGH:
            dw, dV = eigh_tangent(_const(buf, Y0, 1, n), _const(buf, Y0 + n, n, n), _planes(T, A0, n, n))
            _put(T, Y0, dw)
            _put(T, Y0 + n, dV)
        else:
            B0 = b + t * n * m
            dT = _planes(T, A0, n, n) if ga else np.zeros((k, n, n))
            dB = _planes(T, B0, n, m) if gb else np.zeros((k, n, m))
            _put(T, Y0, trisolve_tangent(_const(buf, A0, n, n), _const(buf, Y0, n, m), dT, dB, mode, ga, gb))


@register_jitable
def _adjoint_once(row, t, buf, T, Y_bar, ga, gb):
    """The adjoint rule of batch element t on Y_bar (D, 1, size): the output cotangents of its D slots,
    the operands and output as duals over the rows of T (constants when T is empty): the stacks (Ā, B̄)."""
    op, o, a, b, batch, n, m, mode, _ = _fields(row)
    A0, Y0 = a + t * _in_size(op, n, m), o + t * _out_size(op, n, m, mode)
    depth = Y_bar.shape[0]
    no_b = np.zeros((0, n, m))
    k = min(n, m)
    if op == OP_SVD:
        s_bar = np.ascontiguousarray(Y_bar[:, :, :k])
        U_bar = np.ascontiguousarray(Y_bar[:, 0, k : k + n * k]).reshape(depth, n, k)
        Vt_bar = np.ascontiguousarray(Y_bar[:, 0, k + n * k :]).reshape(depth, k, m)
        s, U = _dual(buf, T, Y0, 1, k, True), _dual(buf, T, Y0 + k, n, k, True)
        return svd_adjoint(s, U, _dual(buf, T, Y0 + k + n * k, k, m, True), s_bar, U_bar, Vt_bar), no_b
    if op == OP_LU:
        LU_bar = np.ascontiguousarray(Y_bar[:, 0, : n * n]).reshape(depth, n, n)  # the pivots' is ignored
        return lu_adjoint(_dual(buf, T, Y0, n, n, True), pivots(buf, Y0 + n * n, n, t), LU_bar), no_b
    if op == OP_PERMUTE:  # linear in B; the pivots have no derivative
        B_bar = D.swapped(Y_bar.reshape(depth, n, m), pivots(buf, A0, n, t), (mode & INVERSE) == 0)
        return np.zeros((1, 1, n)), B_bar
    if op == OP_QR:
        q = _q_columns(n, m, mode)
        Q_bar = np.ascontiguousarray(Y_bar[:, 0, : n * q]).reshape(depth, n, q)
        R_bar = np.ascontiguousarray(Y_bar[:, 0, n * q :]).reshape(depth, k, m)
        Q, R = _dual(buf, T, Y0, n, q, True), _dual(buf, T, Y0 + n * q, k, m, True)
        A = _dual(buf, T, A0, n, m, n < m)  # a wide A's right block takes part in R
        return qr_adjoint(Q, R, A, Q_bar, R_bar), no_b
    if op == OP_CHOLESKY:
        return cholesky_adjoint(_dual(buf, T, Y0, n, n, True), Y_bar.reshape(depth, n, n)), no_b
    if op == OP_EIGH:
        w_bar = np.ascontiguousarray(Y_bar[:, :, :n])
        V_bar = np.ascontiguousarray(Y_bar[:, 0, n:]).reshape(depth, n, n)
        return eigh_adjoint(_dual(buf, T, Y0, 1, n, True), _dual(buf, T, Y0 + n, n, n, True), w_bar, V_bar), no_b
    X = _dual(buf, T, Y0, n, m, True)
    return trisolve_adjoint(_dual(buf, T, A0, n, n, ga), X, Y_bar.reshape(depth, n, m), mode)


@register_jitable
def _add_adjoints(row, t, G, G2, A_bar, B_bar, ga, gb):
    """Slot 0 of Ā and B̄ onto G's row (if G has one), the next slots onto the rows of G2."""
    op, o, a, b, batch, n, m, mode, _ = _fields(row)
    first = G.shape[0]
    with_b = op == OP_TRISOLVE or op == OP_PERMUTE
    for gets, start, S in ((ga, a + t * _in_size(op, n, m), A_bar), (gb and with_b, b + t * n * m, B_bar)):
        if gets:
            _accumulate(G, start, S, 0)
            _accumulate(G2, start, S, first)


@register_jitable
def adjoint_rows(row, buf, G, G2, T, flat):
    """G (1 or 0 rows of n_values): first-order adjoints; G2 (k rows): k-seed cotangents, or with T
    (k rows) the tangents of G (forward-over-reverse; ``flat``: the output adjoint's tangent is a
    structural zero).  G or G2 may be empty."""
    op, o, a, b, batch, n, m, mode, flags = _fields(row)
    ga, gb = (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0
    size = _out_size(op, n, m, mode)
    empty = np.zeros((0, buf.shape[0]))
    for t in range(batch):
        start = o + t * size
        if T.shape[0] > 0:  # the dual evaluation: slot 0 first order, slot d its tangent along T's row d
            Y_bar = _const(G[0], start, 1, size)
            if not flat:
                Y_bar = np.concatenate((Y_bar, _planes(G2, start, 1, size)))
            A_bar, B_bar = _adjoint_once(row, t, buf, T, Y_bar, ga, gb)
            _add_adjoints(row, t, G, G2, A_bar, B_bar, ga, gb)
            continue
        if G.shape[0] > 0:  # first order: constants
            A_bar, B_bar = _adjoint_once(row, t, buf, empty, _const(G[0], start, 1, size), ga, gb)
            _add_adjoints(row, t, G, empty, A_bar, B_bar, ga, gb)
        if G2.shape[0] > 0:  # the k-seed reverse: slot d is the rule on row d
            A_bar, B_bar = _adjoint_once(row, t, buf, empty, _planes(G2, start, 1, size), ga, gb)
            _add_adjoints(row, t, empty, G2, A_bar, B_bar, ga, gb)


# --------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------
@jit
def forward(ins, i, aux, buf):
    forward_rows(ins[i], buf)


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    tangent_rows(ins[i], buf, tan[: k * NV].reshape(k, NV))


@jit
def reverse(ins, i, aux, buf, N):
    row = ins[i]
    flags = row[C_FLAGS]
    if flags & F_INIT_A and flags & F_GRAD_A:
        buf[N + row[C_A] : N + row[C_A] + row[C_NA]] = 0.0
    if flags & F_INIT_B and flags & F_GRAD_B:
        buf[N + row[C_B] : N + row[C_B] + row[C_NB]] = 0.0
    adjoint_rows(row, buf, buf[N : 2 * N].reshape(1, N), np.zeros((0, N)), np.zeros((0, N)), False)


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    row = ins[i]
    G = buf[N : 2 * N].reshape(1, N) if second else np.zeros((0, N))
    T = tan[: k * N].reshape(k, N) if second else np.zeros((0, N))
    flat = second and (row[C_FLAGS] & F_CONST_ADJOINT) != 0  # the output adjoint's tangent is a structural zero
    adjoint_rows(row, buf, G, adj2[: k * N].reshape(k, N), T, flat)


# --------------------------------------------------------------------------
# NumPy rules (the executor tier): the same rules, run as Python
# --------------------------------------------------------------------------
def numpy_forward(row, aux, buf):
    forward_rows(row, buf)


def numpy_tangent(row, aux, buf, T):
    tangent_rows(row, buf, T)


def numpy_reverse(row, aux, buf, G, G2, T):
    N = buf.shape[0] // 2
    empty = np.zeros((0, N))
    flat = T is not None and (row[C_FLAGS] & F_CONST_ADJOINT) != 0
    adjoint_rows(row, buf, empty if G is None else G, empty if G2 is None else G2, empty if T is None else T, flat)


# --------------------------------------------------------------------------
# declarations, saved form, listing, JAX
# --------------------------------------------------------------------------
def side_size(prim, params):
    return 0  # the outputs are the factors


def validate(prim, row, n_values, pool_end):
    n_out, na, nb = row[C_N], row[C_NA], row[C_NB]
    batch, n, m, mode = row[P_BATCH : P_MODE + 1]
    if min(batch, n, m) < 0:
        return f"bad extents {(batch, n, m)}"
    if n < 1 or (prim.name in ("trisolve", "svd", "qr") and m < 1):  # the tracer records empty results as constants
        return f"empty matrices {(batch, n, m)}: an empty result is never recorded"
    if prim.name == "lu" and (na != batch * n * n or n_out != batch * (n * n + n) or nb != 0 or m != 0 or mode != 0):
        return f"sizes {na} -> {n_out} do not match {batch} LU factorisations of {n}x{n}"
    if prim.name == "permute":
        if m < 1 or na != batch * n or nb != batch * n * m or n_out != batch * n * m:
            return f"sizes {na}, {nb} -> {n_out} do not match {batch} permutations of {n}x{m} rows"
        if mode not in (0, INVERSE) or row[C_FLAGS] & F_GRAD_A:
            return f"mode {mode} is not 0 or INVERSE, or the pivots are differentiated"
        return None
    if prim.name == "lu":
        return None
    if prim.name in ("svd", "qr"):
        k = min(n, m)
        size = k + n * k + k * m if prim.name == "svd" else n * _q_columns(n, m, mode) + k * m
        modes = (0, COMPLETE) if prim.name == "qr" else (0,)
        if na != batch * n * m or n_out != batch * size or nb != 0 or mode not in modes:
            return f"sizes {na} -> {n_out} do not match {batch} {prim.name} decompositions of {n}x{m}"
        return None
    if na != batch * n * n:
        return f"operand of size {na} is not {batch} matrices of {n}x{n}"
    if prim.name == "cholesky" and (n_out != batch * n * n or nb != 0 or m != 0 or mode != 0):
        return f"output of size {n_out} is not {batch} factors of {n}x{n}"
    if prim.name == "eigh" and (n_out != batch * (n + n * n) or nb != 0 or m != 0 or mode != 0):
        return f"output of size {n_out} is not {batch} eigenvalue and eigenvector sets of {n}x{n}"
    if prim.name == "trisolve" and (nb != batch * n * m or n_out != batch * n * m):
        return f"sizes {nb} -> {n_out} do not match {batch} right-hand sides of {n}x{m}"
    if not 0 <= mode < len(CALLERS) << CALLER_SHIFT:
        return f"mode {mode} is not a combination of LOWER, TRANSPOSED and UNIT with a caller"
    return None


def describe(prim, params):
    n, m, mode = params["n"], params["m"], params["mode"]
    if prim.name in ("cholesky", "eigh", "lu"):
        return f"[{params['batch']}x{n}x{n}]"
    if prim.name == "permute":
        return f"[{params['batch']}x{n}x{m}{' inverse' if mode & INVERSE else ''}]"
    if prim.name in ("svd", "qr"):
        return f"[{params['batch']}x{n}x{m}{' complete' if prim.name == 'qr' and mode & COMPLETE else ''}]"
    words = [w for bit, w in ((LOWER, "lower"), (TRANSPOSED, "transposed"), (UNIT, "unit")) if mode & bit]
    return f"[{params['batch']}x{n}x{n} \\ {n}x{m}{' ' if words else ''}{','.join(words)}]"


def jax_call(jnp, fn, operands, params, index):
    return fn(*operands, params["batch"], params["n"], params["m"], params["mode"])
