"""The Numba sweeps over a tape, and the layout they share with the recorder.

A tape is three flat arrays:

* ``ins``  -- int64[n_instructions, ROW]: one row per instruction (see ``C_*``):
  opcode, output offset and size, up to three operand offsets and sizes, four
  integer parameters and an activity bit mask.  Offsets point into ``buf``.
* ``aux``  -- int64[...]: a small header (``M_*``), the guard table and the pool
  of gather indices.
* ``buf``  -- float64[2 * n_values]: the forward values, then their adjoints.

The primitives are declared in ``fasttape.primitives``; their elementwise math
(value, first and second partials) is generated from the declarations by
``fasttape.codegen`` and called from here.  Reductions, broadcast, gather and
matmul have a branch of their own in each sweep.  The sweeps classify an opcode
by its group (``UNARY``, ``BINARY``, ``REDUCTION``, ...); an opcode in no branch
raises.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
from numba.core import cgutils
from numba.extending import intrinsic

from . import cache
from .codegen import ELEMENTWISE

# the declarations, re-exported: the recorder, storage and tools read them through this module
from .primitives import N_OPCODES, PRIMITIVES, opcode, opcodes
from .primitives import PRIMITIVE_BY_NAME as PRIMITIVE_BY_NAME
from .primitives import PRIMITIVE_BY_OPCODE as PRIMITIVE_BY_OPCODE

# --------------------------------------------------------------------------
# opcodes: the declarations' table order (fasttape.primitives).  The sweeps classify an
# opcode by its group (the boolean tables below), never by a numeric range.
# --------------------------------------------------------------------------
OP_NEGATIVE = opcode("negative")
OP_ABS = opcode("abs")
OP_SQUARE = opcode("square")
OP_ADD = opcode("add")
OP_SUBTRACT = opcode("subtract")
OP_MULTIPLY = opcode("multiply")
OP_LOGADDEXP = opcode("logaddexp")
OP_WHERE = opcode("where")
OP_SUM = opcode("sum")
OP_PROD = opcode("prod")
OP_MAX = opcode("max")
OP_MIN = opcode("min")
OP_LOGSUMEXP = opcode("logsumexp")
OP_CUMSUM = opcode("cumsum")
OP_BROADCAST = opcode("broadcast")
OP_GATHER = opcode("gather")
OP_MATMUL = opcode("matmul")
for _p in PRIMITIVES:  # OP_<NAME> for every primitive, for the tests and tools
    globals().setdefault(f"OP_{_p.name.upper()}", _p.opcode)


def _group(predicate) -> np.ndarray:
    table = np.zeros(N_OPCODES, dtype=np.bool_)
    table[list(opcodes(predicate))] = True
    return table


UNARY = _group(lambda p: p.kind == "unary")
BINARY = _group(lambda p: p.kind in ("binary", "comparison"))  # two operands, elementwise
COMPARISON = _group(lambda p: p.kind == "comparison")
REDUCTION = _group(lambda p: p.kind == "reduction")  # (pre, r, post) -> (pre, post)
ARITHMETIC = _group(lambda p: p.opcode in (OP_ADD, OP_SUBTRACT, OP_MULTIPLY))  # the scalar code's three
for _table in (UNARY, BINARY, COMPARISON, REDUCTION, ARITHMETIC):
    _table.setflags(write=False)

# instruction row columns
C_OP = 0
C_OUT = 1
C_N = 2
C_A = 3
C_NA = 4
C_B = 5
C_NB = 6
C_C = 7
C_NC = 8
C_P0 = 9
C_P1 = 10
C_P2 = 11
C_P3 = 12
C_FLAGS = 13
ROW = 14

# activity bits in C_FLAGS: the reverse sweep runs an instruction only when its
# output is active, and writes only into operands that need an adjoint.
F_ACTIVE = 1
F_GRAD_A = 2
F_GRAD_B = 4
F_GRAD_C = 8
# the instruction is the first (in reverse order) to write the operand's whole adjoint:
# it assigns instead of accumulating, so that adjoint needs no zeroing beforehand
F_INIT_A = 16
F_INIT_B = 32
F_INIT_C = 64

# aux header
M_NVALS = 0  # number of values; adjoints start at buf[n_values]
M_GUARDS = 1  # start of the guard table in aux: (position, expected 0/1) pairs
M_NGUARDS = 2
M_ZEROS = 3  # start of the (offset, length) runs of adjoints to zero before a reverse sweep
M_NZEROS = 4
HEADER = 8

SMALL_RUN = 16  # runs shorter than this use plain index loops in the k-direction sweeps

# The scalar code: a compact copy of the one-element add / subtract / multiply instructions -- the
# arithmetic of loops over Python floats -- that the sweeps stream instead of the 112-byte rows, with a
# three-way switch.  Four uint32 per instruction, [word, out, a, b], word = opcode | flags << 8 |
# S_SCALAR; other rows are zero.  A wider switch costs every instruction (with a divide in it, LLVM
# computes the quotient on every row and selects), so the other scalar instructions take the general
# path, where their own cost dominates.
S_SCALAR = 1 << 16
S_FLAGS_SHIFT = 8
S_OPCODE_MASK = 255
_INT32_SLOTS = 2**31 - 1  # unsigned slots index without Numba's negative-index check

# Fused regions (fasttape.fusion): region rows of the code are [word, position in the region,
# region position of operand a, of operand b] (NO_SOURCE: read from the buffer).
FUSE_MIN = 8192  # elements: two tiles; from 10^4 elements on, fused sweeps measured as fast or faster
FUSE_TILE = 4096  # elements per tile: a region's scratch (values and adjoints) stays in L1/L2
NO_SOURCE = 0xFFFFFFFF
S_FUSED = 1 << 17
S_START = 1 << 18  # the first row of a region
S_STORE = 1 << 19  # the output is read after the region: the fused forward writes it to the buffer
S_GZERO = 1 << 20  # the output's adjoint is first written (assigned) inside the region: no load, no zeroing
S_RECOMPUTE = 1 << 21  # the first-order reverse reads this value (or one computed from it)
S_LOCAL = 1 << 22  # (first row) only the caller reads the region's values: no instruction, gather or guard
S_TANGENT = 1 << 23  # the second-order reverse reads this tangent (or one computed from it)


def scalar_code(ins: np.ndarray) -> np.ndarray:
    """The scalar code of an instruction table (derived, never saved: rebuilt whenever ``ins`` is)."""
    code = np.zeros((ins.shape[0], 4), dtype=np.uint32)
    op = ins[:, C_OP]
    scalar = (ins[:, C_N] == 1) & ARITHMETIC[op]
    # slots beyond int32 (a tape of more than 16 GB of values) keep the general path
    for column in (C_OUT, C_A, C_B):
        scalar &= ins[:, column] <= _INT32_SLOTS
    code[scalar, 0] = op[scalar] | (ins[scalar, C_FLAGS] << S_FLAGS_SHIFT) | S_SCALAR
    code[scalar, 1] = ins[scalar, C_OUT]
    code[scalar, 2] = ins[scalar, C_A]
    code[scalar, 3] = ins[scalar, C_B]
    return code.reshape(-1)  # flat: row i is code[4 i : 4 i + 4]


# --------------------------------------------------------------------------
# Numba setup: on-disk cache (fasttape.cache) unless switched off or impossible
# --------------------------------------------------------------------------
CACHE_ENABLED = cache.ENABLED


def _jit(fn=None, **options):
    """njit with nogil and IEEE division (x/0 is inf or NaN, as in NumPy and JAX);
    cached on disk when possible, never failing the import."""
    global CACHE_ENABLED
    if fn is None:
        return lambda f: _jit(f, **options)
    if CACHE_ENABLED:
        try:
            return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
        except Exception:  # no usable cache location
            CACHE_ENABLED = False
    return numba.njit(cache=False, nogil=True, error_model="numpy", **options)(fn)


# --------------------------------------------------------------------------
# elementwise math: generated from the declarations (fasttape.codegen)
# --------------------------------------------------------------------------
unary_value = ELEMENTWISE.unary_value
unary_partial = ELEMENTWISE.unary_partial
unary_second = ELEMENTWISE.unary_second
binary_value = ELEMENTWISE.binary_value
binary_partials = ELEMENTWISE.binary_partials
binary_second = ELEMENTWISE.binary_second
_unary_forward_run = ELEMENTWISE.unary_forward_run
_unary_reverse_run = ELEMENTWISE.unary_reverse_run


# --------------------------------------------------------------------------
# structural primitives: forward
# --------------------------------------------------------------------------
@_jit
def _sum_forward(t, o, a, pre, r, post):
    """Sums over the middle axis of ``t[a:]`` viewed as (pre, r, post), into ``t[o:]`` (values or
    tangents alike)."""
    for p in range(pre):
        base = a + p * r * post
        if post == 1:
            t[o + p] = _sum_contiguous(t, base, r)
            continue
        z = t[o + p * post : o + (p + 1) * post]  # rows added in order, one vectorised loop each
        z[:] = t[base : base + post]
        for k in range(1, r):
            row = t[base + k * post : base + (k + 1) * post]
            for q in range(post):
                z[q] += row[q]


@_jit
def _reduce_forward(op, buf, o, a, pre, r, post):
    if op == OP_SUM:
        _sum_forward(buf, o, a, pre, r, post)
        return
    for p in range(pre):
        base = a + p * r * post
        for q in range(post):
            out = o + p * post + q
            if op == OP_SUM:
                s = 0.0
                for k in range(r):
                    s += buf[base + k * post + q]
                buf[out] = s
            elif op == OP_PROD:
                s = 1.0
                for k in range(r):
                    s *= buf[base + k * post + q]
                buf[out] = s
            elif op == OP_MAX or op == OP_MIN or op == OP_LOGSUMEXP:
                m = buf[base + q]
                for k in range(1, r):
                    v = buf[base + k * post + q]
                    if v != v:
                        m = v
                        break
                    if (op == OP_MIN and v < m) or (op != OP_MIN and v > m):
                        m = v
                if op == OP_LOGSUMEXP:
                    shift = m if math.isfinite(m) else 0.0
                    s = 0.0
                    for k in range(r):
                        s += math.exp(buf[base + k * post + q] - shift)
                    m = math.log(s) + shift
                buf[out] = m


@_jit
def _sum_contiguous(buf, start, n):
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


@_jit
def _matmul_forward(buf, o, a, b, batch, m, k, n):
    for t in range(batch):
        ao = a + t * m * k
        bo = b + t * k * n
        oo = o + t * m * n
        A = buf[ao : ao + m * k]
        B = buf[bo : bo + k * n]
        C = buf[oo : oo + m * n]
        if m * k * n >= 32768:
            np.dot(A.reshape(m, k), B.reshape(k, n), C.reshape(m, n))
        elif n == 1:  # matrix @ vector: one dot product per row
            for i in range(m):
                s = 0.0
                for p in range(k):
                    s += A[i * k + p] * B[p]
                C[i] = s
        else:
            for i in range(m):
                for j in range(n):
                    C[i * n + j] = 0.0
                for p in range(k):
                    av = A[i * k + p]
                    for j in range(n):
                        C[i * n + j] += av * B[p * n + j]


@_jit
def _add_outer(dst, u, v, m, k):
    """dst (m x k) += u vᵀ, row by row (BLAS would need a temporary of dst's size)."""
    for i in range(m):
        g = u[i]
        row = dst[i * k : (i + 1) * k]
        for p in range(k):
            row[p] += g * v[p]


@_jit
def _matmul_reverse(buf, N, o, a, b, batch, m, k, n, grad_a, grad_b, init_a, init_b):
    # d(A B) = (G Bᵀ, Aᵀ G) for the adjoint G of the product
    for t in range(batch):
        ao = a + t * m * k
        bo = b + t * k * n
        go = N + o + t * m * n
        A = buf[ao : ao + m * k]
        B = buf[bo : bo + k * n]
        G = buf[go : go + m * n]
        dA = buf[N + ao : N + ao + m * k]
        dB = buf[N + bo : N + bo + k * n]
        if m * k * n >= 32768:  # BLAS straight into the adjoint: assigned (beta 0) or accumulated
            if grad_a and n == 1 and not init_a:
                _add_outer(dA, G, B, m, k)
            elif grad_a:  # (m x k) = or += (m x n) (k x n)ᵀ
                _blas_product(dA, G, B, m, k, n, False, True, 0.0 if init_a else 1.0)
            if grad_b:  # (k x n) = or += (m x k)ᵀ (m x n)
                _blas_product(dB, A, G, k, n, m, True, False, 0.0 if init_b else 1.0)
            continue
        if init_a and grad_a:
            dA[:] = 0.0
        if init_b and grad_b:
            dB[:] = 0.0
        if n == 1:
            for i in range(m):
                g = G[i]
                if grad_a:
                    for p in range(k):
                        dA[i * k + p] += g * B[p]
                if grad_b:
                    for p in range(k):
                        dB[p] += A[i * k + p] * g
        else:
            for i in range(m):
                for p in range(k):
                    if grad_a:
                        s = 0.0
                        for j in range(n):
                            s += G[i * n + j] * B[p * n + j]
                        dA[i * k + p] += s
                    if grad_b:
                        av = A[i * k + p]
                        for j in range(n):
                            dB[p * n + j] += av * G[i * n + j]


# --------------------------------------------------------------------------
# long elementwise runs of transcendental functions: NumPy's SIMD loops
# --------------------------------------------------------------------------
# Numba's math calls are scalar libm (3-17 ns per element); NumPy's loops for exp, log, tanh... are
# vectorised (0.5-1.3 ns).  A forward run at least VECTOR_RUN long leaves compiled code for one NumPy
# call (objmode, ~2 µs); NumPy releases the GIL inside its loops.
VECTOR_RUN = 4096
warnings.filterwarnings("ignore", message=".*Code running in object mode won.t allow parallel")


# the declarations' ``vector`` functions, by opcode
_NUMPY_UNARY = {p.opcode: getattr(np, p.vector) for p in PRIMITIVES if p.kind == "unary" and p.vector}
_NUMPY_BINARY = {p.opcode: getattr(np, p.vector) for p in PRIMITIVES if p.kind == "binary" and p.vector}


def numpy_unary(op, x, z):
    """z = op(x) by NumPy (called from compiled code through objmode)."""
    with np.errstate(all="ignore"):
        _NUMPY_UNARY[op](x, out=z)


def numpy_binary(op, x, y, z):
    """z = op(x, y) by NumPy; x or y may have length 1 (broadcast)."""
    with np.errstate(all="ignore"):
        if op == OP_LOGADDEXP:  # max + log1p(exp(-|x - y|)): three SIMD loops instead of one scalar one
            np.subtract(x, y, out=z)
            np.abs(z, out=z)
            np.negative(z, out=z)
            np.exp(z, out=z)
            np.log1p(z, out=z)
            z += np.maximum(x, y)
            odd = ~np.isfinite(z)  # infinities (and NaN): NumPy's own rules
            if odd.any():
                z[odd] = np.logaddexp(np.broadcast_to(x, z.shape)[odd], np.broadcast_to(y, z.shape)[odd])
        else:
            _NUMPY_BINARY[op](x, y, out=z)


VECTOR_UNARY = _group(lambda p: p.opcode in _NUMPY_UNARY)
VECTOR_BINARY = _group(lambda p: p.opcode in _NUMPY_BINARY)


@_jit
def _numpy_unary_run(op, z, x):
    with numba.objmode():
        numpy_unary(op, x, z)


@_jit
def _numpy_binary_run(op, z, x, y):
    with numba.objmode():
        numpy_binary(op, x, y, z)


@intrinsic
def _memset_zero(typingctx, buf, start, n):
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
def _gemm(typingctx, C, A, B, m, n, k, trans_a, trans_b, beta):
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


@_jit
def _blas_product(C, A, B, m, n, k, trans_a, trans_b, beta):
    """C = op(A) op(B) + beta C as in _gemm, except when C is a vector (m or n is 1): np.dot then
    picks dgemv, which is about 3x faster there than dgemm (at the price of a temporary)."""
    if m > 1 and n > 1:
        _gemm(C, A, B, m, n, k, trans_a, trans_b, beta)
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


@_jit
def _zero(buf, start, n):
    if n >= MEMSET_MIN and 0 <= start and start + n <= buf.size:
        _memset_zero(buf, start, n)
        return
    for j in range(n):
        buf[start + j] = 0.0


@_jit
def _arithmetic_forward(op, buf, o, a, b, n, sa, sb):
    """add / subtract / multiply on a run of the buffer (operands of stride 0 or 1)."""
    _arithmetic_slices(op, buf[o : o + n], buf[a : a + n * sa + (1 - sa)], buf[b : b + n * sb + (1 - sb)], sa, sb)


@_jit
def _arithmetic_slices(op, z, x, y, sa, sb):
    """add / subtract / multiply: one tight loop per operand pattern.

    The runs are slices, so that the loops index from zero (no negative-index
    wraparound checks), which lets LLVM vectorise them.
    """
    n = z.size
    if sa and sb:
        if op == OP_ADD:
            for j in range(n):
                z[j] = x[j] + y[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = x[j] - y[j]
        else:
            for j in range(n):
                z[j] = x[j] * y[j]
    elif sa:
        c = y[0]
        if op == OP_ADD:
            for j in range(n):
                z[j] = x[j] + c
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = x[j] - c
        else:
            for j in range(n):
                z[j] = x[j] * c
    else:
        c = x[0]
        if op == OP_ADD:
            for j in range(n):
                z[j] = c + y[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = c - y[j]
        else:
            for j in range(n):
                z[j] = c * y[j]


@_jit(inline="always")
def _arithmetic_partials(op, x, y, z):
    """binary_partials for the scalar code's three opcodes."""
    if op == OP_MULTIPLY:
        return binary_partials(OP_MULTIPLY, x, y, z)
    if op == OP_ADD:
        return binary_partials(OP_ADD, x, y, z)
    return binary_partials(OP_SUBTRACT, x, y, z)


@_jit(inline="always")
def _arithmetic_second(op, x, y, z):
    """binary_second for the scalar code's three opcodes."""
    if op == OP_MULTIPLY:
        return binary_second(OP_MULTIPLY, x, y, z)
    return 0.0, 0.0, 0.0  # add and subtract are linear


@_jit
def _scalar_forward_run(code, buf, i):
    """Values of the scalar-code instructions from ``i`` on (the arithmetic of loops over Python
    floats) in one tight loop; returns the index of the last one."""
    end = code.shape[0] // 4
    while i < end:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        op = w & S_OPCODE_MASK
        o = code[4 * i + 1]
        a = code[4 * i + 2]
        b = code[4 * i + 3]
        # a store in each arm and no `else`: LLVM then keeps the branches (well predicted) instead of
        # computing all three and selecting, which puts the select on the chain through memory
        if op == OP_MULTIPLY:
            buf[o] = buf[a] * buf[b]
        elif op == OP_ADD:
            buf[o] = buf[a] + buf[b]
        elif op == OP_SUBTRACT:
            buf[o] = buf[a] - buf[b]
        i += 1
    return i - 1


@_jit
def _scalar_reverse_run(code, buf, N, i):
    """Adjoints of the scalar-code instructions from ``i`` down, in one tight loop; returns the index
    of the last one."""
    n = np.uint64(N)  # unsigned, like the slots: n + a indexes without a negative-index check
    while i >= 0:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if flags & F_ACTIVE:
            o = code[4 * i + 1]
            a = code[4 * i + 2]
            b = code[4 * i + 3]
            g = buf[n + o]
            dx, dy = _arithmetic_partials(w & S_OPCODE_MASK, buf[a], buf[b], buf[o])
            if flags & F_GRAD_A:
                buf[n + a] = g * dx if flags & F_INIT_A else buf[n + a] + g * dx
            if flags & F_GRAD_B:
                buf[n + b] = g * dy if flags & F_INIT_B else buf[n + b] + g * dy
        i -= 1
    return i + 1


@_jit
def _broadcast_forward(buf, o, a, pre, r, post):
    """Each of the ``pre`` blocks of ``post`` values repeated ``r`` times (slices indexed from zero, so
    the copies vectorise)."""
    for p in range(pre):
        if post == 1:
            z = buf[o + p * r : o + (p + 1) * r]
            v = buf[a + p]
            for k in range(r):
                z[k] = v
            continue
        x = buf[a + p * post : a + (p + 1) * post]
        for k in range(r):
            z = buf[o + (p * r + k) * post : o + (p * r + k + 1) * post]
            for q in range(post):
                z[q] = x[q]


@_jit
def _unbroadcast(t, o, a, pre, r, post, init):
    """Adjoints ``t`` (a value-sized array): the adjoint of each broadcast block is the sum of its ``r``
    copies' adjoints.  ``init``: the block's adjoint is written, not added to."""
    for p in range(pre):
        if post == 1:
            s = _sum_contiguous(t, o + p * r, r)
            t[a + p] = s if init else t[a + p] + s
            continue
        dx = t[a + p * post : a + (p + 1) * post]
        for k in range(r):
            g = t[o + (p * r + k) * post : o + (p * r + k + 1) * post]
            if init and k == 0:
                for q in range(post):
                    dx[q] = g[q]
            else:
                for q in range(post):
                    dx[q] += g[q]


@_jit
def forward_sweep(ins, code, aux, buf, fused, skip_local=False):
    """Values of every instruction, in tape order.  With ``fused``, the fused regions run a tile at
    a time and keep their intermediate values in scratch (not for the k-seed reverse, which reads
    every value); with ``skip_local`` too, the regions whose values only the caller reads do not
    run at all (an HVP: its second-order sweep recomputes them)."""
    i = -1
    while i < ins.shape[0] - 1:
        i += 1
        op = ins[i, C_OP]
        o = ins[i, C_OUT]
        n = ins[i, C_N]
        a = ins[i, C_A]
        if code[4 * i] & S_SCALAR:
            i = _scalar_forward_run(code, buf, i)
        elif fused and code[4 * i] & S_START:
            if skip_local and code[4 * i] & S_LOCAL:
                i = _region_end(code, i)
            else:
                i = _region_forward(ins, code, buf, i)
        elif UNARY[op]:
            if n >= VECTOR_RUN and VECTOR_UNARY[op]:
                _numpy_unary_run(op, buf[o : o + n], buf[a : a + n])
            elif n >= 32:
                _unary_forward_run(op, buf[o : o + n], buf[a : a + n])
            else:
                for j in range(n):
                    buf[o + j] = unary_value(op, buf[a + j])
        elif BINARY[op]:
            b = ins[i, C_B]
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            if n >= VECTOR_RUN and VECTOR_BINARY[op]:
                _numpy_binary_run(op, buf[o : o + n], buf[a : a + n * sa + (1 - sa)], buf[b : b + n * sb + (1 - sb)])
            elif ARITHMETIC[op] and n >= 32:
                _arithmetic_forward(op, buf, o, a, b, n, sa, sb)
            else:
                for j in range(n):
                    buf[o + j] = binary_value(op, buf[a + j * sa], buf[b + j * sb])
        elif op == OP_WHERE:
            b = ins[i, C_B]
            c = ins[i, C_C]
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            sc = 1 if ins[i, C_NC] > 1 else 0
            for j in range(n):
                buf[o + j] = buf[b + j * sb] if buf[a + j * sa] != 0.0 else buf[c + j * sc]
        elif op == OP_SUM and ins[i, C_P2] == 1 and ins[i, C_P0] == 1:
            buf[o] = _sum_contiguous(buf, a, ins[i, C_P1])
        elif REDUCTION[op]:
            _reduce_forward(op, buf, o, a, ins[i, C_P0], ins[i, C_P1], ins[i, C_P2])
        elif op == OP_CUMSUM:
            pre = ins[i, C_P0]
            r = ins[i, C_P1]
            post = ins[i, C_P2]
            for p in range(pre):
                for q in range(post):
                    s = 0.0
                    for k in range(r):
                        idx = p * r * post + k * post + q
                        s += buf[a + idx]
                        buf[o + idx] = s
        elif op == OP_BROADCAST:
            _broadcast_forward(buf, o, a, ins[i, C_P0], ins[i, C_P1], ins[i, C_P2])
        elif op == OP_GATHER:
            start = ins[i, C_P0]
            for j in range(n):
                buf[o + j] = buf[aux[start + j]]
        elif op == OP_MATMUL:
            _matmul_forward(buf, o, a, ins[i, C_B], ins[i, C_P0], ins[i, C_P1], ins[i, C_P2], ins[i, C_P3])
        else:
            raise ValueError("unknown opcode: not in the primitive table")


@_jit
def guards_hold(aux, buf):
    """True when every recorded branch condition has its traced outcome."""
    start = aux[M_GUARDS]
    for g in range(aux[M_NGUARDS]):
        taken = buf[aux[start + 2 * g]] != 0.0
        if taken != (aux[start + 2 * g + 1] != 0):
            return False
    return True


@_jit
def _accumulate_operand(op, g, dx, other, n, sx, so, sign, init):
    """Adjoint of one operand of add / subtract / multiply over a run of n."""
    # d(x + y) = (1, 1); d(x - y) = (1, -1); d(x y) = (y, x)
    if sx and init:
        if op == OP_MULTIPLY:
            if so:
                for j in range(n):
                    dx[j] = g[j] * other[j]
            else:
                c = other[0]
                for j in range(n):
                    dx[j] = g[j] * c
        elif sign > 0.0:
            for j in range(n):
                dx[j] = g[j]
        else:
            for j in range(n):
                dx[j] = -g[j]
    elif sx:
        if op == OP_MULTIPLY:
            if so:
                for j in range(n):
                    dx[j] += g[j] * other[j]
            else:
                c = other[0]
                for j in range(n):
                    dx[j] += g[j] * c
        elif sign > 0.0:
            for j in range(n):
                dx[j] += g[j]
        else:
            for j in range(n):
                dx[j] -= g[j]
    else:  # a scalar operand used n times: sum the contributions
        acc = 0.0
        if op == OP_MULTIPLY:
            for j in range(n):
                acc += g[j] * other[j * so]
        else:
            for j in range(n):
                acc += g[j]
        dx[0] = sign * acc if init else dx[0] + sign * acc


@_jit
def _arithmetic_reverse(op, buf, N, o, a, b, n, sa, sb, ga, gb, ia, ib):
    g = buf[N + o : N + o + n]
    la = n * sa + (1 - sa)
    lb = n * sb + (1 - sb)
    sign_b = -1.0 if op == OP_SUBTRACT else 1.0
    if ga:
        _accumulate_operand(op, g, buf[N + a : N + a + la], buf[b : b + lb], n, sa, sb, 1.0, ia)
    if gb:
        _accumulate_operand(op, g, buf[N + b : N + b + lb], buf[a : a + la], n, sb, sa, sign_b, ib)


@_jit
def _prod_reverse(buf, N, base, r, post, q, g):
    # d prod / d x_k = product of all the others = prefix_k * suffix_k: exact with zeros
    prefix = np.empty(r)
    acc = 1.0
    for k in range(r):
        prefix[k] = acc
        acc *= buf[base + k * post + q]
    acc = 1.0
    for k in range(r - 1, -1, -1):
        pos = base + k * post + q
        buf[N + pos] += g * prefix[k] * acc
        acc *= buf[pos]


@_jit
def _sum_reverse(t, o, a, pre, r, post, init):
    """Adjoints ``t``: the adjoint of a sum copied to every summand, one contiguous row at a time."""
    for p in range(pre):
        if post == 1:
            dx = t[a + p * r : a + (p + 1) * r]
            g1 = t[o + p]
            if init:
                for k in range(r):
                    dx[k] = g1
            else:
                for k in range(r):
                    dx[k] += g1
            continue
        g = t[o + p * post : o + (p + 1) * post]
        for k in range(r):
            start = a + (p * r + k) * post
            dx = t[start : start + post]
            if init:
                for q in range(post):
                    dx[q] = g[q]
            else:
                for q in range(post):
                    dx[q] += g[q]


# --------------------------------------------------------------------------
# fused regions: long elementwise chains a tile at a time (see fasttape.fusion)
# --------------------------------------------------------------------------
@_jit
def _region_end(code, s):
    """The last row of the region that starts at row ``s``."""
    e = s
    rows = code.shape[0] // 4
    while e + 1 < rows:
        w = code[4 * (e + 1)]
        if not (w & S_FUSED) or (w & S_START):
            break
        e += 1
    return e


@_jit
def _region_start(code, e):
    s = e
    while not (code[4 * s] & S_START):
        s -= 1
    return s


@_jit
def _tile_operand(ins, code, buf, scratch, i, k, t0, size):
    """Operand k (0: a, 1: b) of region row i on the tile [t0, t0 + size): the region's scratch when
    the region produced it, else the buffer (one element for a scalar operand); and its stride.
    ``buf`` may be the value half or the adjoint half: the same runs index both."""
    q = code[4 * i + 2 + k]
    if q != NO_SOURCE:
        return scratch[q * FUSE_TILE : q * FUSE_TILE + size], 1
    a = ins[i, C_A + 2 * k]
    if ins[i, C_NA + 2 * k] == 1:
        return buf[a : a + 1], 0
    return buf[a + t0 : a + t0 + size], 1


@_jit
def _binary_slices(op, z, x, y, sx, sy):
    if ARITHMETIC[op]:
        _arithmetic_slices(op, z, x, y, sx, sy)
    else:
        for j in range(z.size):
            z[j] = binary_value(op, x[j * sx], y[j * sy])


@_jit
def _region_values(ins, code, buf, values, s, e, t0, size, store, needed_only=False):
    """Values of region rows s..e on one tile, into the scratch ``values``; with ``store``, the
    outputs read after the region also go to the buffer; with ``needed_only``, only the rows the
    first-order reverse reads.  The loops are the plain sweep's, so the values are the same bits."""
    for i in range(s, e + 1):
        w = code[4 * i]
        if needed_only and not (w & S_RECOMPUTE):
            continue
        op = w & S_OPCODE_MASK
        if op == OP_SUM:  # a whole-array sum closing the region: tile sums into the zeroed output
            if store:
                q = code[4 * i + 2]
                buf[ins[i, C_OUT]] += _sum_contiguous(values, q * FUSE_TILE, size)
            continue
        p = code[4 * i + 1]
        z = values[p * FUSE_TILE : p * FUSE_TILE + size]
        x, sx = _tile_operand(ins, code, buf, values, i, 0, t0, size)
        if UNARY[op]:
            _unary_forward_run(op, z, x)
        else:
            y, sy = _tile_operand(ins, code, buf, values, i, 1, t0, size)
            _binary_slices(op, z, x, y, sx, sy)
        if store and (w & S_STORE):
            o = ins[i, C_OUT] + t0
            buf[o : o + size] = z


@_jit
def _region_forward(ins, code, buf, s):
    """The fused forward of the region starting at row ``s``; returns its last row."""
    e = _region_end(code, s)
    n = ins[s, C_N]
    if (code[4 * e] & S_OPCODE_MASK) == OP_SUM:
        buf[ins[e, C_OUT]] = 0.0
    values = np.empty((e - s + 1) * FUSE_TILE)
    for t0 in range(0, n, FUSE_TILE):
        _region_values(ins, code, buf, values, s, e, t0, min(FUSE_TILE, n - t0), True)
    return e


@_jit
def _binary_reverse_slices(op, g, x, y, z, sx, sy, gx, gy, ga, gb, ia, ib):
    """g times the partials of a binary instruction into gx, gy (stride sx, sy): assigned where
    ``ia`` / ``ib`` (the operand's first writer, never a scalar), else accumulated."""
    if ARITHMETIC[op]:
        n = g.size
        if ga:
            _accumulate_operand(op, g, gx, y, n, sx, sy, 1.0, ia)
        if gb:
            _accumulate_operand(op, g, gy, x, n, sy, sx, -1.0 if op == OP_SUBTRACT else 1.0, ib)
        return
    if ia and ga:  # a first writer of a (sharing a slot with b, b then adds to it)
        for j in range(g.size):
            gx[j] = 0.0
    if ib and gb:
        for j in range(g.size):
            gy[j] = 0.0
    for j in range(g.size):
        dx, dy = binary_partials(op, x[j * sx], y[j * sy], z[j])
        if ga:
            gx[j * sx] += g[j] * dx
        if gb:
            gy[j * sy] += g[j] * dy


@_jit
def _zero_first_written_outside(ins, code, buf, adj2, N, k, s, e):
    """Zero the adjoints (first order, and k second-order ones in ``adj2``) of the outside operands
    whose adjoint region rows s..e write first (``F_INIT``): the tiles then only accumulate, since
    views of one array at different offsets would overwrite each other's contributions tile by tile."""
    for i in range(s, e + 1):
        flags = code[4 * i] >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE):
            continue
        for kk in range(2 if BINARY[code[4 * i] & S_OPCODE_MASK] else 1):
            if code[4 * i + 2 + kk] == NO_SOURCE and flags & (F_GRAD_A << kk) and flags & (F_INIT_A << kk):
                _zero_adjoints(buf, adj2, N, k, ins[i, C_A + 2 * kk], ins[i, C_NA + 2 * kk], True)


@_jit
def _broadcast_into_tile(dst, value, init):
    """A closing sum's adjoint into its operand's tile: dst = or += value (d sum = 1)."""
    if init:
        dst[:] = value
    else:
        dst += value


@_jit
def _tile_adjoints_from_outside(ins, code, buf, adj2, N, k, grads, grads2, s, e, t0, size):
    """Start a tile's scratch adjoints (first order in ``grads``, k second-order ones in ``grads2``):
    what instructions after the region wrote into a stored output's adjoints, else zero.  Rows whose
    first adjoint writer is in the region (S_GZERO) and a closing sum are left to that writer."""
    span = (e - s + 1) * FUSE_TILE
    for i in range(s, e + 1):
        w = code[4 * i]
        if (w & S_OPCODE_MASK) == OP_SUM or (w & S_GZERO):
            continue
        at = code[4 * i + 1] * FUSE_TILE
        if w & S_STORE:
            o = ins[i, C_OUT] + t0
            grads[at : at + size] = buf[N + o : N + o + size]
            for d in range(k):
                grads2[d * span + at : d * span + at + size] = adj2[d * N + o : d * N + o + size]
        else:
            grads[at : at + size] = 0.0
            for d in range(k):
                grads2[d * span + at : d * span + at + size] = 0.0


@_jit
def _region_reverse(ins, code, buf, N, e, skipped_local):
    """The fused reverse of the region ending at row ``e``: per tile, recompute its values from the
    region's inputs, then run its adjoints backwards in scratch; only the adjoints of operands from
    outside the region reach the buffer.  With ``skipped_local``, the forward skipped the region if it
    is S_LOCAL: the tiles then compute all of its values and store what the caller reads, as the fused
    forward would (the same loops, tiles in the same order: the same bits).  Returns the region's
    first row."""
    s = _region_start(code, e)
    skipped = skipped_local and (code[4 * s] & S_LOCAL) != 0
    n = ins[s, C_N]
    adjoints = buf[N:]
    _zero_first_written_outside(ins, code, buf, buf[:0], N, 0, s, e)
    if skipped and (code[4 * e] & S_OPCODE_MASK) == OP_SUM:
        buf[ins[e, C_OUT]] = 0.0
    values = np.empty((e - s + 1) * FUSE_TILE)
    grads = np.empty((e - s + 1) * FUSE_TILE)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        _region_values(ins, code, buf, values, s, e, t0, size, skipped, not skipped)
        _tile_adjoints_from_outside(ins, code, buf, buf[:0], N, 0, grads, grads, s, e, t0, size)
        for i in range(e, s - 1, -1):
            w = code[4 * i]
            flags = w >> S_FLAGS_SHIFT
            if not (flags & F_ACTIVE):
                continue
            op = w & S_OPCODE_MASK
            if op == OP_SUM:  # d sum = 1 for every element
                if flags & F_GRAD_A:
                    at = code[4 * i + 2] * FUSE_TILE
                    _broadcast_into_tile(grads[at : at + size], adjoints[ins[i, C_OUT]], flags & F_INIT_A)
                continue
            p = code[4 * i + 1]
            g = grads[p * FUSE_TILE : p * FUSE_TILE + size]
            z = values[p * FUSE_TILE : p * FUSE_TILE + size]
            x, sx = _tile_operand(ins, code, buf, values, i, 0, t0, size)
            gx, _ = _tile_operand(ins, code, adjoints, grads, i, 0, t0, size)
            # the first writer of an intermediate's adjoint assigns (outside operands were zeroed)
            ia = (flags & F_INIT_A) != 0 and code[4 * i + 2] != NO_SOURCE
            if UNARY[op]:
                if flags & F_GRAD_A:
                    _unary_reverse_run(op, g, gx, x, z, ia)
            else:
                y, sy = _tile_operand(ins, code, buf, values, i, 1, t0, size)
                gy, _ = _tile_operand(ins, code, adjoints, grads, i, 1, t0, size)
                ib = (flags & F_INIT_B) != 0 and code[4 * i + 3] != NO_SOURCE
                _binary_reverse_slices(op, g, x, y, z, sx, sy, gx, gy, flags & F_GRAD_A, flags & F_GRAD_B, ia, ib)
    return s


@_jit
def reverse_sweep(ins, code, aux, buf, skipped_local):
    """Accumulate adjoints buf[N + p] in reverse tape order (seeded by the caller).
    ``skipped_local``: the forward skipped the S_LOCAL regions (run_value_and_grad)."""
    N = aux[M_NVALS]
    i = ins.shape[0]
    while i > 0:
        i -= 1
        op = ins[i, C_OP]
        n = ins[i, C_N]
        if code[4 * i] & S_SCALAR:
            i = _scalar_reverse_run(code, buf, N, i)
            continue
        if code[4 * i] & S_FUSED:
            i = _region_reverse(ins, code, buf, N, i, skipped_local)
            continue
        flags = ins[i, C_FLAGS]
        if not (flags & F_ACTIVE):
            continue
        o = ins[i, C_OUT]
        a = ins[i, C_A]
        ga = (flags & F_GRAD_A) != 0
        gb = (flags & F_GRAD_B) != 0
        ia = (flags & F_INIT_A) != 0
        ib = (flags & F_INIT_B) != 0
        if UNARY[op]:
            if n >= 32:
                _unary_reverse_run(
                    op, buf[N + o : N + o + n], buf[N + a : N + a + n], buf[a : a + n], buf[o : o + n], ia
                )
            else:
                for j in range(n):
                    v = buf[N + o + j] * unary_partial(op, buf[a + j], buf[o + j])
                    buf[N + a + j] = v if ia else buf[N + a + j] + v
        elif BINARY[op]:
            b = ins[i, C_B]
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            if ARITHMETIC[op] and n >= 32:
                _arithmetic_reverse(op, buf, N, o, a, b, n, sa, sb, ga, gb, ia, ib)
                continue
            if ia and not sa:  # a scalar operand collects n contributions
                buf[N + a] = 0.0
                ia = False
            if ib and not sb:
                buf[N + b] = 0.0
                ib = False
            for j in range(n):
                g = buf[N + o + j]
                dx, dy = binary_partials(op, buf[a + j * sa], buf[b + j * sb], buf[o + j])
                if ga:
                    pa = N + a + j * sa
                    buf[pa] = g * dx if ia else buf[pa] + g * dx
                if gb:
                    pb = N + b + j * sb
                    buf[pb] = g * dy if ib else buf[pb] + g * dy
        elif op == OP_WHERE:
            b = ins[i, C_B]
            c = ins[i, C_C]
            gc = (flags & F_GRAD_C) != 0
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            sc = 1 if ins[i, C_NC] > 1 else 0
            if ib:
                _zero(buf, N + b, ins[i, C_NB])
            if (flags & F_INIT_C) != 0:
                _zero(buf, N + c, ins[i, C_NC])
            for j in range(n):
                g = buf[N + o + j]
                if buf[a + j * sa] != 0.0:
                    if gb:
                        buf[N + b + j * sb] += g
                elif gc:
                    buf[N + c + j * sc] += g
        elif REDUCTION[op]:
            pre = ins[i, C_P0]
            r = ins[i, C_P1]
            post = ins[i, C_P2]
            if op == OP_SUM:
                _sum_reverse(buf[N:], o, a, pre, r, post, ia)
                continue
            if ia:
                _zero(buf, N + a, ins[i, C_NA])
            for p in range(pre):
                base = a + p * r * post
                for q in range(post):
                    out = o + p * post + q
                    g = buf[N + out]
                    z = buf[out]
                    if op == OP_LOGSUMEXP:
                        for k in range(r):  # d logsumexp = softmax
                            pos = base + k * post + q
                            buf[N + pos] += g * math.exp(buf[pos] - z)
                    elif op == OP_PROD:
                        _prod_reverse(buf, N, base, r, post, q, g)
                    else:  # max / min: ties share the adjoint equally, as JAX
                        count = 0
                        for k in range(r):
                            if buf[base + k * post + q] == z:
                                count += 1
                        for k in range(r):
                            pos = base + k * post + q
                            # a NaN maximum matches no element: NaN everywhere, as JAX's mask / count (0 / 0)
                            share = (1.0 if buf[pos] == z else 0.0) / count if count else math.nan
                            buf[N + pos] += g * share
        elif op == OP_CUMSUM:
            pre = ins[i, C_P0]
            r = ins[i, C_P1]
            post = ins[i, C_P2]
            if ia:
                _zero(buf, N + a, ins[i, C_NA])
            for p in range(pre):
                for q in range(post):
                    s = 0.0
                    for k in range(r - 1, -1, -1):  # adjoint of a prefix sum: suffix sum
                        idx = p * r * post + k * post + q
                        s += buf[N + o + idx]
                        buf[N + a + idx] += s
        elif op == OP_BROADCAST:
            pre = ins[i, C_P0]
            r = ins[i, C_P1]
            post = ins[i, C_P2]
            _unbroadcast(buf[N:], o, a, pre, r, post, ia)
        elif op == OP_GATHER:
            start = ins[i, C_P0]
            for j in range(n):  # adjoint of a gather: scatter-add
                buf[N + aux[start + j]] += buf[N + o + j]
        elif op == OP_MATMUL:
            b = ins[i, C_B]
            _matmul_reverse(buf, N, o, a, b, ins[i, C_P0], ins[i, C_P1], ins[i, C_P2], ins[i, C_P3], ga, gb, ia, ib)
        else:
            raise ValueError("unknown opcode: not in the primitive table")


# --------------------------------------------------------------------------
# forward mode and second order: k directions at once
#
# Tangents and second-order adjoints live in their own buffers, direction-major:
# direction d of position p is at [d * n_values + p], so each direction is laid
# out exactly like the values and can go through the same slicing (and BLAS).
# Only active instructions and operands (F_ACTIVE, F_GRAD_*) contribute, so an
# input that is not differentiated never turns 0 x inf into NaN.
# --------------------------------------------------------------------------
@_jit
def _matmul_into(dst, A, B, m, k, n, accumulate):
    """dst (m x n) = or += A (m x k) @ B (k x n), all flat C-order runs."""
    if m * k * n >= 32768:
        _blas_product(dst, A, B, m, n, k, False, False, 1.0 if accumulate else 0.0)
        return
    if not accumulate:
        for j in range(m * n):
            dst[j] = 0.0
    for i in range(m):
        for p in range(k):
            av = A[i * k + p]
            for j in range(n):
                dst[i * n + j] += av * B[p * n + j]


@_jit
def _matmul_t_into(dst, A, B, m, k, n, left):
    """dst += Aᵀ B (left: A is m x k, B is m x n, dst k x n) or A Bᵀ (A m x n, B k x n, dst m x k)."""
    if not left and n == 1:
        _add_outer(dst, A, B, m, k)
        return
    if m * k * n >= 32768:
        if left:  # (k x n) += (m x k)ᵀ (m x n)
            _blas_product(dst, A, B, k, n, m, True, False, 1.0)
        else:  # (m x k) += (m x n) (k x n)ᵀ
            _blas_product(dst, A, B, m, k, n, False, True, 1.0)
        return
    if left:
        for i in range(m):
            for p in range(k):
                av = A[i * k + p]
                for j in range(n):
                    dst[p * n + j] += av * B[i * n + j]
    else:
        for i in range(m):
            for p in range(k):
                s = 0.0
                for j in range(n):
                    s += A[i * n + j] * B[p * n + j]
                dst[i * k + p] += s


@_jit
def _tangent_unary(op, x, z, ta, to):
    """Tangent run of z = op(x): to = op'(x) ta."""
    if op == OP_SQUARE:
        for j in range(x.size):
            to[j] = 2.0 * x[j] * ta[j]
    elif op == OP_NEGATIVE:
        for j in range(x.size):
            to[j] = -ta[j]
    else:
        for j in range(x.size):
            to[j] = unary_partial(op, x[j], z[j]) * ta[j]


@_jit
def _tangent_binary(op, x, y, z, tx, ty, to, n, sa, sb, ga, gb):
    """Tangent run of z = op(x, y): to = f_x tx + f_y ty (active operands only)."""
    if ARITHMETIC[op] and sa and sb and ga and gb:
        if op == OP_ADD:
            for j in range(n):
                to[j] = tx[j] + ty[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                to[j] = tx[j] - ty[j]
        else:
            for j in range(n):
                to[j] = y[j] * tx[j] + x[j] * ty[j]
        return
    if ARITHMETIC[op] and ((ga and not gb and sa) or (gb and not ga and sb)):
        # one active full-length operand against a passive one
        if ga:
            if op == OP_MULTIPLY and not sb:
                c = y[0]
                for j in range(n):
                    to[j] = c * tx[j]
            elif op == OP_MULTIPLY:
                for j in range(n):
                    to[j] = y[j] * tx[j]
            else:
                for j in range(n):
                    to[j] = tx[j]
        else:
            if op == OP_MULTIPLY and not sa:
                c = x[0]
                for j in range(n):
                    to[j] = c * ty[j]
            elif op == OP_MULTIPLY:
                for j in range(n):
                    to[j] = x[j] * ty[j]
            elif op == OP_SUBTRACT:
                for j in range(n):
                    to[j] = -ty[j]
            else:
                for j in range(n):
                    to[j] = ty[j]
        return
    for j in range(n):
        dx, dy = binary_partials(op, x[j * sa], y[j * sb], z[j])
        t = 0.0
        if ga:
            t += dx * tx[j * sa]
        if gb:
            t += dy * ty[j * sb]
        to[j] = t


@_jit
def _reverse_unary_run(op, x, z, gz, gx):
    for j in range(x.size):
        gx[j] += gz[j] * unary_partial(op, x[j], z[j])


@_jit
def _second_unary(op, x, z, g, gx, to2, tx2, tx, first, init):
    """Second-order run of z = op(x): x̄ += z̄ f', x̄' += z̄' f' + z̄ f'' x'.

    ``first``: also update the first-order adjoint; ``init``: assign (this is the
    first write of x's adjoints) instead of adding.
    """
    n = x.size
    if op == OP_SQUARE:  # f' = 2x, f'' = 2: one fused loop per case
        if first and init:
            for j in range(n):
                gx[j] = 2.0 * g[j] * x[j]
                tx2[j] = 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        elif first:
            for j in range(n):
                gx[j] += 2.0 * g[j] * x[j]
                tx2[j] += 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        elif init:
            for j in range(n):
                tx2[j] = 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        else:
            for j in range(n):
                tx2[j] += 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        return
    if op == OP_NEGATIVE:
        if first:
            if init:
                for j in range(n):
                    gx[j] = -g[j]
            else:
                for j in range(n):
                    gx[j] -= g[j]
        if init:
            for j in range(n):
                tx2[j] = -to2[j]
        else:
            for j in range(n):
                tx2[j] -= to2[j]
        return
    for j in range(n):
        d1 = unary_partial(op, x[j], z[j])
        d2 = unary_second(op, x[j], z[j], d1)
        if first:
            gx[j] = g[j] * d1 if init else gx[j] + g[j] * d1
        v = to2[j] * d1 + g[j] * d2 * tx[j]
        tx2[j] = v if init else tx2[j] + v


@_jit
def _scale_into(dst, src, w, sw, c, n, init):
    """dst = or += src * s, with s = c, or s = w[j] (a passive operand) when c == 0."""
    if c == 0.0 and sw:
        if init:
            for j in range(n):
                dst[j] = src[j] * w[j]
        else:
            for j in range(n):
                dst[j] += src[j] * w[j]
        return
    s = c if c != 0.0 else w[0]
    if init:
        for j in range(n):
            dst[j] = src[j] * s
    else:
        for j in range(n):
            dst[j] += src[j] * s


@_jit
def _scale_two(d1, s1, d2, s2, w, sw, c, n, init):
    """d1 = or += s1 * s and d2 = or += s2 * s in one pass (s as in _scale_into): an operand's first-
    and second-order adjoints of a linear instruction."""
    if c == 0.0 and sw:
        if init:
            for j in range(n):
                d1[j] = s1[j] * w[j]
                d2[j] = s2[j] * w[j]
        else:
            for j in range(n):
                d1[j] += s1[j] * w[j]
                d2[j] += s2[j] * w[j]
        return
    s = c if c != 0.0 else w[0]
    if init:
        for j in range(n):
            d1[j] = s1[j] * s
            d2[j] = s2[j] * s
    else:
        for j in range(n):
            d1[j] += s1[j] * s
            d2[j] += s2[j] * s


@_jit
def _product_two(gx, tx2, g, g2, w, t, n, init, cross):
    """gx = or += g w and tx2 = or += g2 w + (g t if cross) in one pass: one operand of d(xy)."""
    if not cross:
        _scale_two(gx, g, tx2, g2, w, 1, 0.0, n, init)
    elif init:
        for j in range(n):
            gx[j] = g[j] * w[j]
            tx2[j] = g2[j] * w[j] + g[j] * t[j]
    else:
        for j in range(n):
            gx[j] += g[j] * w[j]
            tx2[j] += g2[j] * w[j] + g[j] * t[j]


@_jit
def _product_terms(dst, g2, w, g, t, n, init, cross):
    """dst = or += g2 * w + (g * t if cross): one operand's run of d(xy)."""
    if cross:
        if init:
            for j in range(n):
                dst[j] = g2[j] * w[j] + g[j] * t[j]
        else:
            for j in range(n):
                dst[j] += g2[j] * w[j] + g[j] * t[j]
    else:
        _scale_into(dst, g2, w, 1, 0.0, n, init)


@_jit
def _second_binary(op, x, y, z, g, gx, gy, to2, tx2, ty2, tx, ty, n, sa, sb, ga, gb, first, second, ia, ib):
    """Second-order run of z = op(x, y) (``second=False``: plain reverse on the k-buffer).

    ``ia``/``ib``: this is the first write of that operand's adjoints (assign).
    """
    if ARITHMETIC[op] and (sa or not ga) and (sb or not gb):
        # add / subtract / multiply with every active operand full-length
        if op == OP_ADD or op == OP_SUBTRACT:
            sign = 1.0 if op == OP_ADD else -1.0
            if ga:
                if first:
                    _scale_two(gx, g, tx2, to2, g, 0, 1.0, n, ia)
                else:
                    _scale_into(tx2, to2, to2, 0, 1.0, n, ia)
            if gb:
                if first:
                    _scale_two(gy, g, ty2, to2, g, 0, sign, n, ib)
                else:
                    _scale_into(ty2, to2, to2, 0, sign, n, ib)
            return
        # d(xy) = (y, x), d²(xy)/dxdy = 1; first and second order in one pass where both run
        if ga:
            if first and sb:
                _product_two(gx, tx2, g, to2, y, ty, n, ia, second and gb)
            elif first:
                _scale_two(gx, g, tx2, to2, y, 0, 0.0, n, ia)
            elif sb:
                _product_terms(tx2, to2, y, g, ty, n, ia, second and gb)
            else:
                _scale_into(tx2, to2, y, 0, 0.0, n, ia)
        if gb:
            if first and sa:
                _product_two(gy, ty2, g, to2, x, tx, n, ib, second and ga)
            elif first:
                _scale_two(gy, g, ty2, to2, x, 0, 0.0, n, ib)
            elif sa:
                _product_terms(ty2, to2, x, g, tx, n, ib, second and ga)
            else:
                _scale_into(ty2, to2, x, 0, 0.0, n, ib)
        return
    # the general case: make the first write an ordinary accumulation
    if ia:
        tx2[:] = 0.0
        if first:
            gx[:] = 0.0
    if ib:
        ty2[:] = 0.0
        if first:
            gy[:] = 0.0
    for j in range(n):
        pa = j * sa
        pb = j * sb
        dx, dy = binary_partials(op, x[pa], y[pb], z[j])
        gd = to2[j]
        if second:
            gj = g[j]
            if first:
                if ga:
                    gx[pa] += gj * dx
                if gb:
                    gy[pb] += gj * dy
            dxx, dxy, dyy = binary_second(op, x[pa], y[pb], z[j])
            # only active operands carry tangents: a passive one adds no term (no 0 x NaN)
            if ga:
                cx = dxx * tx[pa] + (dxy * ty[pb] if gb else 0.0)
                tx2[pa] += gd * dx + gj * cx
            if gb:
                cy = dyy * ty[pb] + (dxy * tx[pa] if ga else 0.0)
                ty2[pb] += gd * dy + gj * cy
        else:
            if ga:
                tx2[pa] += gd * dx
            if gb:
                ty2[pb] += gd * dy


@_jit
def _scalar_tangent_run(code, buf, tan, NV, k, i):
    """Tangents (k directions) of the scalar-code instructions from ``i`` on; returns the index of
    the last one."""
    end = code.shape[0] // 4
    nv = np.uint64(NV)  # unsigned offsets, like the slots (no negative-index checks)
    while i < end:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if flags & F_ACTIVE:
            o = code[4 * i + 1]
            a = code[4 * i + 2]
            b = code[4 * i + 3]
            dx, dy = _arithmetic_partials(w & S_OPCODE_MASK, buf[a], buf[b], buf[o])
            ga = flags & F_GRAD_A
            gb = flags & F_GRAD_B
            for d in range(k):
                base = np.uint64(d) * nv
                t = 0.0
                if ga:
                    t += dx * tan[base + a]
                if gb:
                    t += dy * tan[base + b]
                tan[base + o] = t
        i += 1
    return i - 1


@_jit
def _scalar_second_run(code, buf, tan, adj2, N, k, second, i):
    """The second-order (or, without ``second``, k-seed reverse) sweep over the scalar-code
    instructions from ``i`` down; returns the index of the last one."""
    n = np.uint64(N)  # unsigned offsets, like the slots (no negative-index checks)
    while i >= 0:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE):
            i -= 1
            continue
        op = w & S_OPCODE_MASK
        o = code[4 * i + 1]
        a = code[4 * i + 2]
        b = code[4 * i + 3]
        ga = (flags & F_GRAD_A) != 0
        gb = (flags & F_GRAD_B) != 0
        ia = (flags & F_INIT_A) != 0
        ib = (flags & F_INIT_B) != 0
        x = buf[a]
        y = buf[b]
        z = buf[o]
        dx, dy = _arithmetic_partials(op, x, y, z)
        if second:
            g = buf[n + o]
            if ga:
                buf[n + a] = g * dx if ia else buf[n + a] + g * dx
            if gb:
                buf[n + b] = g * dy if ib else buf[n + b] + g * dy
            dxx, dxy, dyy = _arithmetic_second(op, x, y, z)
            for d in range(k):
                base = np.uint64(d) * n
                gd = adj2[base + o]
                if ga:
                    v = gd * dx + g * (dxx * tan[base + a] + (dxy * tan[base + b] if gb else 0.0))
                    adj2[base + a] = v if ia else adj2[base + a] + v
                if gb:
                    v = gd * dy + g * (dyy * tan[base + b] + (dxy * tan[base + a] if ga else 0.0))
                    adj2[base + b] = v if ib else adj2[base + b] + v
        else:
            for d in range(k):
                base = np.uint64(d) * n
                gd = adj2[base + o]
                if ga:
                    adj2[base + a] = gd * dx if ia else adj2[base + a] + gd * dx
                if gb:
                    adj2[base + b] = gd * dy if ib else adj2[base + b] + gd * dy
        i -= 1
    return i + 1


# --------------------------------------------------------------------------
# fused regions in the k-direction sweeps (JVP and forward-over-reverse)
# --------------------------------------------------------------------------
@_jit
def _region_tangents(ins, code, buf, tan, NV, k, values, tangents, s, e, t0, size, store):
    """Tangents (k directions) of region rows s..e on one tile, from the tile's values, into the
    scratch ``tangents`` (direction d's part starts at d R FUSE_TILE); with ``store``, the tangents of
    the outputs read after the region (and a closing sum's) also go to ``tan``; without, only the
    tangents that the second-order reverse reads (``S_TANGENT``)."""
    span = (e - s + 1) * FUSE_TILE
    for i in range(s, e + 1):
        w = code[4 * i]
        flags = w >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE) or not (store or w & S_TANGENT):
            continue
        op = w & S_OPCODE_MASK
        if op == OP_SUM:
            if store:
                q = code[4 * i + 2]
                for d in range(k):
                    tan[d * NV + ins[i, C_OUT]] += _sum_contiguous(tangents, d * span + q * FUSE_TILE, size)
            continue
        p = code[4 * i + 1]
        z = values[p * FUSE_TILE : p * FUSE_TILE + size]
        x, sx = _tile_operand(ins, code, buf, values, i, 0, t0, size)
        for d in range(k):
            scratch = tangents[d * span : (d + 1) * span]
            plane = tan[d * NV : (d + 1) * NV]
            to = scratch[p * FUSE_TILE : p * FUSE_TILE + size]
            tx, _ = _tile_operand(ins, code, plane, scratch, i, 0, t0, size)
            if UNARY[op]:
                _tangent_unary(op, x, z, tx, to)
            else:
                y, sy = _tile_operand(ins, code, buf, values, i, 1, t0, size)
                ty, _ = _tile_operand(ins, code, plane, scratch, i, 1, t0, size)
                _tangent_binary(op, x, y, z, tx, ty, to, size, sx, sy, (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0)
            if store and (w & S_STORE):
                o = ins[i, C_OUT] + t0
                plane[o : o + size] = to


@_jit
def _region_tangent(ins, code, buf, tan, NV, k, s):
    """The tangent sweep of the region starting at row ``s`` (values recomputed per tile, since the
    fused forward kept only those read after the region); returns its last row."""
    e = _region_end(code, s)
    n = ins[s, C_N]
    w = code[4 * e]
    if (w & S_OPCODE_MASK) == OP_SUM and (w >> S_FLAGS_SHIFT) & F_ACTIVE:
        for d in range(k):
            tan[d * NV + ins[e, C_OUT]] = 0.0
    span = (e - s + 1) * FUSE_TILE
    values = np.empty(span)
    tangents = np.empty(k * span)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        _region_values(ins, code, buf, values, s, e, t0, size, False, True)  # tangents read the same
        _region_tangents(ins, code, buf, tan, NV, k, values, tangents, s, e, t0, size, True)
    return e


@_jit
def _region_second(ins, code, buf, tan, adj2, N, k, e):
    """Forward-over-reverse of the region ending at row ``e``: per tile, recompute its values and
    tangents, then run its first-order adjoint and the k second-order adjoints backwards in scratch;
    only the adjoints of operands from outside the region reach ``buf`` and ``adj2``.  Returns the
    region's first row."""
    s = _region_start(code, e)
    n = ins[s, C_N]
    adjoints = buf[N:]
    _zero_first_written_outside(ins, code, buf, adj2, N, k, s, e)
    span = (e - s + 1) * FUSE_TILE
    values = np.empty(span)
    tangents = np.empty(k * span)
    grads = np.empty(span)
    grads2 = np.empty(k * span)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        # second partials read no value that the first partials do not (S_RECOMPUTE covers both)
        _region_values(ins, code, buf, values, s, e, t0, size, False, True)
        _region_tangents(ins, code, buf, tan, N, k, values, tangents, s, e, t0, size, False)
        _tile_adjoints_from_outside(ins, code, buf, adj2, N, k, grads, grads2, s, e, t0, size)
        for i in range(e, s - 1, -1):
            w = code[4 * i]
            flags = w >> S_FLAGS_SHIFT
            if not (flags & F_ACTIVE):
                continue
            op = w & S_OPCODE_MASK
            ia = (flags & F_INIT_A) != 0 and code[4 * i + 2] != NO_SOURCE
            if op == OP_SUM:  # d sum = 1, d² sum = 0: both adjoints broadcast into the tile
                if flags & F_GRAD_A:
                    o = ins[i, C_OUT]
                    at = code[4 * i + 2] * FUSE_TILE
                    _broadcast_into_tile(grads[at : at + size], adjoints[o], ia)
                    for d in range(k):
                        _broadcast_into_tile(grads2[d * span + at : d * span + at + size], adj2[d * N + o], ia)
                continue
            p = code[4 * i + 1]
            g = grads[p * FUSE_TILE : p * FUSE_TILE + size]
            z = values[p * FUSE_TILE : p * FUSE_TILE + size]
            x, sx = _tile_operand(ins, code, buf, values, i, 0, t0, size)
            gx, _ = _tile_operand(ins, code, adjoints, grads, i, 0, t0, size)
            for d in range(k):
                second = grads2[d * span : (d + 1) * span]
                plane2 = adj2[d * N : (d + 1) * N]
                scratch = tangents[d * span : (d + 1) * span]
                plane = tan[d * N : (d + 1) * N]
                to2 = second[p * FUSE_TILE : p * FUSE_TILE + size]
                tx2, _ = _tile_operand(ins, code, plane2, second, i, 0, t0, size)
                tx, _ = _tile_operand(ins, code, plane, scratch, i, 0, t0, size)
                if UNARY[op]:
                    _second_unary(op, x, z, g, gx, to2, tx2, tx, d == 0, ia)
                    continue
                y, sy = _tile_operand(ins, code, buf, values, i, 1, t0, size)
                gy, _ = _tile_operand(ins, code, adjoints, grads, i, 1, t0, size)
                ty2, _ = _tile_operand(ins, code, plane2, second, i, 1, t0, size)
                ty, _ = _tile_operand(ins, code, plane, scratch, i, 1, t0, size)
                ib = (flags & F_INIT_B) != 0 and code[4 * i + 3] != NO_SOURCE
                _second_binary(
                    op, x, y, z, g, gx, gy, to2, tx2, ty2, tx, ty, size, sx, sy,
                    (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0, d == 0, True, ia, ib,
                )  # fmt: skip
    return s


@_jit
def tangent_sweep(ins, code, aux, buf, tan, k, skip_local):
    """Tangents of every active instruction for k directions (after a forward sweep).  With
    ``skip_local``, the regions whose values only the caller reads (S_LOCAL) are skipped: the second-order
    sweep recomputes their tangents tile by tile, and only a JVP returns the output's tangent."""
    NV = aux[M_NVALS]
    i = -1
    while i < ins.shape[0] - 1:
        i += 1
        if code[4 * i] & S_SCALAR:
            i = _scalar_tangent_run(code, buf, tan, NV, k, i)
            continue
        if code[4 * i] & S_START:
            if skip_local and code[4 * i] & S_LOCAL:
                i = _region_end(code, i)
            else:
                i = _region_tangent(ins, code, buf, tan, NV, k, i)
            continue
        flags = ins[i, C_FLAGS]
        if not (flags & F_ACTIVE):
            continue
        op = ins[i, C_OP]
        o = ins[i, C_OUT]
        n = ins[i, C_N]
        a = ins[i, C_A]
        b = ins[i, C_B]
        c = ins[i, C_C]
        ga = (flags & F_GRAD_A) != 0
        gb = (flags & F_GRAD_B) != 0
        gc = (flags & F_GRAD_C) != 0
        pre = ins[i, C_P0]
        r = ins[i, C_P1]
        post = ins[i, C_P2]
        if UNARY[op] and n < SMALL_RUN:
            for j in range(n):
                d1 = unary_partial(op, buf[a + j], buf[o + j])
                for d in range(k):
                    tan[d * NV + o + j] = d1 * tan[d * NV + a + j]
        elif UNARY[op]:
            x = buf[a : a + n]
            z = buf[o : o + n]
            for d in range(k):
                _tangent_unary(op, x, z, tan[d * NV + a : d * NV + a + n], tan[d * NV + o : d * NV + o + n])
        elif BINARY[op] and n < SMALL_RUN:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            for j in range(n):
                dx, dy = binary_partials(op, buf[a + j * sa], buf[b + j * sb], buf[o + j])
                for d in range(k):
                    t = 0.0
                    if ga:
                        t += dx * tan[d * NV + a + j * sa]
                    if gb:
                        t += dy * tan[d * NV + b + j * sb]
                    tan[d * NV + o + j] = t
        elif BINARY[op]:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            la = ins[i, C_NA]
            lb = ins[i, C_NB]
            x = buf[a : a + la]
            y = buf[b : b + lb]
            z = buf[o : o + n]
            for d in range(k):
                base = d * NV
                _tangent_binary(
                    op, x, y, z, tan[base + a : base + a + la], tan[base + b : base + b + lb],
                    tan[base + o : base + o + n], n, sa, sb, ga, gb,
                )  # fmt: skip
        elif op == OP_WHERE:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            sc = 1 if ins[i, C_NC] > 1 else 0
            for j in range(n):
                taken = buf[a + j * sa] != 0.0
                for d in range(k):
                    if taken:
                        tan[d * NV + o + j] = tan[d * NV + b + j * sb] if gb else 0.0
                    else:
                        tan[d * NV + o + j] = tan[d * NV + c + j * sc] if gc else 0.0
        elif op == OP_SUM:
            for d in range(k):
                _sum_forward(tan[d * NV : (d + 1) * NV], o, a, pre, r, post)
        elif REDUCTION[op]:
            for d in range(k):
                t = tan[d * NV : (d + 1) * NV]
                for p in range(pre):
                    base = a + p * r * post
                    for q in range(post):
                        out = o + p * post + q
                        z = buf[out]
                        acc = 0.0
                        if op == OP_LOGSUMEXP:
                            for kk in range(r):  # d logsumexp = softmax
                                pos = base + kk * post + q
                                acc += math.exp(buf[pos] - z) * t[pos]
                        elif op == OP_PROD:
                            prod = 1.0  # dual-number product: exact with zeros
                            for kk in range(r):
                                pos = base + kk * post + q
                                acc = acc * buf[pos] + prod * t[pos]
                                prod *= buf[pos]
                        else:  # max / min: the mean tangent over the ties, as JAX
                            count = 0
                            for kk in range(r):
                                pos = base + kk * post + q
                                if buf[pos] == z:
                                    count += 1
                                    acc += t[pos]
                            acc = acc / count if count else math.nan
                        t[out] = acc
        elif op == OP_CUMSUM:
            for d in range(k):
                t = tan[d * NV : (d + 1) * NV]
                for p in range(pre):
                    for q in range(post):
                        acc = 0.0
                        for kk in range(r):
                            idx = p * r * post + kk * post + q
                            acc += t[a + idx]
                            t[o + idx] = acc
        elif op == OP_BROADCAST:
            for d in range(k):
                _broadcast_forward(tan[d * NV : (d + 1) * NV], o, a, pre, r, post)
        elif op == OP_GATHER:
            for d in range(k):
                t = tan[d * NV : (d + 1) * NV]
                for j in range(n):
                    t[o + j] = t[aux[pre + j]]
        elif op == OP_MATMUL:  # d(A B) = dA B + A dB
            m = r
            kk = post
            nn = ins[i, C_P3]
            for d in range(k):
                t = tan[d * NV : (d + 1) * NV]
                for bt in range(pre):
                    ao = a + bt * m * kk
                    bo = b + bt * kk * nn
                    oo = o + bt * m * nn
                    dst = t[oo : oo + m * nn]
                    if ga:
                        _matmul_into(dst, t[ao : ao + m * kk], buf[bo : bo + kk * nn], m, kk, nn, False)
                    else:
                        dst[:] = 0.0
                    if gb:
                        _matmul_into(dst, buf[ao : ao + m * kk], t[bo : bo + kk * nn], m, kk, nn, True)
        else:
            raise ValueError("unknown opcode: not in the primitive table")


@_jit
def _zero_adjoints(buf, adj2, N, k, pos, length, second):
    """Zero an operand's adjoint (when ``second``) and its k second-order adjoints."""
    if second:
        _zero(buf, N + pos, length)
    for d in range(k):
        _zero(adj2, d * N + pos, length)


@_jit
def _zero_runs(aux, buf, adj2, k, second):
    """Zero the adjoints that no instruction initialises (see plan_adjoint_initialisation)."""
    N = aux[M_NVALS]
    zeros = aux[M_ZEROS]
    for z in range(aux[M_NZEROS]):
        _zero_adjoints(buf, adj2, N, k, aux[zeros + 2 * z], aux[zeros + 2 * z + 1], second)


@_jit
def second_order_sweep(ins, code, aux, buf, tan, adj2, k, second):
    """Reverse sweep over k directions of ``adj2``.

    With ``second``: forward-over-reverse.  Accumulates the first-order adjoint
    in buf[N + p] (seeded by the caller; the zero runs of the adjoint
    initialisation plan zeroed, everything else first written by assignment)
    and, in ``adj2``, its
    tangent along each direction of ``tan``:  for z = f(x, y),
        x̄ += z̄ f_x      x̄' += z̄' f_x + z̄ (f_xx x' + f_xy y').
    Without ``second``: plain reverse mode for k seeds placed in ``adj2``
    (``tan`` and the first-order adjoint are not used).
    """
    N = aux[M_NVALS]
    i = ins.shape[0]
    while i > 0:
        i -= 1
        if code[4 * i] & S_SCALAR:
            i = _scalar_second_run(code, buf, tan, adj2, N, k, second, i)
            continue
        if second and code[4 * i] & S_FUSED:  # (the k-seed reverse runs after a forward keeping every value)
            i = _region_second(ins, code, buf, tan, adj2, N, k, i)
            continue
        flags = ins[i, C_FLAGS]
        if not (flags & F_ACTIVE):
            continue
        op = ins[i, C_OP]
        o = ins[i, C_OUT]
        n = ins[i, C_N]
        a = ins[i, C_A]
        b = ins[i, C_B]
        c = ins[i, C_C]
        ga = (flags & F_GRAD_A) != 0
        gb = (flags & F_GRAD_B) != 0
        gc = (flags & F_GRAD_C) != 0
        pre = ins[i, C_P0]
        r = ins[i, C_P1]
        post = ins[i, C_P2]
        ia = (flags & F_INIT_A) != 0
        ib = (flags & F_INIT_B) != 0
        runs = (UNARY[op] or BINARY[op]) and n >= SMALL_RUN and (BINARY[op] or second)
        runs = runs or (op == OP_SUM and post == 1)
        if not runs:  # these branches accumulate: a first write starts from zero
            if ia:
                _zero_adjoints(buf, adj2, N, k, a, ins[i, C_NA], second)
            if ib:
                _zero_adjoints(buf, adj2, N, k, b, ins[i, C_NB], second)
            if flags & F_INIT_C:
                _zero_adjoints(buf, adj2, N, k, c, ins[i, C_NC], second)
        if UNARY[op] and n < SMALL_RUN:
            for j in range(n):
                x = buf[a + j]
                z = buf[o + j]
                d1 = unary_partial(op, x, z)
                if second:
                    g = buf[N + o + j]
                    buf[N + a + j] += g * d1
                    d2 = unary_second(op, x, z, d1)
                    for d in range(k):
                        adj2[d * N + a + j] += adj2[d * N + o + j] * d1 + g * d2 * tan[d * N + a + j]
                else:
                    for d in range(k):
                        adj2[d * N + a + j] += adj2[d * N + o + j] * d1
        elif BINARY[op] and n < SMALL_RUN:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            for j in range(n):
                pa = a + j * sa
                pb = b + j * sb
                x = buf[pa]
                y = buf[pb]
                z = buf[o + j]
                dx, dy = binary_partials(op, x, y, z)
                if second:
                    g = buf[N + o + j]
                    if ga:
                        buf[N + pa] += g * dx
                    if gb:
                        buf[N + pb] += g * dy
                    dxx, dxy, dyy = binary_second(op, x, y, z)
                    for d in range(k):
                        gd = adj2[d * N + o + j]
                        if ga:
                            cx = dxx * tan[d * N + pa] + (dxy * tan[d * N + pb] if gb else 0.0)
                            adj2[d * N + pa] += gd * dx + g * cx
                        if gb:
                            cy = dyy * tan[d * N + pb] + (dxy * tan[d * N + pa] if ga else 0.0)
                            adj2[d * N + pb] += gd * dy + g * cy
                else:
                    for d in range(k):
                        gd = adj2[d * N + o + j]
                        if ga:
                            adj2[d * N + pa] += gd * dx
                        if gb:
                            adj2[d * N + pb] += gd * dy
        elif UNARY[op]:
            x = buf[a : a + n]
            z = buf[o : o + n]
            g = buf[N + o : N + o + n]
            gx = buf[N + a : N + a + n]
            for d in range(k):
                base = d * N
                if second:
                    tx = tan[base + a : base + a + n]
                    _second_unary(
                        op, x, z, g, gx, adj2[base + o : base + o + n], adj2[base + a : base + a + n], tx, d == 0, ia
                    )
                else:  # plain reverse on the k-buffer: x̄ += z̄ f'
                    _reverse_unary_run(op, x, z, adj2[base + o : base + o + n], adj2[base + a : base + a + n])
        elif BINARY[op]:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            la = ins[i, C_NA]
            lb = ins[i, C_NB]
            x = buf[a : a + la]
            y = buf[b : b + lb]
            z = buf[o : o + n]
            g = buf[N + o : N + o + n]
            gx = buf[N + a : N + a + la]
            gy = buf[N + b : N + b + lb]
            for d in range(k):
                base = d * N
                tx = tan[base + a : base + a + la] if second else x
                ty = tan[base + b : base + b + lb] if second else y
                _second_binary(
                    op, x, y, z, g, gx, gy, adj2[base + o : base + o + n], adj2[base + a : base + a + la],
                    adj2[base + b : base + b + lb], tx, ty, n, sa, sb, ga, gb, second and d == 0, second, ia, ib,
                )  # fmt: skip
        elif op == OP_WHERE:
            sa = 1 if ins[i, C_NA] > 1 else 0
            sb = 1 if ins[i, C_NB] > 1 else 0
            sc = 1 if ins[i, C_NC] > 1 else 0
            for j in range(n):
                taken = buf[a + j * sa] != 0.0
                if taken and not gb or not taken and not gc:
                    continue
                dst = b + j * sb if taken else c + j * sc
                if second:
                    buf[N + dst] += buf[N + o + j]
                for d in range(k):
                    adj2[d * N + dst] += adj2[d * N + o + j]
        elif op == OP_SUM:  # linear: the first-order rule on every adjoint (post == 1: assigned on a first write)
            for d in range(-1 if second else 0, k):
                t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
                _sum_reverse(t, o, a, pre, r, post, ia and post == 1)
        elif REDUCTION[op]:
            scratch = np.empty(2 * r if op == OP_PROD else 0)
            for p in range(pre):
                base = a + p * r * post
                for q in range(post):
                    out = o + p * post + q
                    z = buf[out]
                    g = buf[N + out] if second else 0.0
                    for d in range(k):
                        gd = adj2[d * N + out]
                        if op == OP_LOGSUMEXP:
                            # softmax s: x̄ += z̄ s,  x̄' += z̄' s + z̄ s (x' - z')
                            zt = tan[d * N + out] if second else 0.0
                            for kk in range(r):
                                pos = base + kk * post + q
                                sm = math.exp(buf[pos] - z)
                                if second:
                                    if d == 0:
                                        buf[N + pos] += g * sm
                                    adj2[d * N + pos] += gd * sm + g * sm * (tan[d * N + pos] - zt)
                                else:
                                    adj2[d * N + pos] += gd * sm
                        elif op == OP_PROD:
                            # others_i = prefix_i * suffix_i in dual numbers (value, tangent)
                            pv = 1.0
                            pt = 0.0
                            for kk in range(r):
                                scratch[2 * kk] = pv
                                scratch[2 * kk + 1] = pt
                                pos = base + kk * post + q
                                xt = tan[d * N + pos] if second else 0.0
                                pt = pt * buf[pos] + pv * xt
                                pv *= buf[pos]
                            sv = 1.0
                            st = 0.0
                            for kk in range(r - 1, -1, -1):
                                pos = base + kk * post + q
                                ov = scratch[2 * kk] * sv
                                ot = scratch[2 * kk + 1] * sv + scratch[2 * kk] * st
                                if second:
                                    if d == 0:
                                        buf[N + pos] += g * ov
                                    adj2[d * N + pos] += gd * ov + g * ot
                                else:
                                    adj2[d * N + pos] += gd * ov
                                xt = tan[d * N + pos] if second else 0.0
                                st = st * buf[pos] + sv * xt
                                sv *= buf[pos]
                        else:  # max / min: piecewise linear, ties share equally
                            count = 0
                            for kk in range(r):
                                if buf[base + kk * post + q] == z:
                                    count += 1
                            for kk in range(r):
                                pos = base + kk * post + q
                                w = (1.0 if buf[pos] == z else 0.0) / count if count else math.nan
                                if second and d == 0:
                                    buf[N + pos] += g * w
                                adj2[d * N + pos] += gd * w
        elif op == OP_CUMSUM:
            for d in range(-1 if second else 0, k):
                t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
                for p in range(pre):
                    for q in range(post):
                        acc = 0.0
                        for kk in range(r - 1, -1, -1):  # adjoint of a prefix sum: suffix sum
                            idx = p * r * post + kk * post + q
                            acc += t[o + idx]
                            t[a + idx] += acc
        elif op == OP_BROADCAST:
            for d in range(-1 if second else 0, k):
                _unbroadcast(buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N], o, a, pre, r, post, False)
        elif op == OP_GATHER:
            for d in range(-1 if second else 0, k):
                t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
                for j in range(n):  # scatter-add
                    t[aux[pre + j]] += t[o + j]
        elif op == OP_MATMUL:  # Ā = G Bᵀ, B̄ = Aᵀ G;  Ā' = G' Bᵀ + G B'ᵀ,  B̄' = A'ᵀ G + Aᵀ G'
            m = r
            kk = post
            nn = ins[i, C_P3]
            for bt in range(pre):
                ao = a + bt * m * kk
                bo = b + bt * kk * nn
                oo = o + bt * m * nn
                A = buf[ao : ao + m * kk]
                B = buf[bo : bo + kk * nn]
                G = buf[N + oo : N + oo + m * nn]
                if second:
                    if ga:
                        _matmul_t_into(buf[N + ao : N + ao + m * kk], G, B, m, kk, nn, False)
                    if gb:
                        _matmul_t_into(buf[N + bo : N + bo + kk * nn], A, G, m, kk, nn, True)
                for d in range(k):
                    Gd = adj2[d * N + oo : d * N + oo + m * nn]
                    if ga:
                        dA = adj2[d * N + ao : d * N + ao + m * kk]
                        _matmul_t_into(dA, Gd, B, m, kk, nn, False)
                        if second and gb:
                            _matmul_t_into(dA, G, tan[d * N + bo : d * N + bo + kk * nn], m, kk, nn, False)
                    if gb:
                        dB = adj2[d * N + bo : d * N + bo + kk * nn]
                        _matmul_t_into(dB, A, Gd, m, kk, nn, True)
                        if second and ga:
                            _matmul_t_into(dB, tan[d * N + ao : d * N + ao + m * kk], G, m, kk, nn, True)
        else:
            raise ValueError("unknown opcode: not in the primitive table")


# --------------------------------------------------------------------------
# entry points: one compiled call per user call
# --------------------------------------------------------------------------
@_jit
def run_forward(ins, code, aux, buf, fused):
    """Forward sweep; returns False when a recorded branch is not taken.  ``fused=False`` keeps every
    value (for the k-direction sweeps that may follow)."""
    forward_sweep(ins, code, aux, buf, fused)
    return guards_hold(aux, buf)


@_jit
def run_value_and_grad(ins, code, aux, buf, out, fused):
    """Forward sweep, then a reverse sweep seeded with 1 at position ``out`` (``fused`` as in
    run_forward).  Fused, the regions that only the caller reads (S_LOCAL) run once, in the reverse,
    which computes their values tile by tile anyway."""
    forward_sweep(ins, code, aux, buf, fused, fused)
    if not guards_hold(aux, buf):
        return False
    N = aux[M_NVALS]
    zeros = aux[M_ZEROS]
    for z in range(aux[M_NZEROS]):
        _zero(buf, N + aux[zeros + 2 * z], aux[zeros + 2 * z + 1])
    buf[N + out] = 1.0
    reverse_sweep(ins, code, aux, buf, fused)
    return True


@_jit
def run_reverse(ins, code, aux, buf):
    """Reverse sweep only, on adjoints already seeded by the caller."""
    reverse_sweep(ins, code, aux, buf, False)


@_jit
def run_jvp(ins, code, aux, buf, tan, k):
    """Forward sweep, then tangents along k seeded directions."""
    forward_sweep(ins, code, aux, buf, True)
    if not guards_hold(aux, buf):
        return False
    tangent_sweep(ins, code, aux, buf, tan, k, False)
    return True


@_jit
def run_hvp(ins, code, aux, buf, tan, adj2, k, out, with_values):
    """Hessian-vector products along k seeded directions, forward-over-reverse.

    ``with_values=False`` reuses the values of an earlier forward sweep (many
    HVPs at one point); the tangent and both adjoint sweeps always run.
    """
    N = aux[M_NVALS]
    if with_values:
        forward_sweep(ins, code, aux, buf, True, True)
        if not guards_hold(aux, buf):
            return False
    tangent_sweep(ins, code, aux, buf, tan, k, True)
    _zero_runs(aux, buf, adj2, k, True)
    buf[N + out] = 1.0
    second_order_sweep(ins, code, aux, buf, tan, adj2, k, True)
    return True


@_jit
def run_vector_reverse(ins, code, aux, buf, adj2, k):
    """Reverse mode for k cotangent seeds already placed in adj2 (values from a forward sweep)."""
    second_order_sweep(ins, code, aux, buf, adj2[:0], adj2, k, False)
