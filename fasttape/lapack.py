"""LAPACK for the linear-algebra families: SciPy's Fortran routines, called from compiled kernels by name.

Each routine's address comes from ``scipy.linalg.cython_lapack`` and is registered with LLVM
under a ``fasttape_`` symbol when this module is imported, so compiled code refers to the
routine by name: the kernels stay cacheable on disk (a ctypes pointer baked into the code
would not be), exactly as Numba's own ``np.linalg`` reaches LAPACK.

Two layers:

* the raw routines (``dpotrf``, ``dsyevd``, ..., and BLAS's ``dtrsm``): intrinsics taking their own arguments
  (characters as their codes, integers, arrays), every one passed by reference, and
  returning ``info``;
* the matrix routines the rules use (``cholesky_lower``, ``solve_triangular`` and ``_right``, ``eigh``,
  ``svd``, ``qr``, ``lu``),
  plain Python functions on row-major 2-D arrays (NumPy and SciPy, for the executor tier)
  with Numba implementations on the raw routines (for the compiled kernels), so that a rule
  written once with ``numba.extending.register_jitable`` runs in both tiers.

The arrays are C-order; LAPACK reads them column-major, so a row-major matrix is its
transpose there, and the matrix routines account for that.
"""

from __future__ import annotations

import llvmlite.binding as ll
import numba
import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack
from llvmlite import ir
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic, overload, register_jitable

ROUTINES = ("dgetrf", "dgetrs", "dpotrf", "dsyevd", "dgesdd", "dgeqrf", "dorgqr")
BLAS_ROUTINES = ("dtrsm", "dtrmm")
for _name in ROUTINES:
    ll.add_symbol(f"fasttape_{_name}", get_cython_function_address("scipy.linalg.cython_lapack", _name))
for _name in BLAS_ROUTINES:
    ll.add_symbol(f"fasttape_{_name}", get_cython_function_address("scipy.linalg.cython_blas", _name))

_BYTE_POINTER = ir.IntType(8).as_pointer()


def _reference(context, builder, kind, value_type, value):
    """A pointer to the argument as Fortran takes it: an array's data, or a slot holding an INTEGER
    (int32), a DOUBLE PRECISION or a CHARACTER (one byte, from its code)."""
    if kind == "a":
        array = context.make_array(value_type)(context, builder, value)
        return builder.bitcast(array.data, _BYTE_POINTER)
    target = {"i": numba.types.int32, "d": numba.types.float64, "c": numba.types.int8}[kind]
    slot = cgutils.alloca_once_value(builder, context.cast(builder, value, value_type, target))
    return builder.bitcast(slot, _BYTE_POINTER)


def _fortran(routine, kinds, info=True):
    """The codegen of an intrinsic calling ``routine`` with one argument per letter of ``kinds``
    ('c' character code, 'i' integer, 'd' double, 'a' array), then INFO, which the call returns
    (0 for a BLAS routine, which has none)."""

    def codegen(context, builder, signature, args):
        pointers = [_reference(context, builder, k, t, v) for k, t, v in zip(kinds, signature.args, args)]
        status = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
        if info:
            pointers.append(builder.bitcast(status, _BYTE_POINTER))
        fnty = ir.FunctionType(ir.VoidType(), [_BYTE_POINTER] * len(pointers))
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"fasttape_{routine}")
        builder.call(fn, pointers)
        return builder.load(status)

    return codegen


# --------------------------------------------------------------------------
# raw routines (LAPACK's argument lists without INFO)
# --------------------------------------------------------------------------
@intrinsic
def dgetrf(typingctx, m, n, a, lda, ipiv):
    return numba.types.int32(m, n, a, lda, ipiv), _fortran("dgetrf", "iiaia")


@intrinsic
def dgetrs(typingctx, trans, n, nrhs, a, lda, ipiv, b, ldb):
    return numba.types.int32(trans, n, nrhs, a, lda, ipiv, b, ldb), _fortran("dgetrs", "ciiaiaai")


@intrinsic
def dpotrf(typingctx, uplo, n, a, lda):
    return numba.types.int32(uplo, n, a, lda), _fortran("dpotrf", "ciai")


@intrinsic
def dsyevd(typingctx, jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork):
    sig = numba.types.int32(jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork)
    return sig, _fortran("dsyevd", "cciaiaaiai")


@intrinsic
def dgesdd(typingctx, jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork):
    sig = numba.types.int32(jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork)
    return sig, _fortran("dgesdd", "ciiaiaaiaiaia")


@intrinsic
def dgeqrf(typingctx, m, n, a, lda, tau, work, lwork):
    return numba.types.int32(m, n, a, lda, tau, work, lwork), _fortran("dgeqrf", "iiaiaai")


@intrinsic
def dorgqr(typingctx, m, n, k, a, lda, tau, work, lwork):
    return numba.types.int32(m, n, k, a, lda, tau, work, lwork), _fortran("dorgqr", "iiiaiaai")


@intrinsic
def dtrsm(typingctx, side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb):
    sig = numba.types.int32(side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb)
    return sig, _fortran("dtrsm", "cccciidaiai", info=False)


@intrinsic
def dtrmm(typingctx, side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb):
    sig = numba.types.int32(side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb)
    return sig, _fortran("dtrmm", "cccciidaiai", info=False)


_N, _T, _U, _L, _V, _R, _S = (ord(c) for c in "NTULVRS")


# --------------------------------------------------------------------------
# LU (the linalg family's factors: column-major runs, pivots as LAPACK gives them)
# --------------------------------------------------------------------------
@register_jitable
def getrf(a, piv, n):
    """LU-factor the n x n run ``a`` in place (column-major: partial pivoting of the matrix it holds
    read column-major); ``piv``: int32[n].  Returns LAPACK's info (k > 0: U[k-1, k-1] is exactly 0)."""
    return dgetrf(n, n, a, n, piv)


@register_jitable
def getrs(lu, piv, b, n, nrhs, transposed):
    """Solve with the factors of ``getrf``: M X = B (or Mᵀ X = B with ``transposed``), M the matrix
    ``lu`` held column-major, B and X the n x nrhs column-major run ``b`` (overwritten)."""
    return dgetrs(_T if transposed else _N, n, nrhs, lu, n, piv, b, n)


# --------------------------------------------------------------------------
# matrix routines for both tiers: Python (NumPy, SciPy) and their compiled twins
# --------------------------------------------------------------------------
def cholesky_lower(A):
    """(L, ok): the lower Cholesky factor of the matrix whose lower triangle A holds (its upper
    triangle is not read); ok is False where LAPACK stopped at a pivot that is not positive (L is
    then what it left)."""
    L, info = scipy.linalg.lapack.dpotrf(A, lower=1, clean=1)
    return L, info == 0


@overload(cholesky_lower)
def _cholesky_lower_compiled(A):
    def impl(A):
        n = A.shape[0]
        F = np.ascontiguousarray(A.T)  # column-major A, as SciPy (and JAX) hand it to LAPACK
        info = dpotrf(_L, n, F, n)
        L = np.ascontiguousarray(F.T)
        for i in range(n):  # LAPACK leaves the other triangle as it was
            L[i, i + 1 :] = 0.0
        return L, info == 0

    return impl


def solve_triangular(T, B, lower, transposed):
    """(X, ok): X with op(T) X = B, op(T) = T or Tᵀ, T triangular (only that triangle is read), B (n, m);
    ok is False, and X undefined, where T has an exact zero on its diagonal."""
    try:
        return scipy.linalg.solve_triangular(T, B, trans=int(transposed), lower=lower, check_finite=False), True
    except np.linalg.LinAlgError:
        return np.full_like(B, np.nan), False


def solve_triangular_right(T, B, lower, transposed):
    """(X, ok): X with X op(T) = B, B (r, n): op(T)ᵀ Xᵀ = Bᵀ."""
    X, ok = solve_triangular(T, np.ascontiguousarray(B.T), lower, not transposed)
    return np.ascontiguousarray(X.T), ok


# BLAS's dtrsm on the row-major buffers themselves: read column-major, T's buffer is M = Tᵀ (the other
# triangle) and an (r, c) buffer is the transpose of what it holds, so no operand is copied or transposed
@register_jitable
def _trsm(T, B, lower, transposed, right):
    """(X, ok) of op(T) X = B, or of X op(T) = B with ``right``."""
    M = np.ascontiguousarray(T)
    X = np.ascontiguousarray(B).copy()
    n = M.shape[0]
    for i in range(n):
        if M[i, i] == 0.0:
            return X, False
    # op(T) X = B is Xᵀ op(T)ᵀ = Bᵀ (a right solve on the buffers); X op(T) = B is op(T)ᵀ Xᵀ = Bᵀ (a left
    # one); op(T)ᵀ is M, or Mᵀ when op(T) = Tᵀ
    others = B.shape[0] if right else B.shape[1]
    if others > 0:
        dtrsm(_L if right else _R, _U if lower else _L, _T if transposed else _N, _N, n if right else others,
              others if right else n, 1.0, M, n, X, n if right else others)  # fmt: skip
    return X, True


def triangular_times(T, B, lower, transposed):
    """op(T) B for T triangular (only that triangle is read), op(T) = T or Tᵀ: BLAS's ``dtrmm``, half
    the work of a general product."""
    return np.ascontiguousarray(
        scipy.linalg.blas.dtrmm(1.0, T, B, lower=int(lower), trans_a=int(transposed)) if B.size else B.copy()
    )


@overload(triangular_times)
def _triangular_times_compiled(T, B, lower, transposed):
    def impl(T, B, lower, transposed):
        # on the buffers as _trsm reads them: op(T) B = X is Xᵀ = Bᵀ op(T)ᵀ, op(T)ᵀ = M (or Mᵀ), M = Tᵀ
        M = np.ascontiguousarray(T)
        X = np.ascontiguousarray(B).copy()
        n, others = M.shape[0], B.shape[1]
        if others > 0 and n > 0:
            dtrmm(_R, _U if lower else _L, _T if transposed else _N, _N, others, n, 1.0, M, n, X, others)
        return X

    return impl


@overload(solve_triangular)
def _solve_triangular_compiled(T, B, lower, transposed):
    return lambda T, B, lower, transposed: _trsm(T, B, lower, transposed, False)


@overload(solve_triangular_right)
def _solve_triangular_right_compiled(T, B, lower, transposed):
    return lambda T, B, lower, transposed: _trsm(T, B, lower, transposed, True)


def eigh(A):
    """(w, V): the eigenvalues (ascending) and eigenvectors (columns) of the symmetric matrix whose
    lower triangle A holds, as LAPACK's ``dsyevd`` gives them (JAX's too, signs included); NaN where
    it fails."""
    w, V, info = scipy.linalg.lapack.dsyevd(A, compute_v=1, lower=1)
    if info != 0:
        w[:] = np.nan
        V[:, :] = np.nan
    return w, np.ascontiguousarray(V)


@overload(eigh)
def _eigh_compiled(A):
    def impl(A):
        n = A.shape[0]
        F = np.ascontiguousarray(A.T)  # column-major A, as SciPy (and JAX) hand it to LAPACK
        w = np.empty(n)
        work = np.empty(1)
        iwork = np.empty(1, dtype=np.int32)
        dsyevd(_V, _L, n, F, n, w, work, -1, iwork, -1)  # the workspace query
        work = np.empty(int(work[0]))
        iwork = np.empty(int(iwork[0]), dtype=np.int32)
        info = dsyevd(_V, _L, n, F, n, w, work, work.size, iwork, iwork.size)
        if info != 0:
            w[:] = np.nan
            F[:, :] = np.nan
        return w, np.ascontiguousarray(F.T)  # the eigenvectors are F's columns

    return impl


@register_jitable
def _finite(A):
    return np.isfinite(A).all()


def svd(A):
    """(s, U, Vt): the thin singular value decomposition of A (n, m), k = min(n, m): s (k) descending, U (n, k),
    Vt (k, m), as LAPACK's ``dgesdd`` gives them to NumPy and JAX (signs included); NaN for a matrix holding
    NaN or inf, or where LAPACK fails."""
    n, m = A.shape
    k = min(n, m)
    if _finite(A):
        U, s, Vt, info = scipy.linalg.lapack.dgesdd(A, compute_uv=1, full_matrices=0)
        if info == 0:
            return s, np.ascontiguousarray(U), np.ascontiguousarray(Vt)
    return np.full(k, np.nan), np.full((n, k), np.nan), np.full((k, m), np.nan)


@overload(svd)
def _svd_compiled(A):
    def impl(A):
        n, m = A.shape
        k = min(n, m)
        s = np.full(k, np.nan)
        Uc = np.full((k, n), np.nan)  # column-major U (n, k) and Vt (k, m)
        Vc = np.full((m, k), np.nan)
        if _finite(A) and k > 0:
            F = np.ascontiguousarray(A.T)  # column-major A, as NumPy, SciPy and JAX hand it to LAPACK
            iwork = np.empty(8 * k, dtype=np.int32)
            work = np.empty(1)
            dgesdd(_S, n, m, F, n, s, Uc, n, Vc, k, work, -1, iwork)  # the workspace query
            work = np.empty(int(work[0]))
            if dgesdd(_S, n, m, F, n, s, Uc, n, Vc, k, work, work.size, iwork) != 0:
                s[:] = np.nan
                Uc[:, :] = np.nan
                Vc[:, :] = np.nan
        return s, np.ascontiguousarray(Uc.T), np.ascontiguousarray(Vc.T)

    return impl


def qr(A, complete):
    """(Q, R): the thin QR decomposition of A (n, m), k = min(n, m): Q (n, k) with orthonormal columns, R (k, m)
    upper triangular (trapezoidal when m > n), by LAPACK's ``dgeqrf`` and ``dorgqr`` as NumPy, SciPy and JAX
    (signs included: R's diagonal may be negative).  With ``complete``, Q is (n, n): the same k columns, then
    an orthonormal basis of their complement (``dorgqr`` on all n columns of the reflectors); R stays (k, m)."""
    Q, R = scipy.linalg.qr(A, mode="full" if complete else "economic", check_finite=False)
    return np.ascontiguousarray(Q), np.ascontiguousarray(R[: min(A.shape)])


@overload(qr)
def _qr_compiled(A, complete):
    def impl(A, complete):
        n, m = A.shape
        k = min(n, m)
        F = np.ascontiguousarray(A.T)  # column-major A; its row j is A's column j
        tau = np.empty(k)
        work = np.empty(1)
        dgeqrf(n, m, F, n, tau, work, -1)
        work = np.empty(max(int(work[0]), 1))
        dgeqrf(n, m, F, n, tau, work, work.size)
        R = np.zeros((k, m))
        for i in range(k):
            for j in range(i, m):
                R[i, j] = F[j, i]
        columns = n if complete else k
        Qc = np.zeros((columns, n))  # the reflectors of the first k columns, column-major (n, columns)
        Qc[:k] = F[:k]
        dorgqr(n, columns, k, Qc, n, tau, work, -1)
        work = np.empty(max(int(work[0]), 1))
        dorgqr(n, columns, k, Qc, n, tau, work, work.size)
        return np.ascontiguousarray(Qc.T), R

    return impl


def lu(A):
    """(LU, piv): the LU factors of the square A with partial pivoting, A = P L U, packed as LAPACK's
    ``dgetrf`` leaves them (L unit lower, below the diagonal; U on and above it) and the row interchanges,
    0-based as SciPy's ``lu_factor`` gives them (row i was swapped with row piv[i], in order), as floats."""
    LU, piv, _ = scipy.linalg.lapack.dgetrf(A)
    return np.ascontiguousarray(LU), piv.astype(np.float64)


@overload(lu)
def _lu_compiled(A):
    def impl(A):
        n = A.shape[0]
        F = np.ascontiguousarray(A.T)  # column-major A, as SciPy and JAX hand it to LAPACK
        ipiv = np.empty(n, dtype=np.int32)
        dgetrf(n, n, F, n, ipiv)  # info > 0 (an exact zero on U's diagonal) is not an error here
        piv = np.empty(n)
        for i in range(n):
            piv[i] = ipiv[i] - 1
        return np.ascontiguousarray(F.T), piv

    return impl
