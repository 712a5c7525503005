"""``numpy.linalg`` on traced arrays: ``solve``, ``inv``, ``slogdet``, ``det``, ``cholesky``, ``eigh``,
``eigvalsh``, ``matrix_power`` and ``multi_dot``.

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
from .tracer import concrete, recorder_of


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


FUNCTIONS = {
    np.linalg.solve: solve,
    np.linalg.inv: inv,
    np.linalg.slogdet: slogdet,
    np.linalg.det: det,
    np.linalg.cholesky: cholesky,
    np.linalg.eigh: eigh,
    np.linalg.eigvalsh: eigvalsh,
    np.linalg.matrix_power: matrix_power,
    np.linalg.multi_dot: multi_dot,
}
fnp.FUNCTIONS.update(FUNCTIONS)
