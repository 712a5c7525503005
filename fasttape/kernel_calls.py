"""Calls of the families' compiled kernels by address, from a tape's own kernels.

A jitted function that calls another links the callee's whole compiled library into its own and
optimises and generates machine code for all of it again: a tape's kernels that call the reductions
family took 1.4 s to compile, against 0.1 s without the call.  So ``fasttape.tape_source`` calls a
family kernel through its native entry point instead: ``address(kernel, signature)`` is that
entry point (compiled, or loaded from the disk cache, first), the generated function receives the
addresses in an int64 array at run time (so its cached machine code holds no address of this
process), and ``call_forward`` / ``call_reverse`` call through them with Numba's own calling
convention, an exception raised in the kernel propagating as from a direct call.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.extending import intrinsic

INS = types.int64[:, ::1]
AUX = types.int64[::1]
BUF = types.float64[::1]
SIGNATURES = {
    "forward": (INS, types.int64, AUX, BUF),
    "reverse": (INS, types.int64, AUX, BUF, types.int64),
}


def slot(family, sweep: str) -> int:
    """Where the address of ``family``'s kernel for ``sweep`` is in the array a tape's kernels receive."""
    return 2 * family.number + (sweep == "reverse")


def address(kernel, sweep: str) -> int:
    """The native entry point of ``kernel`` (a family's ``forward`` or ``reverse``) for the tape types."""
    signature = SIGNATURES[sweep]
    kernel.compile(signature)
    result = kernel.overloads[signature]
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def _call(context, builder, argtypes, address, args):
    """Call the Numba function at ``address`` (returning None) and propagate its exception, if any."""
    call_conv = context.call_conv
    fnty = call_conv.get_function_type(types.none, argtypes)
    callee = builder.inttoptr(address, fnty.as_pointer())
    retty = call_conv.get_return_type(types.none).pointee
    result = cgutils.alloca_once(builder, retty)
    builder.store(cgutils.get_null_value(retty), result)
    excinfo = cgutils.alloca_once(builder, ir.PointerType(excinfo_t), name="excinfo")
    packed = list(call_conv._get_arg_packer(argtypes).as_arguments(builder, args))
    code = builder.call(callee, [result, excinfo, *packed])
    status = call_conv._get_return_status(builder, code, builder.load(excinfo))
    with cgutils.if_unlikely(builder, status.is_error):
        call_conv.return_status_propagate(builder, status)
    return context.get_dummy_value()


@intrinsic
def call_forward(typingctx, address, ins, i, aux, buf):
    """``forward(ins, i, aux, buf)`` of the kernel at ``address``."""
    argtypes = SIGNATURES["forward"]
    if (ins, i, aux, buf) != argtypes:
        return None  # (a typing error: the kernel was compiled for exactly these types)

    def codegen(context, builder, signature, args):
        return _call(context, builder, argtypes, args[0], args[1:])

    return types.none(types.int64, *argtypes), codegen


@intrinsic
def call_reverse(typingctx, address, ins, i, aux, buf, n_values):
    """``reverse(ins, i, aux, buf, N)`` of the kernel at ``address``."""
    argtypes = SIGNATURES["reverse"]
    if (ins, i, aux, buf, n_values) != argtypes:
        return None

    def codegen(context, builder, signature, args):
        return _call(context, builder, argtypes, args[0], args[1:])

    return types.none(types.int64, *argtypes), codegen
