"""LAPACK for the linalg family: SciPy's Fortran routines, called from compiled kernels by name.

Each routine's address comes from ``scipy.linalg.cython_lapack`` and is registered with LLVM
under a ``fasttape_`` symbol when this module is imported, so compiled code refers to the
routine by name: the kernels stay cacheable on disk (a ctypes pointer baked into the code
would not be), exactly as Numba's own ``np.linalg`` reaches LAPACK.

The arrays are flat C-order runs; LAPACK reads them column-major, so a row-major matrix is
its transpose there.  The callers (``fasttape.families.linalg``) account for that.
"""

from __future__ import annotations

import llvmlite.binding as ll
import numba
from llvmlite import ir
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

ROUTINES = ("dgetrf", "dgetrs")
for _name in ROUTINES:
    ll.add_symbol(f"fasttape_{_name}", get_cython_function_address("scipy.linalg.cython_lapack", _name))


def _data(context, builder, array_type, value):
    array = context.make_array(array_type)(context, builder, value)
    return builder.bitcast(array.data, ir.IntType(8).as_pointer())


def _int_slot(context, builder, value_type, value):
    """A pointer to a Fortran INTEGER (int32) holding ``value``."""
    v = context.cast(builder, value, value_type, numba.types.int32)
    return builder.bitcast(cgutils.alloca_once_value(builder, v, name="arg"), ir.IntType(8).as_pointer())


@intrinsic
def getrf(typingctx, a, piv, n):
    """LU-factor the n x n run ``a`` in place (column-major: partial pivoting of the matrix it holds
    read column-major); ``piv``: int32[n].  Returns LAPACK's info (k > 0: U[k-1, k-1] is exactly 0)."""
    sig = numba.types.int32(a, piv, n)

    def codegen(context, builder, signature, args):
        byte_pointer = ir.IntType(8).as_pointer()
        av, pv, nv = args
        n_ptr = _int_slot(context, builder, signature.args[2], nv)
        info = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
        fnty = ir.FunctionType(ir.VoidType(), [byte_pointer] * 6)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "fasttape_dgetrf")
        a_ptr = _data(context, builder, signature.args[0], av)
        piv_ptr = _data(context, builder, signature.args[1], pv)
        builder.call(fn, [n_ptr, n_ptr, a_ptr, n_ptr, piv_ptr, builder.bitcast(info, byte_pointer)])
        return builder.load(info)

    return sig, codegen


@intrinsic
def getrs(typingctx, lu, piv, b, n, nrhs, transposed):
    """Solve with the factors of ``getrf``: M X = B (or Mᵀ X = B with ``transposed``), M the matrix
    ``lu`` held column-major, B and X the n x nrhs column-major run ``b`` (overwritten)."""
    sig = numba.types.int32(lu, piv, b, n, nrhs, transposed)

    def codegen(context, builder, signature, args):
        byte_pointer = ir.IntType(8).as_pointer()
        luv, pv, bv, nv, rv, tv = args
        n_ptr = _int_slot(context, builder, signature.args[3], nv)
        r_ptr = _int_slot(context, builder, signature.args[4], rv)
        char = ir.IntType(8)
        trans = builder.select(tv, ir.Constant(char, ord("T")), ir.Constant(char, ord("N")))
        t_ptr = builder.bitcast(cgutils.alloca_once_value(builder, trans), byte_pointer)
        info = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
        fnty = ir.FunctionType(ir.VoidType(), [byte_pointer] * 9)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "fasttape_dgetrs")
        lu_ptr = _data(context, builder, signature.args[0], luv)
        piv_ptr = _data(context, builder, signature.args[1], pv)
        b_ptr = _data(context, builder, signature.args[2], bv)
        info_ptr = builder.bitcast(info, byte_pointer)
        builder.call(fn, [t_ptr, n_ptr, r_ptr, lu_ptr, n_ptr, piv_ptr, b_ptr, n_ptr, info_ptr])
        return builder.load(info)

    return sig, codegen
