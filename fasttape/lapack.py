"""LAPACK for the linear-algebra families: SciPy's Fortran routines, called from compiled kernels by name.

Each routine's address comes from ``scipy.linalg.cython_lapack`` and is registered with LLVM
under a ``fasttape_`` symbol when this module is imported, so compiled code refers to the
routine by name: the kernels stay cacheable on disk (a ctypes pointer baked into the code
would not be), exactly as Numba's own ``np.linalg`` reaches LAPACK.

Two layers:

* the raw routines (``dpotrf``, ``dsyevd``, ..., and BLAS's ``dtrsm``): intrinsics taking their own arguments
  (characters as their codes, integers, arrays), every one passed by reference, and
  returning ``info``;
* the matrix routines the rules use (``cholesky_lower``, ``solve_triangular`` and ``_right``, ``eigh``),
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
import scipy.linalg.lapack
from llvmlite import ir
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic, overload, register_jitable

ROUTINES = ("dgetrf", "dgetrs", "dpotrf", "dsyevd")
BLAS_ROUTINES = ("dtrsm",)
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
def dtrsm(typingctx, side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb):
    sig = numba.types.int32(side, uplo, transa, diag, m, n, alpha, a, lda, b, ldb)
    return sig, _fortran("dtrsm", "cccciidaiai", info=False)


_N, _T, _U, _L, _V, _R = (ord(c) for c in "NTULVR")


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
