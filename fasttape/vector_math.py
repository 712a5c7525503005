"""exp, expm1, log, log1p, tanh and logaddexp that LLVM vectorises in a loop calling them: the tape kernels'.

Numba compiles ``math.exp`` to a call of the scalar libm function, one element at a time: a generated
loop over a million elements took 5.4 ms for ``exp`` where NumPy's SIMD loop takes 1.1. So long runs of
these functions were NumPy calls outside the kernels' fused loops, and a logsumexp made a pass over
memory per primitive. Written here without calls and without branches (range reduction, a polynomial,
the exponent put in with integer arithmetic on the bits, selects for the special values), the same
function called in a generated loop is inlined and vectorised by LLVM: 1.4 ms for the million, and it
fuses with the loop around it.

Accuracy against NumPy's (glibc's) functions: at most 3 units in the last place over the whole domain
(4 for logaddexp, in units of its larger operand), including subnormal results and arguments, and the
same infinities, zeros and NaNs (``tests/test_vector_math.py``). The kernels' results may therefore
differ from the interpreter's in the last bits, as a fused sum's order already makes them.
"""

from __future__ import annotations

import math

import numba
from numba import types
from numba.extending import intrinsic

from .jit import jit

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with its low 32 bits zero: k · _LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_LN2 = 0.6931471805599453
_ROUND = 6755399441055744.0  # 1.5 · 2^52: x + _ROUND rounds x to an integer held in the low mantissa bits
_ROUND_BITS = 0x4338000000000000  # the bits of _ROUND
_EXP_MAX = 709.8  # exp overflows above 709.78
_EXP_MIN = -745.2  # and is 0 below -745.13
_TWO54 = 18014398509481984.0  # 2^54: scales a subnormal argument of log into the normal range
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD  # the bits of √½: log's mantissa is brought into [√½, √2)
_TANH_ONE = 20.0  # |x| above this: tanh(x) is ±1 in double precision
_INV_FACTORIAL = [1.0 / math.factorial(i) for i in range(14)]
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = _INV_FACTORIAL[2:]
_ATANH = [2.0 / (2 * i + 1) for i in range(1, 12)]  # log m = 2 atanh s = 2 s + 2 s³/3 + ... (s ≤ 0.172)
(_A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10, _A11) = _ATANH

# The public functions are compiled once (and cached) and called: LLVM inlines them into the loop that
# calls them, and vectorises it, as it does with Numba's inline="always", which would instead copy and
# type their Numba IR again at every call (0.03 s each: 0.6 s of a tape kernel's build); their parts are
# inlined into them
_inline = numba.njit(nogil=True, error_model="numpy", cache=False, inline="always")


def _bitcast(source, target, doc: str):
    """An intrinsic reading a ``source`` scalar's 64 bits as a ``target`` scalar (no conversion)."""

    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    cast.__doc__ = doc
    return cast


bits_of = _bitcast(types.float64, types.int64, "The 64 bits of a float64, as an int64.")
float_of = _bitcast(types.int64, types.float64, "The float64 whose 64 bits are the int64 given.")


@_inline
def _reduced(x):
    """(k, r) with x = k ln 2 + r, k an integer, |r| ≤ ln 2 / 2, x already within [_EXP_MIN, _EXP_MAX]."""
    shifted = x * _LOG2E + _ROUND
    k = shifted - _ROUND
    r = (x - k * _LN2_HI) - k * _LN2_LO  # Cody and Waite: ln 2 in two parts, the first product exact
    return bits_of(shifted) - _ROUND_BITS, r


@_inline
def _expm1_reduced(r):
    """exp(r) - 1 for |r| ≤ ln 2 / 2: Taylor to r¹³ (the next term is below 2^-60 of the result), Estrin's scheme."""
    r2 = r * r
    r4 = r2 * r2
    low = (_C2 + _C3 * r) + (_C4 + _C5 * r) * r2 + ((_C6 + _C7 * r) + (_C8 + _C9 * r) * r2) * r4
    high = (_C10 + _C11 * r) + (_C12 + _C13 * r) * r2
    return r + r2 * (low + high * (r4 * r4))


@_inline
def _power_of_two(k):
    """2^k as a float64, for -1022 ≤ k ≤ 1023 (the exponent field written directly)."""
    return float_of((k + 1023) << 52)


@jit
def vexp(x):
    """e^x; 2^k is applied as two halves so that subnormal results and the overflow to inf come out right."""
    clamped = _EXP_MIN if x < _EXP_MIN else (_EXP_MAX if x > _EXP_MAX else x)
    k, r = _reduced(clamped)
    half = k >> 1
    y = (1.0 + _expm1_reduced(r)) * _power_of_two(half) * _power_of_two(k - half)
    return x if x != x else y


@jit
def vexpm1(x):
    """e^x - 1, accurate near 0: 2^k (e^r - 1) + (2^k - 1), exact for k = 0."""
    clamped = -40.0 if x < -40.0 else (_EXP_MAX if x > _EXP_MAX else x)  # e^-40 - 1 is -1 in double precision
    k, r = _reduced(clamped)
    half = k >> 1
    first = _power_of_two(half)
    second = _power_of_two(k - half)
    y = (_expm1_reduced(r) * first + (first - 1.0 / second)) * second
    return x if x != x or x == 0.0 else y  # NaN, and -0.0 keeps its sign


@jit
def vlog(x):
    """log x: x = m 2^e with m in [√½, √2), log m = 2 atanh((m - 1) / (m + 1)) by its series; NaN below 0."""
    tiny = x < 2.2250738585072014e-308  # subnormal (or 0, or negative): scaled by 2^54 first
    scaled = x * _TWO54 if tiny else x
    bits = bits_of(scaled)
    e = ((bits - _SQRT_HALF_BITS) >> 52) - (54 if tiny else 0)
    m = float_of(bits - (((bits - _SQRT_HALF_BITS) >> 52) << 52))
    f = m - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    s4 = s2 * s2
    s8 = s4 * s4
    low = (_A1 + _A2 * s2) + (_A3 + _A4 * s2) * s4 + ((_A5 + _A6 * s2) + (_A7 + _A8 * s2) * s4) * s8
    high = (_A9 + _A10 * s2) + _A11 * s4
    hf = 0.5 * f * f
    log_m = f - (hf - s * (hf + s2 * (low + high * (s8 * s8))))  # 2s = f - s f: the sum's first terms exact
    ke = float(e)
    y = ke * _LN2_HI + (log_m + ke * _LN2_LO)
    if x != x or x == math.inf:
        y = x
    if x == 0.0:
        y = -math.inf
    if x < 0.0:
        y = math.nan
    return y


@jit
def vtanh(x):
    """tanh x = sign(x) e / (e + 2) with e = e^{2|x|} - 1 (exact near 0 through expm1)."""
    a = abs(x)
    e = vexpm1(2.0 * (_TANH_ONE if a > _TANH_ONE else a))
    return math.copysign(e / (e + 2.0), x)


@jit
def vlog1p(x):
    """log(1 + x), accurate near 0: u = 1 + x rounds, and x log(u) / (u - 1) corrects for it (Goldberg)."""
    u = 1.0 + x
    y = vlog(u) * (x / (u - 1.0))
    return x if u == 1.0 or x == math.inf else y


@_inline  # (compiled apart, with exp and log1p inlined into it, LLVM found it too large to inline in a loop)
def vlogaddexp(x, y):
    """log(e^x + e^y) = max + log1p(e^-|x - y|), as NumPy's: x + log 2 where x == y (equal infinities too)."""
    d = x - y
    z = (x if d > 0.0 else y) + vlog1p(vexp(-abs(d)))
    if d != d:  # NaN, or inf - inf
        z = d
    if x == y:
        z = x + _LN2
    return z


# the vocabulary's names these functions stand for in the tape kernels (fasttape.tape_kernels)
KERNEL_FUNCTIONS = {"exp": vexp, "expm1": vexpm1, "log": vlog, "log1p": vlog1p, "tanh": vtanh, "logaddexp": vlogaddexp}
