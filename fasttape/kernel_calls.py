"""Calls of the families' compiled kernels by address, from a tape's own kernels.

A jitted function that calls another links the callee's whole compiled library into its own and
optimises and generates machine code for all of it again: a tape's kernels that call the reductions
family took 1.4 s to compile, against 0.1 s without the call.  So ``fasttape.tape_source`` calls a
family kernel through its native entry point instead: ``address(kernel, signature)`` is that
entry point (compiled, or loaded from the disk cache, first), the generated function receives the
addresses in an int64 array at run time (so its cached machine code holds no address of this
process), and ``call_forward``, ``call_reverse``, ``call_tangent`` and ``call_second`` call through
them with Numba's own calling convention, an exception raised in the kernel propagating as from a
direct call.  ``call_product_forward``, ``call_product_reverse``, ``call_product_tangent`` and
``call_product_second`` call the matmul family's products the same way, with operands that need not
be in the buffer (``DIRECT``, fasttape.input_refs).
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
SWEEPS = ("forward", "reverse", "tangent", "second")
SIGNATURES = {
    "forward": (INS, types.int64, AUX, BUF),
    "reverse": (INS, types.int64, AUX, BUF, types.int64),
    "tangent": (INS, types.int64, AUX, BUF, BUF, types.int64, types.int64),
    "second": (INS, types.int64, AUX, BUF, BUF, BUF, types.int64, types.int64, types.boolean),
}

# a family's kernels of operands where the caller holds them (a family module's DIRECT: fasttape.input_refs),
# their addresses after every family's sweeps
BOOL = types.boolean
DIRECT = {
    # (buf, o, A, a, B, b, batch, m, k, n)
    "product_forward": (BUF, types.int64, BUF, types.int64, BUF, *(types.int64,) * 5),
    # (buf, N, o, a, b, A, a_at, B, b_at, batch, m, k, n, grad_a, grad_b, init_a, init_b)
    "product_reverse": (BUF, *(types.int64,) * 4, BUF, types.int64, BUF, *(types.int64,) * 5, BOOL, BOOL, BOOL, BOOL),
    # (tan, o, A, TA, a_at, B, TB, b_at, batch, m, k, n, grad_a, grad_b)
    "product_tangent": (BUF, types.int64, BUF, BUF, types.int64, BUF, BUF, *(types.int64,) * 5, BOOL, BOOL),
    # (buf, tan, adj2, N, o, a, b, A, TA, a_at, B, TB, b_at, batch, m, k, n, grad_a, grad_b, first_a, first_b,
    #  flat, init_a, init_b)
    "product_second": (
        BUF,
        BUF,
        BUF,
        *(types.int64,) * 4,
        BUF,
        BUF,
        types.int64,
        BUF,
        BUF,
        *(types.int64,) * 5,
        *(BOOL,) * 7,
    ),  # fmt: skip
}
SIGNATURES.update(DIRECT)


def slot(family, sweep: str) -> int:
    """Where the address of ``family``'s kernel for ``sweep`` is in the array a tape's kernels receive."""
    return len(SWEEPS) * family.number + SWEEPS.index(sweep)


def direct_slot(name: str, n_families: int) -> int:
    """Where the address of the ``DIRECT`` kernel ``name`` is in that array."""
    return len(SWEEPS) * n_families + list(DIRECT).index(name)


def address(kernel, sweep: str) -> int:
    """The native entry point of ``kernel`` (a family's kernel for ``sweep``) for the tape's types."""
    signature = SIGNATURES[sweep]
    kernel.compile(signature)
    result = kernel.overloads[signature]
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def _typed(sweep: str, given):
    """The intrinsic's signature when ``given`` (the argument types after the address) fit ``sweep``'s."""
    expected = SIGNATURES[sweep]
    if len(given) != len(expected):
        return None
    for got, want in zip(given, expected):
        got = types.unliteral(got)
        if isinstance(want, types.Array) and got != want:
            return None  # (the kernel was compiled for exactly these arrays)
        if not isinstance(want, types.Array) and not isinstance(got, (types.Integer, types.Boolean)):
            return None
    return types.none(types.int64, *given)


def call_address(context, builder, argtypes, restype, signature, args):
    """Call the Numba function at ``args[0]`` (compiled for ``argtypes``, returning ``restype``) with
    ``args[1:]`` and propagate its exception, if any; its result."""
    values = [context.cast(builder, v, t, want) for v, t, want in zip(args[1:], signature.args[1:], argtypes)]
    call_conv = context.call_conv
    fnty = call_conv.get_function_type(restype, argtypes)
    callee = builder.inttoptr(args[0], fnty.as_pointer())
    retty = call_conv.get_return_type(restype).pointee
    result = cgutils.alloca_once(builder, retty)
    builder.store(cgutils.get_null_value(retty), result)
    excinfo = cgutils.alloca_once(builder, ir.PointerType(excinfo_t), name="excinfo")
    packed = list(call_conv._get_arg_packer(argtypes).as_arguments(builder, values))
    code = builder.call(callee, [result, excinfo, *packed])
    status = call_conv._get_return_status(builder, code, builder.load(excinfo))
    with cgutils.if_unlikely(builder, status.is_error):
        call_conv.return_status_propagate(builder, status)
    if restype == types.none:
        return context.get_dummy_value()
    return context.get_returned_value(builder, restype, builder.load(result))


def _call(context, builder, sweep, signature, args):
    """Call the family kernel for ``sweep`` at ``args[0]`` (returning None)."""
    return call_address(context, builder, SIGNATURES[sweep], types.none, signature, args)


@intrinsic
def call_forward(typingctx, address, ins, i, aux, buf):
    """``forward(ins, i, aux, buf)`` of the kernel at ``address``."""
    return _typed("forward", (ins, i, aux, buf)), lambda c, b, sig, args: _call(c, b, "forward", sig, args)


@intrinsic
def call_reverse(typingctx, address, ins, i, aux, buf, n_values):
    """``reverse(ins, i, aux, buf, N)`` of the kernel at ``address``."""
    signature = _typed("reverse", (ins, i, aux, buf, n_values))
    return signature, lambda c, b, sig, args: _call(c, b, "reverse", sig, args)


@intrinsic
def call_tangent(typingctx, address, ins, i, aux, buf, tan, n_values, k):
    """``tangent(ins, i, aux, buf, tan, NV, k)`` of the kernel at ``address``."""
    signature = _typed("tangent", (ins, i, aux, buf, tan, n_values, k))
    return signature, lambda c, b, sig, args: _call(c, b, "tangent", sig, args)


@intrinsic
def call_second(typingctx, address, ins, i, aux, buf, tan, adj2, n_values, k, second):
    """``second(ins, i, aux, buf, tan, adj2, N, k, second)`` of the kernel at ``address``."""
    signature = _typed("second", (ins, i, aux, buf, tan, adj2, n_values, k, second))
    return signature, lambda c, b, sig, args: _call(c, b, "second", sig, args)


@intrinsic
def call_product_forward(typingctx, address, buf, o, A, a, B, b, batch, m, k, n):
    """``product_forward(buf, o, A, a, B, b, batch, m, k, n)`` of the kernel at ``address``."""
    signature = _typed("product_forward", (buf, o, A, a, B, b, batch, m, k, n))
    return signature, lambda c, bl, sig, args: _call(c, bl, "product_forward", sig, args)


@intrinsic
def call_product_reverse(typingctx, address, buf, N, o, a, b, A, a_at, B, b_at, batch, m, k, n, ga, gb, ia, ib):
    """``product_reverse(buf, N, o, a, b, A, a_at, B, b_at, batch, m, k, n, grad_a, grad_b, init_a, init_b)``
    of the kernel at ``address``."""
    signature = _typed("product_reverse", (buf, N, o, a, b, A, a_at, B, b_at, batch, m, k, n, ga, gb, ia, ib))
    return signature, lambda c, bl, sig, args: _call(c, bl, "product_reverse", sig, args)


@intrinsic
def call_product_tangent(typingctx, address, tan, o, A, TA, a_at, B, TB, b_at, batch, m, k, n, ga, gb):
    """``product_tangent(tan, o, A, TA, a_at, B, TB, b_at, batch, m, k, n, grad_a, grad_b)`` of the kernel at
    ``address``."""
    signature = _typed("product_tangent", (tan, o, A, TA, a_at, B, TB, b_at, batch, m, k, n, ga, gb))
    return signature, lambda c, bl, sig, args: _call(c, bl, "product_tangent", sig, args)


@intrinsic
def call_product_second(typingctx, address, buf, tan, adj2, N, o, a, b, A, TA, a_at, B, TB, b_at, batch, m, k, n,
                        ga, gb, fa, fb, flat, ia, ib):  # fmt: skip
    """``product_second(buf, tan, adj2, N, o, a, b, A, TA, a_at, B, TB, b_at, batch, m, k, n, grad_a, grad_b,
    first_a, first_b, flat, init_a, init_b)`` of the kernel at ``address``."""
    given = (buf, tan, adj2, N, o, a, b, A, TA, a_at, B, TB, b_at, batch, m, k, n, ga, gb, fa, fb, flat, ia, ib)
    return _typed("product_second", given), lambda c, bl, sig, args: _call(c, bl, "product_second", sig, args)
