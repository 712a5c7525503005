"""``numpy.linalg`` on traced arrays: ``solve``, ``inv``, ``slogdet``, ``det``, ``cholesky``, ``eigh``,
``eigvalsh``, ``matrix_power``, ``multi_dot``, ``svd``, ``svdvals``, ``cond``, ``pinv``, ``matrix_rank``,
``lstsq`` and ``qr`` (``norm``'s orders 2, -2 and 'nuc' use ``singular_value_norm``).

Each lowers onto the linalg family's primitives (``fasttape.families.linalg``): ``solve``
(``inv`` is the solve against the identity) and ``slogdet`` (``det`` is sign·exp(log|det|)).
Shapes follow NumPy 2: matrices (..., n, n) with broadcast batch axes; ``solve``'s right-hand
side is a vector only when it is 1-D.  NumPy itself computes each value first, so a wrong
shape or a singular matrix raises NumPy's own error, with NumPy's message, at trace time.
"""

from __future__ import annotations

import operator

import numpy as np

from . import kernels as K
from . import numpy as fnp
from .families import factor
from .recorder import concrete, recorder_of


def _empty(value):
    """An empty result has no derivative: it is recorded as the constant NumPy computed."""
    return np.asarray(value, dtype=np.float64)


def solve(a, b):
    """``numpy.linalg.solve``: X with A X = B, by the LU factors of A (computed once per call)."""
    rec = recorder_of((a, b))
    if rec is None:
        return np.linalg.solve(a, b)
    fnp._check_complex((a, b))
    value = np.linalg.solve(fnp._float(a), fnp._float(b))  # NumPy's shape errors and LinAlgError
    if value.size == 0:
        return _empty(value)
    vector = np.ndim(concrete(b)) == 1
    rhs = fnp.reshape(b, (-1, 1)) if vector else b
    n, m = np.shape(concrete(a))[-1], np.shape(concrete(rhs))[-1]
    batch = value.shape[:-1] if vector else value.shape[:-2]
    out = rec.linalg(K.OP_SOLVE, (a, rhs), value.reshape(batch + (n, m)), m=m)
    return fnp.reshape(out, value.shape)


def inv(a):
    """``numpy.linalg.inv``: the solve against the identity."""
    if recorder_of((a,)) is None:
        return np.linalg.inv(a)
    value = np.linalg.inv(fnp._float(a))
    if value.size == 0:
        return _empty(value)
    n = value.shape[-1]
    return solve(a, np.broadcast_to(np.eye(n), value.shape))


def slogdet(a):
    """``numpy.linalg.slogdet``: (sign, log|det A|); the sign's derivative is 0."""
    rec = recorder_of((a,))
    if rec is None:
        return np.linalg.slogdet(a)
    fnp._check_complex((a,))
    sign, logabs = np.linalg.slogdet(fnp._float(a))
    result = type(np.linalg.slogdet(np.eye(1)))
    if np.shape(concrete(a))[-1] == 0:
        return result(_empty(sign), _empty(logabs))
    pairs = rec.linalg(K.OP_SLOGDET, (a,), np.stack([sign, logabs], axis=-1).reshape(-1, 2))
    shape = np.shape(sign)
    return result(fnp.reshape(pairs[:, 0], shape), fnp.reshape(pairs[:, 1], shape))


def det(a):
    """``numpy.linalg.det``: sign · exp(log|det A|)."""
    if recorder_of((a,)) is None:
        return np.linalg.det(a)
    sign, logabs = slogdet(a)
    return sign * fnp.exp(logabs)


def _symmetrized(a):
    """½ (A + Aᵀ) on the last two axes, as JAX's ``cholesky`` reads its operand."""
    return 0.5 * (a + fnp.swapaxes(a, -1, -2))


def cholesky(a, /, *, upper=False):
    """``numpy.linalg.cholesky``: the lower factor L (L Lᵀ = A), or Lᵀ with ``upper``.  As in JAX, the
    factor is that of ½ (A + Aᵀ), so the gradient with respect to A is symmetric; for a symmetric A (what
    NumPy assumes, reading one triangle) the value is NumPy's.  A matrix that is not positive definite
    raises LinAlgError naming its batch element; one holding NaN or inf gives a factor of NaNs (as JAX)."""
    rec = recorder_of((a,))
    if rec is None:
        return np.linalg.cholesky(a, upper=upper)
    fnp._check_complex((a,))
    A = fnp._float(a)
    if np.ndim(A) < 2 or np.shape(A)[-1] != np.shape(A)[-2]:
        return np.linalg.cholesky(A)  # NumPy's error for a non-square operand
    sym = _symmetrized(a)
    if np.size(A) == 0:
        return _empty(np.linalg.cholesky(concrete(sym)))
    value = factor.cholesky_values(concrete(sym))  # LinAlgError for a matrix not positive definite
    L = rec.linalg(K.OP_CHOLESKY, (sym,), value)
    return fnp.swapaxes(L, -1, -2) if upper else L


def eigen_lower(a):
    """(w, V) of the symmetric matrix whose lower triangle ``a`` (..., n, n) holds, by one ``eigh``
    instruction: eigenvalues ascending, eigenvectors as columns, as LAPACK's ``dsyevd`` (and JAX) give
    them.  The derivatives need distinct eigenvalues (as in JAX: equal ones give inf or NaN)."""
    rec = recorder_of((a,))
    w, V = factor.eigh_values(concrete(a))
    n = w.shape[-1]
    packed = np.concatenate([w, V.reshape(w.shape[:-1] + (n * n,))], axis=-1)
    out = rec.linalg(K.OP_EIGH, (a,), packed)
    return out[..., :n], fnp.reshape(out[..., n:], V.shape)


def _eigh_operand(name, a):
    fnp._check_complex((a,))
    A = fnp._float(a)
    if np.ndim(A) < 2 or np.shape(A)[-1] != np.shape(A)[-2]:
        getattr(np.linalg, name)(A)  # NumPy's error for a non-square operand
    return _symmetrized(a)


def eigh(a, UPLO="L"):
    """``numpy.linalg.eigh``: (eigenvalues, eigenvectors) of ½ (A + Aᵀ), as JAX (NumPy reads one triangle;
    the two agree for a symmetric A)."""
    if recorder_of((a,)) is None:
        return np.linalg.eigh(a, UPLO=UPLO)
    sym = _eigh_operand("eigh", a)
    result = type(np.linalg.eigh(np.eye(1)))
    if np.size(concrete(sym)) == 0:
        w, V = np.linalg.eigh(concrete(sym))
        return result(_empty(w), _empty(V))
    return result(*eigen_lower(sym))


def eigvalsh(a, UPLO="L"):
    """``numpy.linalg.eigvalsh``: the eigenvalues of ½ (A + Aᵀ), ascending."""
    if recorder_of((a,)) is None:
        return np.linalg.eigvalsh(a, UPLO=UPLO)
    sym = _eigh_operand("eigvalsh", a)
    if np.size(concrete(sym)) == 0:
        return _empty(np.linalg.eigvalsh(concrete(sym)))
    return eigen_lower(sym)[0]


def matrix_power(a, n):
    """``numpy.linalg.matrix_power``: A^n by repeated squaring (as NumPy and JAX), through the inverse for
    n < 0; A^0 is the identity, a constant."""
    if recorder_of((a,)) is None:
        return np.linalg.matrix_power(a, n)
    value = np.linalg.matrix_power(fnp._float(a), n)  # NumPy's errors: non-square, a non-integer n
    n = operator.index(n)
    if n == 0 or value.size == 0:
        return _empty(value)
    base = inv(a) if n < 0 else a
    result = None
    n = abs(n)
    while n:  # the binary digits of n, lowest first
        if n & 1:
            result = base if result is None else fnp.matmul(result, base)
        n >>= 1
        if n:
            base = fnp.matmul(base, base)
    return result


def _chain_order(shapes):
    """The cheapest parenthesisation of a matrix chain (the classic dynamic programme, as NumPy's)."""
    dims = [shapes[0][0]] + [s[1] for s in shapes]
    count = len(shapes)
    cost = [[0] * count for _ in range(count)]
    split = [[0] * count for _ in range(count)]
    for length in range(1, count):
        for i in range(count - length):
            j = i + length
            cost[i][j] = None
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1]
                if cost[i][j] is None or c < cost[i][j]:
                    cost[i][j], split[i][j] = c, k
    return split


def multi_dot(arrays, *, out=None):
    """``numpy.linalg.multi_dot``: the product of a chain of matrices in its cheapest order; a 1-D first
    (last) array is a row (column) vector, dropped from the result's shape as NumPy does."""
    arrays = list(arrays)
    if recorder_of(arrays) is None:
        return np.linalg.multi_dot(arrays, out=out)
    fnp._no_out("linalg.multi_dot", out, {})
    value = np.linalg.multi_dot([fnp._float(x) for x in arrays])  # NumPy's shape errors
    first_1d, last_1d = np.ndim(concrete(arrays[0])) == 1, np.ndim(concrete(arrays[-1])) == 1
    if first_1d:
        arrays[0] = fnp.reshape(arrays[0], (1, -1))
    if last_1d:
        arrays[-1] = fnp.reshape(arrays[-1], (-1, 1))
    split = _chain_order([np.shape(concrete(x)) for x in arrays])

    def product(i, j):
        if i == j:
            return arrays[i]
        return fnp.matmul(product(i, split[i][j]), product(split[i][j] + 1, j))

    return fnp.reshape(product(0, len(arrays) - 1), value.shape)


# --------------------------------------------------------------------------
# singular values and QR
# --------------------------------------------------------------------------
def _matrix_operand(name, a):
    """A traced operand (..., n, m) as NumPy's ``name`` accepts it: NumPy's error otherwise."""
    fnp._check_complex((a,))
    A = fnp._float(a)
    if np.ndim(A) < 2:
        getattr(np.linalg, name)(A)  # NumPy's LinAlgError for fewer than two dimensions
    return A


def decompose_svd(a):
    """(s, U, Vt): the thin singular value decomposition of ``a`` (..., n, m), one ``svd`` instruction:
    s descending, U (..., n, k), Vt (..., k, m), k = min(n, m), exactly as NumPy's and JAX's LAPACK call
    (``dgesdd``) gives them.  The derivatives need distinct singular values, and nonzero ones where
    n != m (as in JAX: equal ones give inf or NaN where the singular vectors are used)."""
    rec = recorder_of((a,))
    s, U, Vt = factor.svd_values(concrete(a))
    n, m = U.shape[-2], Vt.shape[-1]
    k = s.shape[-1]
    batch = s.shape[:-1]
    packed = np.concatenate([s, U.reshape(batch + (n * k,)), Vt.reshape(batch + (k * m,))], axis=-1)
    out = rec.linalg(K.OP_SVD, (a,), packed, n=n, m=m)
    return out[..., :k], fnp.reshape(out[..., k : k + n * k], U.shape), fnp.reshape(out[..., k + n * k :], Vt.shape)


def _full_matrices_refused(name, shape):
    n, m = shape[-2:]
    raise NotImplementedError(
        f"{name} with full_matrices=True of a {n}x{m} matrix: the {max(n, m) - min(n, m)} extra singular vectors "
        "are any orthonormal completion, not a function of the matrix, so they have no derivative (JAX refuses "
        "them too). Pass full_matrices=False (the thin decomposition); the square case is supported either way."
    )


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """``numpy.linalg.svd``: (U, S, Vh) with A = U diag(S) Vh, or S alone with ``compute_uv=False``.  The
    thin decomposition (``full_matrices=False``, or a square A); the full one of a non-square A has no
    derivative (as in JAX).  ``hermitian=True`` gives the same singular values; its singular vectors are
    the general decomposition's, a valid SVD of A whose signs may differ from NumPy's eigh-based ones."""
    if recorder_of((a,)) is None:
        return np.linalg.svd(a, full_matrices=full_matrices, compute_uv=compute_uv, hermitian=hermitian)
    A = _matrix_operand("svd", a)
    result = type(np.linalg.svd(np.eye(1)))
    if np.size(A) == 0:
        value = np.linalg.svd(A, full_matrices=full_matrices, compute_uv=compute_uv)
        return result(*(_empty(v) for v in value)) if compute_uv else _empty(value)
    if compute_uv and full_matrices and np.shape(A)[-1] != np.shape(A)[-2]:
        _full_matrices_refused("numpy.linalg.svd", np.shape(A))
    s, U, Vt = decompose_svd(a)
    return result(U, s, Vt) if compute_uv else s


def svdvals(x, /):
    """``numpy.linalg.svdvals``: the singular values, descending."""
    if recorder_of((x,)) is None:
        return np.linalg.svdvals(x)
    return svd(x, compute_uv=False)


def singular_value_norm(x, ord, axes, keepdims):
    """``numpy.linalg.norm`` of the matrices on ``axes`` (two) for ``ord`` 2 (the largest singular value),
    -2 (the smallest) or 'nuc' (their sum), as NumPy and JAX compute them (a max, min or sum of ``svd``'s)."""
    nd = np.ndim(concrete(x))
    r, c = (a % nd for a in axes)
    s = svd(np.moveaxis(x, (r, c), (-2, -1)), compute_uv=False)
    reduce = {2: np.max, -2: np.min, "nuc": np.sum}[ord]
    value = reduce(s, axis=-1)
    if keepdims:
        for axis in sorted((r, c)):
            value = np.expand_dims(value, axis)
    return value


def norm(x, ord=None, axis=None, keepdims=False):
    """``numpy.linalg.norm``: vector norms and the matrix norms (Frobenius, induced 1 and inf, and by the
    singular values 2, -2 and 'nuc')."""
    if recorder_of((x,)) is None:
        return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    nd = np.ndim(concrete(x))
    if axis is None and ord is None:
        return fnp.sqrt(fnp.sum(fnp.square(x), axis=None, keepdims=keepdims))
    if axis is None:
        axis = tuple(range(nd)) if nd <= 2 else None
        if axis is None:
            raise ValueError("Improper number of dimensions to norm.")
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) == 1:
        if ord is None or ord == 2:
            return fnp.sqrt(fnp.sum(fnp.square(x), axis=axes, keepdims=keepdims))
        if ord == np.inf:
            return fnp.max(fnp.abs(x), axis=axes, keepdims=keepdims)
        if ord == -np.inf:
            return fnp.min(fnp.abs(x), axis=axes, keepdims=keepdims)
        if ord == 0:
            return fnp.sum(fnp.not_equal(x, 0.0), axis=axes, keepdims=keepdims)
        if ord == 1:
            return fnp.sum(fnp.abs(x), axis=axes, keepdims=keepdims)
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order '{ord}' for vectors")
        p = float(ord)
        return fnp.power(fnp.sum(fnp.power(fnp.abs(x), p), axis=axes, keepdims=keepdims), 1.0 / p)
    if len(axes) == 2:
        r, c = (a % nd for a in axes)
        if ord is None or ord == "fro":
            return fnp.sqrt(fnp.sum(fnp.square(x), axis=axes, keepdims=keepdims))
        if ord in (1, -1, np.inf, -np.inf):
            sum_axis, pick_axis = (r, c) if ord in (1, -1) else (c, r)
            sums = fnp.sum(fnp.abs(x), axis=sum_axis, keepdims=True)
            pick = fnp.max if ord > 0 else fnp.min
            res = pick(sums, axis=pick_axis, keepdims=True)
            return res if keepdims else fnp.squeeze(res, axis=(r, c))
        if ord in (2, -2, "nuc"):
            return singular_value_norm(x, ord, (r, c), keepdims)
        raise ValueError("Invalid norm order for matrices.")
    raise ValueError("Improper number of dimensions to norm.")


def cond(x, p=None):
    """``numpy.linalg.cond``: s_max / s_min for ``p`` None or 2 (s_min / s_max for -2), otherwise
    norm(A, p) · norm(A⁻¹, p)."""
    if recorder_of((x,)) is None:
        return np.linalg.cond(x, p)
    X = _matrix_operand("cond", x)
    np.linalg.cond(X, p)  # NumPy's errors: empty arrays, a non-square matrix for p not in (None, 2, -2)
    if p is None or p in (2, -2):
        s = svd(x, compute_uv=False)
        return s[..., -1] / s[..., 0] if p == -2 else s[..., 0] / s[..., -1]
    return norm(x, p, axis=(-2, -1)) * norm(inv(x), p, axis=(-2, -1))


def _inverted_large(s, cutoff):
    """1 / s where s > cutoff, 0 elsewhere (NumPy's pseudo-inverse of the singular values; the discarded
    ones take no part in the derivative, which is that of a matrix of constant rank, as in JAX)."""
    large = np.greater(s, cutoff)
    return np.where(large, 1.0 / np.where(large, s, 1.0), 0.0)


def pseudo_inverse(a, rtol, atol=0.0):
    """V diag(1/s) Uᵀ over the singular values of ``a`` above atol + rtol · max(s) (``rtol`` broadcast
    over the batch axes)."""
    s, U, Vt = decompose_svd(a)
    cutoff = atol + np.asarray(rtol, dtype=np.float64)[..., None] * np.max(s, axis=-1, keepdims=True)
    s_inv = _inverted_large(s, cutoff)
    return fnp.matmul(np.swapaxes(Vt, -1, -2) * s_inv[..., None, :], np.swapaxes(U, -1, -2)), s, cutoff


def pinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    """``numpy.linalg.pinv``: V diag(1/s) Uᵀ over the singular values above rcond · max(s), with NumPy's
    defaults for ``rcond`` and ``rtol``."""
    if recorder_of((a,)) is None:
        return np.linalg.pinv(a, rcond=rcond, hermitian=hermitian, rtol=rtol)
    A = _matrix_operand("pinv", a)
    value = np.linalg.pinv(A, rcond=rcond, hermitian=hermitian, rtol=rtol)  # NumPy's argument errors
    if value.size == 0:
        return _empty(value)
    if rcond is None:
        rcond = 1e-15 if rtol is np._NoValue else (max(np.shape(A)[-2:]) * np.finfo(np.float64).eps if rtol is None
                                                   else rtol)  # fmt: skip
    return pseudo_inverse(a, rcond)[0]


def fixed_mask(mask):
    """The concrete value of a traced boolean array, with one guard that keeps the tape to inputs where it
    is the same (a different mask traces again): for a rank, an integer NumPy returns."""
    value = np.asarray(concrete(mask), dtype=bool)
    changed = np.sum(np.not_equal(mask, value))
    bool(changed == 0.0)  # the guard
    return value


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    """``numpy.linalg.matrix_rank``: the count of singular values above the tolerance (NumPy's defaults),
    an integer; the tape holds a guard that re-traces where the count would change."""
    if recorder_of((A,)) is None:
        return np.linalg.matrix_rank(A, tol=tol, hermitian=hermitian, rtol=rtol)
    X = fnp._float(A)
    value = np.linalg.matrix_rank(X, tol=tol, hermitian=hermitian, rtol=rtol)  # NumPy's errors
    if np.ndim(X) < 2 or np.size(X) == 0:
        return value
    s = svd(A, compute_uv=False)
    if tol is None:
        rtol = max(np.shape(X)[-2:]) * np.finfo(np.float64).eps if rtol is None else np.asarray(rtol)[..., None]
        tol = np.max(s, axis=-1, keepdims=True) * rtol
    else:
        tol = np.asarray(tol)[..., None]
    return np.count_nonzero(fixed_mask(np.greater(s, tol)), axis=-1)


def least_squares(a, b, rcond):
    """(x, residuals, rank, s) of min |A x - b| for A (M, N): x = pinv(A) b over the singular values above
    rcond · max(s); the residuals |b - A x|² per column where rank = N < M, else an empty array.  The rank is
    an integer: a guard re-traces where it would change."""
    M, N = np.shape(concrete(a))
    vector = np.ndim(concrete(b)) == 1
    B = fnp.reshape(b, (-1, 1)) if vector else b
    pinv_a, s, cutoff = pseudo_inverse(a, rcond)
    x = fnp.matmul(pinv_a, B)
    rank = int(np.count_nonzero(fixed_mask(np.greater(s, cutoff))))
    if rank == N and M > N:
        residuals = np.sum(np.square(B - fnp.matmul(a, x)), axis=0)
    else:
        residuals = _empty(np.zeros(0))
    return (fnp.reshape(x, (-1,)) if vector else x), residuals, rank, s


def lstsq(a, b, rcond=None):
    """``numpy.linalg.lstsq``: (x, residuals, rank, s), ``least_squares`` with NumPy's default rcond,
    eps · max(M, N)."""
    if recorder_of((a, b)) is None:
        return np.linalg.lstsq(a, b, rcond=rcond)
    fnp._check_complex((a, b))
    A, B = fnp._float(a), fnp._float(b)
    x_value, resid_value, rank_value, s_value = np.linalg.lstsq(A, B, rcond=rcond)  # NumPy's errors
    if x_value.size == 0 or np.size(A) == 0:
        return _empty(x_value), _empty(resid_value), rank_value, _empty(s_value)
    rcond = np.finfo(np.float64).eps * max(np.shape(A)) if rcond is None else rcond
    return least_squares(a, b, rcond)


def qr(a, mode="reduced"):
    """``numpy.linalg.qr``: (Q, R) with A = Q R ('reduced': Q (..., n, k), R (..., k, m), k = min(n, m);
    'complete': Q (..., n, n), R (..., n, m)), or R alone ('r'), by LAPACK's ``dgeqrf`` and ``dorgqr`` as
    NumPy and JAX (R's diagonal may be negative; a complete Q's last n - k columns are the basis of the
    complement that the Householder reflectors give, differentiated as JAX does).  The derivatives need A's
    first k columns independent (and, for a complete Q of a tall A, no eigenvalue 1 of Q's leading k x k block)."""
    if recorder_of((a,)) is None:
        return np.linalg.qr(a, mode=mode)
    A = _matrix_operand("qr", a)
    value = np.linalg.qr(A, mode=mode)  # NumPy's errors: an unknown mode
    n, m = np.shape(A)[-2:]
    if mode == "raw":
        raise NotImplementedError(
            "numpy.linalg.qr(mode='raw'): the Householder reflectors have no derivative in fasttape (nor in JAX). "
            "Use mode='reduced' (Q, R) or mode='r'."
        )
    if np.size(A) == 0:
        return type(value)(*(_empty(v) for v in value)) if mode != "r" else _empty(value)
    rec = recorder_of((a,))
    complete = mode == "complete" and n > m  # Q (n x n): its last n - m columns complete the first m's basis
    Q, R = factor.qr_values(concrete(a), complete)
    k, q = min(n, m), Q.shape[-1]
    batch = Q.shape[:-2]
    packed = np.concatenate([Q.reshape(batch + (n * q,)), R.reshape(batch + (k * m,))], axis=-1)
    out = rec.linalg(K.OP_QR, (a,), packed, n=n, m=m, mode=factor.COMPLETE if complete else 0)
    R_out = fnp.reshape(out[..., n * q :], R.shape)
    if complete:  # NumPy's R is (n x m): zeros below the first m rows
        R_out = fnp.concatenate([R_out, np.zeros(batch + (n - k, m))], axis=-2)
    if mode == "r":
        return R_out
    return type(value)(fnp.reshape(out[..., : n * q], Q.shape), R_out)


FUNCTIONS = {
    np.linalg.norm: norm,
    np.linalg.solve: solve,
    np.linalg.inv: inv,
    np.linalg.slogdet: slogdet,
    np.linalg.det: det,
    np.linalg.cholesky: cholesky,
    np.linalg.eigh: eigh,
    np.linalg.eigvalsh: eigvalsh,
    np.linalg.matrix_power: matrix_power,
    np.linalg.multi_dot: multi_dot,
    np.linalg.svd: svd,
    np.linalg.svdvals: svdvals,
    np.linalg.cond: cond,
    np.linalg.pinv: pinv,
    np.linalg.matrix_rank: matrix_rank,
    np.linalg.lstsq: lstsq,
    np.linalg.qr: qr,
}
fnp.FUNCTIONS.update(FUNCTIONS)
