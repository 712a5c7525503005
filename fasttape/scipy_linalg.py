"""``scipy.linalg`` on traced arrays: triangular and Cholesky solves, ``cholesky``, ``cho_factor``,
``solve``, ``eigh``, ``eigvalsh``, ``svd``, ``svdvals``, ``qr``, ``pinv``, ``lstsq``, ``lu_factor``,
``lu_solve``, ``lu``, ``expm`` and ``expm_frechet``.

SciPy's functions convert their operands with ``np.asarray``, which a tracer refuses, and they
are not dispatched through NumPy's protocols.  While a function is traced, fasttape therefore
puts these functions in place of SciPy's in the ``scipy.linalg`` module (``intercepting``), so
``scipy.linalg.cho_solve(...)`` or ``sla.cho_solve(...)`` records onto the tape; on arrays that
are not traced each calls SciPy's own.  A name imported before the trace (``from scipy.linalg
import cho_solve``) still refers to SciPy's function, so call these (``fasttape.scipy_linalg``)
instead there; the error says so.

As in SciPy (and ``jax.scipy.linalg``), a Cholesky factor reads one triangle of its operand (the
upper one by default) and a triangular solve reads its triangle; operands may carry batch axes
(..., n, n), and a right-hand side is a vector when it is 1-D or has one axis fewer than the matrix
(as in JAX).
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from . import lapack, linalg
from . import numpy as fnp
from .families import factor
from .families.factor import LOWER, TRANSPOSED, UNIT
from .interception import Interception
from .linalg import _empty
from .linalg import solve as _general_solve
from .recorder import concrete, recorder_of


def _square(name, a):
    shape = np.shape(concrete(a))
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"scipy.linalg.{name}: expected a square matrix (..., n, n), got shape {shape}")
    return shape[-1]


def _triangle_factor(a, lower):
    """The lower Cholesky factor of the matrix whose ``lower`` (else upper) triangle ``a`` holds."""
    rec = recorder_of((a,))
    source = a if lower else fnp.swapaxes(a, -1, -2)  # the upper triangle of A is the lower one of Aᵀ
    if np.size(concrete(source)) == 0:
        return _empty(concrete(source))
    return rec.linalg(K.OP_CHOLESKY, (source,), factor.cholesky_values(concrete(source)))


def _solve_triangular(a, b, lower, transposed, unit, name):
    """X with op(A) X = B on A's triangle (its diagonal ones with ``unit``); B is a vector when it is 1-D or
    has one axis fewer than A (as in JAX).  The value is LAPACK's, as the kernels compute it."""
    rec = recorder_of((a, b))
    n = _square(name, a)
    A = np.asarray(fnp._float(a), dtype=np.float64)
    B = np.asarray(fnp._float(b), dtype=np.float64)
    vector = B.ndim == 1 or B.ndim == A.ndim - 1
    if B.ndim < 1 or (B.shape[-1] if vector else B.shape[-2]) != n:
        raise ValueError(f"{name}: a right-hand side of shape {B.shape} does not fit the matrix of shape {A.shape}")
    R = B[..., None] if vector else B
    batch = np.broadcast_shapes(A.shape[:-2], R.shape[:-2])
    m = R.shape[-1]
    matrices = np.broadcast_to(A, batch + (n, n)).reshape(-1, n, n)
    sides = np.broadcast_to(R, batch + (n, m)).reshape(-1, n, m)
    value = np.empty(sides.shape)
    for t in range(len(matrices) if value.size else 0):
        T = matrices[t].copy()
        if unit:
            np.fill_diagonal(T, 1.0)
        value[t], ok = lapack.solve_triangular(T, sides[t], lower, transposed)
        if not ok:
            raise np.linalg.LinAlgError(f"{name}: singular matrix, a zero on the diagonal (batch element {t})")
    value = value.reshape(batch + (n, m))
    if value.size == 0:
        return _empty(value[..., 0] if vector else value)
    rhs = fnp.reshape(b, B.shape + (1,)) if vector else b
    mode = (LOWER if lower else 0) | (TRANSPOSED if transposed else 0) | (UNIT if unit else 0)
    mode |= factor.CALLERS.index(name) << factor.CALLER_SHIFT  # the function a singular matrix's error names
    out = rec.linalg(K.OP_TRISOLVE, (a, rhs), value, m=m, mode=mode)
    return fnp.reshape(out, value.shape[:-1]) if vector else out


def _transposed(trans):
    if trans in (0, "N"):
        return False
    if trans in (1, 2, "T", "C"):
        return True
    raise ValueError(f"scipy.linalg.solve_triangular: trans={trans!r}; use 0 / 'N', 1 / 'T' or 2 / 'C'")


# --------------------------------------------------------------------------
# the functions, with SciPy's signatures
# --------------------------------------------------------------------------
def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False, check_finite=True):
    """``scipy.linalg.solve_triangular``: X with op(A) X = B, A read from its lower or upper triangle."""
    if recorder_of((a, b)) is None:
        return _original("solve_triangular")(a, b, trans=trans, lower=lower, unit_diagonal=unit_diagonal,
                                            overwrite_b=overwrite_b, check_finite=check_finite)  # fmt: skip
    fnp._check_complex((a, b))
    return _solve_triangular(
        a, b, bool(lower), _transposed(trans), bool(unit_diagonal), "scipy.linalg.solve_triangular"
    )


def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """``scipy.linalg.cholesky``: U (Uᵀ U = A, from A's upper triangle) or, with ``lower``, L (from its lower
    triangle)."""
    if recorder_of((a,)) is None:
        return _original("cholesky")(a, lower=lower, overwrite_a=overwrite_a, check_finite=check_finite)
    fnp._check_complex((a,))
    _square("cholesky", a)
    L = _triangle_factor(a, bool(lower))
    return L if lower else fnp.swapaxes(L, -1, -2)


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """``scipy.linalg.cho_factor``: (the factor, ``lower``); the other triangle holds zeros (SciPy leaves
    arbitrary values there, which ``cho_solve`` never reads)."""
    if recorder_of((a,)) is None:
        return _original("cho_factor")(a, lower=lower, overwrite_a=overwrite_a, check_finite=check_finite)
    return cholesky(a, lower=lower), bool(lower)


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """``scipy.linalg.cho_solve``: X with A X = B from ``cho_factor``'s (factor, lower): two triangular
    solves, each reading the factor's triangle."""
    c, lower = c_and_lower
    if recorder_of((c, b)) is None:
        return _original("cho_solve")(c_and_lower, b, overwrite_b=overwrite_b, check_finite=check_finite)
    fnp._check_complex((c, b))
    name = "scipy.linalg.cho_solve"
    if lower:  # L Lᵀ X = B
        return _solve_triangular(c, _solve_triangular(c, b, True, False, False, name), True, True, False, name)
    # Uᵀ U X = B
    return _solve_triangular(c, _solve_triangular(c, b, False, True, False, name), False, False, False, name)


def _eigh(name, a, b, lower, subset_by_index, subset_by_value):
    if b is not None or subset_by_index is not None or subset_by_value is not None:
        raise NotImplementedError(
            f"scipy.linalg.{name} on traced arrays solves the standard problem for every eigenvalue: the generalized "
            "problem (b) and subsets are not supported; slice the result (w[k:], V[:, k:]) for a subset."
        )
    fnp._check_complex((a,))
    _square(name, a)
    return linalg.eigen_lower(a if lower else fnp.swapaxes(a, -1, -2))


def eigh(a, b=None, *, lower=True, eigvals_only=False, overwrite_a=False, overwrite_b=False, type=1,
         check_finite=True, subset_by_index=None, subset_by_value=None, driver=None):  # noqa: A002  # fmt: skip
    """``scipy.linalg.eigh``: (w, V) (or w with ``eigvals_only``) of the symmetric matrix held in A's
    ``lower`` (else upper) triangle."""
    if recorder_of((a,)) is None:
        options = {"subset_by_index": subset_by_index, "subset_by_value": subset_by_value, "driver": driver}
        return _original("eigh")(a, b, lower=lower, eigvals_only=eigvals_only, overwrite_a=overwrite_a,
                                overwrite_b=overwrite_b, type=type, check_finite=check_finite, **options)  # fmt: skip
    w, V = _eigh("eigh", a, b, lower, subset_by_index, subset_by_value)
    return w if eigvals_only else (w, V)


def eigvalsh(a, b=None, *, lower=True, overwrite_a=False, overwrite_b=False, type=1, check_finite=True,
             subset_by_index=None, subset_by_value=None, driver=None):  # noqa: A002  # fmt: skip
    """``scipy.linalg.eigvalsh``: the eigenvalues of the symmetric matrix held in A's ``lower`` (else upper)
    triangle."""
    if recorder_of((a,)) is None:
        return _original("eigvalsh")(a, b, lower=lower, overwrite_a=overwrite_a, overwrite_b=overwrite_b,
                                    type=type, check_finite=check_finite, subset_by_index=subset_by_index,
                                    subset_by_value=subset_by_value, driver=driver)  # fmt: skip
    return _eigh("eigvalsh", a, b, lower, subset_by_index, subset_by_value)[0]


_POSITIVE = ("pos", "positive definite")
_GENERAL = ("gen", "general", "sym", "symmetric", "her", "hermitian")
_TRIANGULAR = {"lower triangular": True, "upper triangular": False}


def solve(a, b, lower=False, overwrite_a=False, overwrite_b=False, check_finite=True, assume_a=None,
          transposed=False):  # fmt: skip
    """``scipy.linalg.solve``: with ``assume_a='pos'`` by the Cholesky factor of A's ``lower`` (else upper)
    triangle, with 'lower triangular' / 'upper triangular' by a triangular solve, otherwise (general,
    symmetric) by LU as ``numpy.linalg.solve`` (as ``jax.scipy.linalg.solve`` does, the whole of A is read)."""
    if recorder_of((a, b)) is None:
        return _original("solve")(a, b, lower=lower, overwrite_a=overwrite_a, overwrite_b=overwrite_b,
                                 check_finite=check_finite, assume_a=assume_a, transposed=transposed)  # fmt: skip
    fnp._check_complex((a, b))
    kind = "gen" if assume_a is None else str(assume_a).lower()
    name = "scipy.linalg.solve"
    if kind in _POSITIVE:
        L = _triangle_factor(a, bool(lower))  # Aᵀ = A: transposed changes nothing
        return _solve_triangular(L, _solve_triangular(L, b, True, False, False, name), True, True, False, name)
    if kind in _TRIANGULAR:
        return _solve_triangular(a, b, _TRIANGULAR[kind], bool(transposed), False, name)
    if kind not in _GENERAL:
        raise NotImplementedError(
            f"scipy.linalg.solve with assume_a={assume_a!r} is not supported on traced arrays; use assume_a='gen' "
            "(the same solution, by LU), 'pos', 'lower triangular' or 'upper triangular'."
        )
    A = fnp.swapaxes(a, -1, -2) if transposed else a
    ndim = np.ndim(concrete(b))
    if 1 < ndim == np.ndim(concrete(a)) - 1:  # batched vectors: one axis fewer than the matrices
        return fnp.reshape(_general_solve(A, fnp.expand_dims(b, -1)), np.shape(concrete(b)))
    return _general_solve(A, b)


def svd(a, full_matrices=True, compute_uv=True, overwrite_a=False, check_finite=True, lapack_driver="gesdd"):
    """``scipy.linalg.svd``: (U, s, Vh), or s with ``compute_uv=False``; thin (``full_matrices=False``, or a
    square A) as ``numpy.linalg.svd``.  Always by LAPACK's ``gesdd`` (with ``lapack_driver='gesvd'`` the same
    decomposition up to the signs of singular vector pairs)."""
    if recorder_of((a,)) is None:
        return _original("svd")(a, full_matrices=full_matrices, compute_uv=compute_uv, overwrite_a=overwrite_a,
                               check_finite=check_finite, lapack_driver=lapack_driver)  # fmt: skip
    if lapack_driver not in ("gesdd", "gesvd"):
        raise ValueError(f'lapack_driver must be "gesdd" or "gesvd", not "{lapack_driver}"')
    _matrix("svd", a)
    if not compute_uv:
        return linalg.svd(a, compute_uv=False)
    U, s, Vt = linalg.svd(a, full_matrices=full_matrices)
    return U, s, Vt


def svdvals(a, overwrite_a=False, check_finite=True):
    """``scipy.linalg.svdvals``: the singular values, descending."""
    if recorder_of((a,)) is None:
        return _original("svdvals")(a, overwrite_a=overwrite_a, check_finite=check_finite)
    _matrix("svdvals", a)
    return linalg.svd(a, compute_uv=False)


def qr(a, overwrite_a=False, lwork=None, mode="full", pivoting=False, check_finite=True):
    """``scipy.linalg.qr``: (Q, R) ('full', 'economic'), or (R,) ('r'), as
    ``numpy.linalg.qr``."""
    if recorder_of((a,)) is None:
        return _original("qr")(a, overwrite_a=overwrite_a, lwork=lwork, mode=mode, pivoting=pivoting,
                              check_finite=check_finite)  # fmt: skip
    if mode not in ("full", "r", "economic", "raw"):
        raise ValueError("Mode argument should be one of ['full', 'r', 'economic', 'raw']")
    if pivoting:
        raise NotImplementedError(
            "scipy.linalg.qr(pivoting=True): the column permutation depends on the values, which a tape cannot "
            "follow; use pivoting=False (and permute the columns yourself if you need a fixed order)."
        )
    n, m = _matrix("qr", a)
    if mode == "r":
        R = linalg.qr(a, mode="r")
        if n > m:  # SciPy's R for mode 'r' is (M, N), zeros below the first N rows
            R = fnp.concatenate([R, np.zeros(np.shape(concrete(R))[:-2] + (n - m, m))], axis=-2)
        return (R,) if np.ndim(concrete(a)) == 2 else R  # as SciPy: a tuple for one matrix, an array for a batch
    return tuple(linalg.qr(a, mode={"full": "complete", "economic": "reduced", "raw": "raw"}[mode]))


def pinv(a, *, atol=None, rtol=None, return_rank=False, check_finite=True):
    """``scipy.linalg.pinv``: V diag(1/s) Uᵀ over the singular values above atol + rtol · max(s) (SciPy's
    defaults: atol 0, rtol max(M, N) · eps); with ``return_rank``, the rank too (an integer: a guard
    re-traces where it would change)."""
    if recorder_of((a,)) is None:
        return _original("pinv")(a, atol=atol, rtol=rtol, return_rank=return_rank, check_finite=check_finite)
    fnp._check_complex((a,))
    shape = _matrix("pinv", a)
    atol = 0.0 if atol is None else atol
    rtol = max(shape) * np.finfo(np.float64).eps if rtol is None else rtol
    if atol < 0.0 or rtol < 0.0:
        raise ValueError("atol and rtol values must be positive.")
    if 0 in shape:
        return _original("pinv")(concrete(a), atol=atol, rtol=rtol, return_rank=return_rank)
    B, s, cutoff = linalg.pseudo_inverse(a, rtol, atol)
    if return_rank:
        rank = np.count_nonzero(linalg.fixed_mask(np.greater(s, cutoff)), axis=-1)
        return B, int(rank) if np.ndim(rank) == 0 else rank
    return B


def lstsq(a, b, cond=None, overwrite_a=False, overwrite_b=False, check_finite=True, lapack_driver=None):
    """``scipy.linalg.lstsq``: (x, residues, rank, s), as ``numpy.linalg.lstsq`` with SciPy's default cutoff
    (eps · max(s)) and a vector's residue a number; ``lapack_driver='gelsy'`` gives s as None, as SciPy."""
    if recorder_of((a, b)) is None:
        return _original("lstsq")(a, b, cond=cond, overwrite_a=overwrite_a, overwrite_b=overwrite_b,
                                 check_finite=check_finite, lapack_driver=lapack_driver)  # fmt: skip
    fnp._check_complex((a, b))
    _matrix("lstsq", a, batched=False)
    value = _original("lstsq")(fnp._float(a), fnp._float(b), cond=cond, lapack_driver=lapack_driver)  # SciPy's errors
    if np.size(concrete(a)) == 0 or np.size(value[0]) == 0:
        return tuple(_empty(v) if isinstance(v, np.ndarray) else v for v in value)
    x, residues, rank, s = linalg.least_squares(a, b, np.finfo(np.float64).eps if cond is None else cond)
    if np.ndim(concrete(b)) == 1 and np.size(concrete(residues)) == 1:
        residues = fnp.reshape(residues, ())
    return x, residues, rank, None if lapack_driver == "gelsy" else s


def _matrix(name, a, batched=True):
    """The shape (M, N) of the matrices of an operand (..., M, N) (SciPy's decompositions take batch axes;
    ``lstsq`` is supported on one matrix only)."""
    shape = np.shape(concrete(a))
    if len(shape) < 2:
        raise ValueError(f"scipy.linalg.{name}: expected a matrix (..., M, N), got shape {shape}")
    if len(shape) > 2 and not batched:
        raise NotImplementedError(
            f"scipy.linalg.{name} on a batch of matrices {shape} is supported on one matrix (M, N) at a time; call it "
            "per matrix, or use pinv(a) @ b, which takes batch axes."
        )
    return shape[-2:]


# --------------------------------------------------------------------------
# LU with partial pivoting: the pivots are data of the sweep
# --------------------------------------------------------------------------
def _lu_square(name, a):
    fnp._check_complex((a,))
    shape = np.shape(concrete(a))
    if len(shape) < 2:
        raise ValueError(f"scipy.linalg.{name}: expected a matrix (..., M, N), got shape {shape}")
    if shape[-1] != shape[-2]:
        raise NotImplementedError(
            f"scipy.linalg.{name} of a non-square {shape[-2]}x{shape[-1]} matrix is not supported on traced arrays "
            "(only square factors solve); use scipy.linalg.qr or numpy.linalg.lstsq for a rectangular one."
        )
    return shape[-1]


def _lu_traced(a):
    """(lu, piv) of A (..., n, n) by one ``lu`` instruction: piv (..., n) holds LAPACK's row interchanges,
    0-based, as a traced float array that ``lu_solve`` reads during the sweep."""
    rec = recorder_of((a,))
    n = np.shape(concrete(a))[-1]
    LU, piv = factor.lu_values(concrete(a))
    out = rec.linalg(K.OP_LU, (a,), np.concatenate([LU.reshape(piv.shape[:-1] + (n * n,)), piv], axis=-1))
    return fnp.reshape(out[..., : n * n], LU.shape), out[..., n * n :]


def _permuted(piv, b, inverse):
    """Pᵀ B (or P B with ``inverse``) for LAPACK's pivots ``piv`` (..., n) and B (..., n, m), by one ``permute``
    instruction that reads the pivots during the sweep."""
    rec = recorder_of((piv, b))
    n = np.shape(concrete(piv))[-1]
    batch = np.shape(concrete(piv))[:-1]
    value = factor.swapped_values(concrete(piv), np.broadcast_to(concrete(b), np.broadcast_shapes(
        batch + (1, 1), np.shape(concrete(b)))), inverse)  # fmt: skip
    rows = fnp.reshape(piv, batch + (1, n))
    return rec.linalg(K.OP_PERMUTE, (rows, b), value, grads=(False, True), m=np.shape(concrete(b))[-1],
                      mode=factor.INVERSE if inverse else 0)  # fmt: skip


def lu_factor(a, overwrite_a=False, check_finite=True):
    """``scipy.linalg.lu_factor``: (lu, piv), A = P L U, as SciPy's (LAPACK's ``getrf``); piv is a traced
    float array of the row interchanges (their values SciPy's integers), for ``lu_solve``."""
    if recorder_of((a,)) is None:
        return _original("lu_factor")(a, overwrite_a=overwrite_a, check_finite=check_finite)
    _lu_square("lu_factor", a)
    if np.size(concrete(a)) == 0:
        return _original("lu_factor")(fnp._float(a))
    return _lu_traced(a)


def lu_solve(lu_and_piv, b, trans=0, overwrite_b=False, check_finite=True):
    """``scipy.linalg.lu_solve``: X with A X = B (``trans`` 0), or Aᵀ X = B (1 or 2), from lu_factor's
    (lu, piv): the interchanges, then the two triangular solves (or the reverse).  B is a vector when it is
    1-D or has one axis fewer than lu (as in JAX)."""
    lu, piv = lu_and_piv
    if recorder_of((lu, piv, b)) is None:
        return _original("lu_solve")(lu_and_piv, b, trans=trans, overwrite_b=overwrite_b, check_finite=check_finite)
    fnp._check_complex((lu, b))
    name = "scipy.linalg.lu_solve"
    n = _square("lu_solve", lu)
    transposed = {0: False, 1: True, 2: True, "N": False, "T": True, "C": True}.get(trans)
    if transposed is None:
        raise ValueError(f"scipy.linalg.lu_solve: trans must be 0, 1, 2, 'N', 'T' or 'C', not {trans!r}")
    if np.shape(concrete(piv))[-1:] != (n,):
        raise ValueError(f"scipy.linalg.lu_solve: pivots of shape {np.shape(concrete(piv))} do not fit {n}x{n} factors")
    ndim = np.ndim(concrete(b))
    vector = ndim == 1 or ndim == np.ndim(concrete(lu)) - 1
    if np.shape(concrete(b))[-1 if vector else -2] != n:
        raise ValueError(f"scipy.linalg.lu_solve: right-hand side of shape {np.shape(concrete(b))} does not fit "
                         f"factors of shape {np.shape(concrete(lu))}")  # fmt: skip
    B = fnp.expand_dims(b, -1) if vector else b
    if not transposed:  # L U X = Pᵀ B
        Y = _solve_triangular(lu, _permuted(piv, B, False), True, False, True, name)
        X = _solve_triangular(lu, Y, False, False, False, name)
    else:  # Uᵀ Lᵀ Pᵀ X = B
        Y = _solve_triangular(lu, _solve_triangular(lu, B, False, True, False, name), True, True, True, name)
        X = _permuted(piv, Y, True)
    return fnp.reshape(X, np.shape(concrete(X))[:-1]) if vector else X


def lu(a, permute_l=False, overwrite_a=False, check_finite=True, p_indices=False):
    """``scipy.linalg.lu``: (P, L, U) with A = P L U, or (P L, U) with ``permute_l``, P built during the
    sweep from the pivots."""
    if recorder_of((a,)) is None:
        return _original("lu")(a, permute_l=permute_l, overwrite_a=overwrite_a, check_finite=check_finite,
                              p_indices=p_indices)  # fmt: skip
    if p_indices:
        raise NotImplementedError(
            "scipy.linalg.lu(p_indices=True): the row indices are integers that depend on the matrix, which a "
            "tape holds as floats and cannot index with; use the permutation matrix P (p_indices=False)."
        )
    n = _lu_square("lu", a)
    if np.size(concrete(a)) == 0:
        return _original("lu")(fnp._float(a), permute_l=permute_l)
    LU, piv = _lu_traced(a)
    L = fnp.tril(LU, -1) + np.eye(n)
    U = fnp.triu(LU)
    if permute_l:
        return _permuted(piv, L, True), U
    return _permuted(piv, np.broadcast_to(np.eye(n), np.shape(concrete(LU))), True), L, U


# --------------------------------------------------------------------------
# the matrix exponential: scaling and squaring with Padé approximants, recorded as products and one solve
# --------------------------------------------------------------------------
# Higham (2005), "The scaling and squaring method for the matrix exponential revisited": the numerator
# coefficients b_k of the degree-m Padé approximant (the denominator's are (-1)^k b_k), and the largest 1-norm
# for which degrees 3, 5, 7 and 9 are accurate to double precision; above it degree 13 on A / 2^s
_PADE = {
    3: (120.0, 60.0, 12.0, 1.0),
    5: (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0),
    7: (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0),
    9: (17643225600.0, 8821612800.0, 2075673600.0, 302702400.0, 30270240.0, 2162160.0, 110880.0, 3960.0, 90.0,
        1.0),
    13: (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
         10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0),
}  # fmt: skip
_THETA = ((3, 1.495585217958292e-2), (5, 2.539398330063230e-1), (7, 9.504178996162932e-1), (9, 2.097847961257068))
_THETA_13 = 5.371920351148152


def _pade(A, m):
    """(U, V), the odd and even parts of the degree-m Padé numerator: p_m(A) = V + U, q_m(A) = V - U."""
    b = _PADE[m]
    eye = np.eye(np.shape(concrete(A))[-1])
    A2 = A @ A
    if m < 13:
        powers = [eye, A2]
        while len(powers) <= m // 2:
            powers.append(powers[-1] @ A2)
        U = A @ sum(b[2 * j + 1] * powers[j] for j in range(m // 2 + 1))
        V = sum(b[2 * j] * powers[j] for j in range(m // 2 + 1))
        return U, V
    A4 = A2 @ A2
    A6 = A4 @ A2
    U = A @ (A6 @ (b[13] * A6 + b[11] * A4 + b[9] * A2) + b[7] * A6 + b[5] * A4 + b[3] * A2 + b[1] * eye)
    V = A6 @ (b[12] * A6 + b[10] * A4 + b[8] * A2) + b[6] * A6 + b[4] * A4 + b[2] * A2 + b[0] * eye
    return U, V


def matrix_exponential(A):
    """exp(A) of a traced A (..., n, n) by Higham's scaling and squaring: the Padé degree and the number of
    squarings s follow the largest 1-norm in the batch, each choice held by guards (an input that needs
    another traces again); exp(A) = r_m(A / 2^s)^(2^s), r_m = q_m⁻¹ p_m by one LU solve.  Every derivative,
    to any order, is the approximant's: the Fréchet derivative (the block-matrix one, exp([[A, E], [0, A]])'s
    upper-right block) to rounding, as JAX's."""
    norm = np.max(np.sum(np.abs(A), axis=-2))  # the 1-norm (largest column sum), over the whole batch
    if not np.isfinite(norm):  # NaN or inf anywhere: NaN everywhere, as JAX
        return A * np.nan
    for m, theta in _THETA:
        if norm <= theta:
            U, V = _pade(A, m)
            return linalg.solve(V - U, V + U)
    s = max(0, int(np.ceil(np.log2(float(concrete(norm)) / _THETA_13))))
    if s > 0:  # the guards that keep s: 2^(s-1) θ13 < |A|₁ <= 2^s θ13
        bool(norm > _THETA_13 * 2.0 ** (s - 1))
    bool(norm <= _THETA_13 * 2.0**s)
    U, V = _pade(A * 2.0**-s, 13)
    R = linalg.solve(V - U, V + U)
    for _ in range(s):
        R = R @ R
    return R


def expm(A):
    """``scipy.linalg.expm``: the matrix exponential of A (..., n, n) (``matrix_exponential``)."""
    if recorder_of((A,)) is None:
        return _original("expm")(A)
    fnp._check_complex((A,))
    _square("expm", A)
    if np.size(concrete(A)) == 0:
        return _empty(concrete(A))
    return matrix_exponential(A)


def expm_frechet(A, E, method=None, compute_expm=True, check_finite=True):
    """``scipy.linalg.expm_frechet``: (exp(A), L(A, E)), or L(A, E) without ``compute_expm``: the Fréchet
    derivative of exp at A along E, the upper-right block of exp([[A, E], [0, A]]) (SciPy's 'blockEnlarge')."""
    if recorder_of((A, E)) is None:
        return _original("expm_frechet")(A, E, method=method, compute_expm=compute_expm, check_finite=check_finite)
    fnp._check_complex((A, E))
    n = _square("expm_frechet", A)
    if np.shape(concrete(E)) != np.shape(concrete(A)):
        raise ValueError(f"scipy.linalg.expm_frechet: E of shape {np.shape(concrete(E))} must have A's shape "
                         f"{np.shape(concrete(A))}")  # fmt: skip
    if method not in (None, "SPS", "blockEnlarge"):
        raise ValueError(f"scipy.linalg.expm_frechet: unknown method {method!r}")
    zero = np.zeros(np.shape(concrete(A)))
    block = fnp.concatenate([fnp.concatenate([A, E], axis=-1), fnp.concatenate([zero, A], axis=-1)], axis=-2)
    big = matrix_exponential(block)
    frechet = big[..., :n, n:]
    return (big[..., :n, :n], frechet) if compute_expm else frechet


# --------------------------------------------------------------------------
# interception while tracing
# --------------------------------------------------------------------------
FUNCTIONS = {
    "solve_triangular": solve_triangular,
    "cholesky": cholesky,
    "cho_factor": cho_factor,
    "cho_solve": cho_solve,
    "solve": solve,
    "eigh": eigh,
    "eigvalsh": eigvalsh,
    "svd": svd,
    "svdvals": svdvals,
    "qr": qr,
    "pinv": pinv,
    "lstsq": lstsq,
    "lu_factor": lu_factor,
    "lu_solve": lu_solve,
    "lu": lu,
    "expm": expm,
    "expm_frechet": expm_frechet,
}
INTERCEPTION = Interception("scipy.linalg", FUNCTIONS)
intercepting = INTERCEPTION.active  # while a function is traced, scipy.linalg's functions above are these
_original = INTERCEPTION.original
