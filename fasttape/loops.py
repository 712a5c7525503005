"""Compiled loops that every family and sweep shares: sums, zeroing, BLAS products.

``sum_contiguous`` (eight accumulators), ``zero`` (a plain loop or one ``memset``),
``blas_product`` (dgemm / dgemv straight into a run of the buffer, with ``beta`` to
accumulate without a temporary) and ``add_outer``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import jit
from .layout import C_A, C_B, C_C, C_FLAGS, F_INIT_A, F_INIT_B, F_INIT_C


@jit
def sum_contiguous(buf, start, n):
    # eight independent accumulators: the adds overlap in the pipeline, and the
    # partial sums make the rounding error grow more slowly than one running sum
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    x = buf[start : start + n]
    j = 0
    while j + 8 <= n:
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
        s4 += x[j + 4]
        s5 += x[j + 5]
        s6 += x[j + 6]
        s7 += x[j + 7]
        j += 8
    while j < n:
        s0 += x[j]
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@jit
def add_outer(dst, u, v, m, k):
    """dst (m x k) += u vᵀ, row by row (BLAS would need a temporary of dst's size)."""
    for i in range(m):
        g = u[i]
        row = dst[i * k : (i + 1) * k]
        for p in range(k):
            row[p] += g * v[p]


@intrinsic
def memset_zero(typingctx, buf, start, n):
    """buf[start : start + n] = 0 as one ``llvm.memset`` (libc's memset: its streaming stores skip
    reading the lines first, about 4x faster than a store loop on a megabyte).  Unchecked: the
    caller keeps the run inside ``buf`` and n > 0."""
    sig = numba.types.void(buf, start, n)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        first = builder.gep(array.data, [args[1]])
        size = builder.mul(args[2], context.get_constant(numba.types.intp, 8))
        cgutils.memset(builder, first, size, 0)
        return context.get_dummy_value()

    return sig, codegen


MEMSET_MIN = 512  # elements: shorter runs are zeroed by a plain loop


@intrinsic
def gemm(typingctx, C, A, B, m, n, k, trans_a, trans_b, beta):
    """C (m x n) = op(A) op(B) + beta C through BLAS dgemm (``numba_xxgemm``, the entry point that
    Numba's own np.dot calls), where op(A) is m x k -- A stored m x k, or k x m with ``trans_a`` --
    and op(B) is k x n -- B stored k x n, or n x k with ``trans_b``.  All three are flat C-order runs.
    beta = 1 accumulates in place: no temporary, no extra pass (``C += np.dot(...)`` has both).
    beta = 0 never reads C.  Unchecked: the caller passes runs of those sizes and m, n, k > 0."""
    sig = numba.types.void(C, A, B, m, n, k, trans_a, trans_b, beta)

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        c, a, b, m_, n_, k_, ta, tb, beta_ = args
        byte_pointer = ir.IntType(8).as_pointer()

        def data(value, index):
            array = context.make_array(signature.args[index])(context, builder, value)
            return builder.bitcast(array.data, byte_pointer)

        char = ir.IntType(8)
        intp = context.get_value_type(numba.types.intp)
        fnty = ir.FunctionType(
            ir.IntType(32),
            [char, char, char, intp, intp, intp, byte_pointer, byte_pointer, intp, byte_pointer, intp]
            + [byte_pointer, byte_pointer, intp],
        )
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        alpha = cgutils.alloca_once_value(builder, ir.Constant(ir.DoubleType(), 1.0))
        beta_slot = cgutils.alloca_once_value(builder, beta_)
        transposed, plain = ir.Constant(char, ord("t")), ir.Constant(char, ord("n"))
        # BLAS is column-major: a row-major C (m x n) is Cᵀ (n x m) there, and Cᵀ = op(B)ᵀ op(A)ᵀ
        builder.call(
            fn,
            [
                ir.Constant(char, ord("d")),
                builder.select(tb, transposed, plain),
                builder.select(ta, transposed, plain),
                n_, m_, k_,
                builder.bitcast(alpha, byte_pointer),
                data(b, 2), builder.select(tb, k_, n_),
                data(a, 1), builder.select(ta, m_, k_),
                builder.bitcast(beta_slot, byte_pointer),
                data(c, 0), n_,
            ],
        )  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen


@jit
def blas_product(C, A, B, m, n, k, trans_a, trans_b, beta):
    """C = op(A) op(B) + beta C as in gemm, except when C is a vector (m or n is 1): np.dot then
    picks dgemv, which is about 3x faster there than dgemm (at the price of a temporary)."""
    if m > 1 and n > 1:
        gemm(C, A, B, m, n, k, trans_a, trans_b, beta)
        return
    out = C.reshape(m, n)
    if trans_a:
        product = np.dot(A.reshape(k, m).T, B.reshape(k, n))
    elif trans_b:
        product = np.dot(A.reshape(m, k), B.reshape(n, k).T)
    else:
        product = np.dot(A.reshape(m, k), B.reshape(k, n))
    if beta == 0.0:
        out[:, :] = product
    else:
        out[:, :] += product


@jit
def zero(buf, start, n):
    if n >= MEMSET_MIN and 0 <= start and start + n <= buf.size:
        memset_zero(buf, start, n)
        return
    for j in range(n):
        buf[start + j] = 0.0


@jit
def zero_adjoints(buf, adj2, N, k, pos, length, second):
    """Zero an operand's adjoint (when ``second``) and its k second-order adjoints."""
    if second:
        zero(buf, N + pos, length)
    for d in range(k):
        zero(adj2, d * N + pos, length)


@jit
def zero_first_writes(ins, i, buf, adj2, N, k, second):
    """Zero the adjoints (first order when ``second``, and the k in ``adj2``) of the operands that
    instruction ``i`` writes first (``F_INIT_*``), for rules that only accumulate."""
    flags = ins[i, C_FLAGS]
    for column, bit in ((C_A, F_INIT_A), (C_B, F_INIT_B), (C_C, F_INIT_C)):
        if flags & bit:
            zero_adjoints(buf, adj2, N, k, ins[i, column], ins[i, column + 1], second)
