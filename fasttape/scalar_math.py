"""The scalar functions that the primitive declarations' formulas name, for compiled code.

A declaration's value and partials are written as expressions over a small vocabulary
(``exp``, ``where``, ``digamma``, ...).  This module gives each name its compiled scalar
meaning: the ``math`` and ``numpy`` functions Numba knows, chosen for NumPy's semantics
(NaN outside the domain, float results), plus the polygamma functions that neither has.
``where(c, a, b)`` is written by the generator as a conditional expression.
``VOCABULARY`` lists what the declarations may use; a formula naming anything else is
rejected when the declarations are built.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Bernoulli numbers B_2 .. B_16 for the asymptotic series of the polygamma functions
_B = np.array([1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510])
_SHIFT = 10.0  # the recurrences move x past this before the series (its terms then fall below 1e-17)


@numba.njit(nogil=True, error_model="numpy", cache=False, inline="always")
def _undefined(x):
    """NaN, -inf and the poles 0, -1, -2, ... of the polygamma functions."""
    return x != x or x == -math.inf or (x <= 0.0 and x == math.floor(x))


@numba.njit(nogil=True, error_model="numpy", cache=False)
def digamma(x):
    """ψ(x) = d log Γ(x); reflection below 0.5, recurrence up to 10, then the asymptotic series."""
    if _undefined(x):
        return math.nan
    acc = 0.0
    if x < 0.5:  # ψ(x) = ψ(1 - x) - π cot(π x)
        acc = -math.pi / math.tan(math.pi * x)
        x = 1.0 - x
    while x < _SHIFT:  # ψ(x + 1) = ψ(x) + 1/x
        acc -= 1.0 / x
        x += 1.0
    if x == math.inf:
        return math.inf
    w = 1.0 / (x * x)
    s = 0.0
    p = w
    for k in range(_B.size):  # ψ(x) ~ log x - 1/(2x) - Σ B_2k / (2k x^2k)
        s += _B[k] / (2.0 * (k + 1)) * p
        p *= w
    return acc + math.log(x) - 0.5 / x - s


@numba.njit(nogil=True, error_model="numpy", cache=False)
def trigamma(x):
    """ψ'(x) = ψ₁(x); +inf at the poles (from both sides)."""
    if _undefined(x):
        return math.inf if x > -math.inf else math.nan
    acc = 0.0
    sign = 1.0
    if x < 0.5:  # ψ₁(x) = π² / sin²(π x) - ψ₁(1 - x)
        s = math.sin(math.pi * x)
        acc = math.pi * math.pi / (s * s)
        sign = -1.0
        x = 1.0 - x
    while x < _SHIFT:  # ψ₁(x + 1) = ψ₁(x) - 1/x²
        acc += sign / (x * x)
        x += 1.0
    if x == math.inf:
        return acc
    w = 1.0 / (x * x)
    s = 0.0
    p = w / x
    for k in range(_B.size):  # ψ₁(x) ~ 1/x + 1/(2x²) + Σ B_2k / x^(2k+1)
        s += _B[k] * p
        p *= w
    return acc + sign * (1.0 / x + 0.5 * w + s)


@numba.njit(nogil=True, error_model="numpy", cache=False)
def tetragamma(x):
    """ψ''(x) = ψ₂(x)."""
    if _undefined(x):
        return math.nan
    acc = 0.0
    if x < 0.5:  # ψ₂(x) = ψ₂(1 - x) - 2π³ cos(πx) / sin³(πx)
        s = math.sin(math.pi * x)
        acc = -2.0 * math.pi**3 * math.cos(math.pi * x) / (s * s * s)
        x = 1.0 - x
    while x < _SHIFT:  # ψ₂(x + 1) = ψ₂(x) + 2/x³
        acc -= 2.0 / (x * x * x)
        x += 1.0
    if x == math.inf:
        return acc
    w = 1.0 / (x * x)
    s = 0.0
    p = w * w
    for k in range(_B.size):  # ψ₂(x) ~ -1/x² - 1/x³ - Σ (2k+1) B_2k / x^(2k+2)
        s += (2.0 * (k + 1) + 1.0) * _B[k] * p
        p *= w
    return acc - w - w / x - s


# B_2k / (2k)!, k = 1 .. 8: the Euler-Maclaurin terms of the Hurwitz zeta function
_B_OVER_FACTORIAL = np.array([_B[k] / math.factorial(2 * k + 2) for k in range(_B.size)])


@numba.njit(nogil=True, error_model="numpy", cache=False)
def hurwitz_zeta(s, x):
    """ζ(s, x) = Σ_k (x + k)^-s for an integer s >= 2: the terms up to x + k >= 10 + s summed, then
    Euler-Maclaurin's tail (relative error near 1e-16)."""
    acc = 0.0
    shift = 10.0 + s
    while x < shift:
        acc += (1.0 / x) ** s if x > 0.0 else math.pow(x, -s)
        x += 1.0
    tail = math.pow(x, 1.0 - s) / (s - 1.0) + 0.5 * math.pow(x, -s)
    rising = s  # s (s + 1) ... (s + 2k - 2)
    power = math.pow(x, -s - 1.0)  # x^(-s - 2k + 1)
    w = 1.0 / (x * x)
    for k in range(_B_OVER_FACTORIAL.size):
        tail += _B_OVER_FACTORIAL[k] * rising * power
        rising *= (s + 2.0 * k + 1.0) * (s + 2.0 * k + 2.0)
        power *= w
    return acc + tail


@numba.njit(nogil=True, error_model="numpy", cache=False)
def polygamma(n, x):
    """ψ⁽ⁿ⁾(x) for an integer order n >= 0 (NaN for another n): ψ, ψ₁, ψ₂ as above, and beyond them
    (-1)^(n+1) n! ζ(n + 1, x); at the poles 0, -1, ... +inf for odd n, NaN for even n (as ψ and ψ₂)."""
    if not (n >= 0.0 and n == math.floor(n)) or x != x:
        return math.nan
    if n == 0.0:
        return digamma(x)
    if n == 1.0:
        return trigamma(x)
    if n == 2.0:
        return tetragamma(x)
    odd = n % 2.0 == 1.0
    if x == math.inf:
        return 0.0 if odd else -0.0
    if _undefined(x):
        return math.inf if odd and x > -math.inf else math.nan
    return (1.0 if odd else -1.0) * math.gamma(n + 1.0) * hurwitz_zeta(n + 1.0, x)


_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT_HALF = math.sqrt(0.5)


@numba.njit(nogil=True, error_model="numpy", cache=False)
def exp_square(x):
    """exp(x²) with x² carried exactly: x = h + l with h of 24 bits (h² is exact), exp(h²) exp(l (2h + l))."""
    h = np.float64(np.float32(x))
    if not math.isfinite(h):  # beyond float32's range: exp(x²) overflows anyway
        return math.exp(x * x)
    lo = x - h
    return math.exp(h * h) * math.exp(lo * (2.0 * h + lo))


@numba.njit(nogil=True, error_model="numpy", cache=False)
def erfcx(x):
    """exp(x²) erfc(x), the scaled complementary error function, to a few ulps: the product with exp(x²)
    carried exactly below 26, the asymptotic series above (where erfc underflows), the reflection
    erfcx(x) = 2 exp(x²) - erfcx(-x) below 0."""
    if x != x:
        return x
    if x < 0.0:
        return 2.0 * exp_square(x) - erfcx(-x) if x > -26.7 else math.inf
    if x < 26.0:
        return exp_square(x) * math.erfc(x)
    w = 1.0 / (2.0 * x * x)
    term, total = 1.0, 1.0
    for k in range(1, 8):  # 1/(x√π) Σ (-1)^k (2k - 1)!! / (2x²)^k
        term *= -(2.0 * k - 1.0) * w
        total += term
    return total * _INV_SQRT_PI / x


@numba.njit(nogil=True, error_model="numpy", cache=False)
def log_ndtr(x):
    """log Φ(x): log1p of the upper tail above -1, log(erfcx / 2) - x²/2 below (no underflow)."""
    if x < -1.0:
        t = -x * _SQRT_HALF
        return math.log(0.5 * erfcx(t)) - t * t
    return math.log1p(-0.5 * math.erfc(x * _SQRT_HALF))


@numba.njit(nogil=True, error_model="numpy", cache=False)
def _ndtri_lower(p):
    """Φ⁻¹(p) for 0 < p <= 1/2: Acklam's rational approximation (relative error 1.2e-9), then two Halley
    steps on Φ(x) - p with erfc."""
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838e00) * q
               - 2.549732539343734e00) * q + 4.374664141464968e00) * q + 2.938163982698783e00) / (
            (((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e00) * q
             + 3.754408661907416e00) * q + 1.0)  # fmt: skip
    else:
        q = p - 0.5
        r = q * q
        x = (((((-3.969683028665376e01 * r + 2.209460984245205e02) * r - 2.759285104469687e02) * r
               + 1.383577518672690e02) * r - 3.066479806614716e01) * r + 2.506628277459239e00) * q / (
            ((((-5.447609879822406e01 * r + 1.615858368580409e02) * r - 1.556989798598866e02) * r
              + 6.680131188771972e01) * r - 1.328068155288572e01) * r + 1.0)  # fmt: skip
    for _ in range(2):
        e = 0.5 * math.erfc(-x * _SQRT_HALF) - p
        u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


@numba.njit(nogil=True, error_model="numpy", cache=False)
def ndtri(p):
    """Φ⁻¹(p), the standard normal quantile: -inf at 0, +inf at 1, NaN outside [0, 1]; the upper half by
    symmetry on 1 - p (exact there)."""
    if not (0.0 <= p <= 1.0):
        return math.nan
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    return _ndtri_lower(p) if p <= 0.5 else -_ndtri_lower(1.0 - p)


@numba.njit(nogil=True, error_model="numpy", cache=False)
def _divmod(a, b):
    """NumPy's float divmod (npy_divmod): the floored quotient and the remainder with the divisor's sign."""
    mod = np.fmod(a, b)
    if b == 0.0:
        return a / b, mod
    div = (a - mod) / b
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
            div -= 1.0
    else:
        mod = math.copysign(0.0, b)
    if div != 0.0:
        floordiv = np.floor(div)
        if div - floordiv > 0.5:
            floordiv += 1.0
    else:
        floordiv = math.copysign(0.0, a / b)
    return floordiv, mod


@numba.njit(nogil=True, error_model="numpy", cache=False)
def floor_mod(a, b):
    """``numpy.remainder``: a - b floor(a / b), exactly as NumPy computes it."""
    return _divmod(a, b)[1]


@numba.njit(nogil=True, error_model="numpy", cache=False)
def floor_quotient(a, b):
    """``numpy.floor_divide``: floor(a / b), exactly as NumPy computes it."""
    return _divmod(a, b)[0]


# name -> the compiled scalar function the generated code calls
# the constants the formulas may name, the same in compiled and in NumPy code
CONSTANTS = {
    "inf": math.inf,
    "nan": math.nan,
    "LN2": math.log(2.0),
    "LN10": math.log(10.0),
    "TWO_OVER_SQRT_PI": 2.0 / math.sqrt(math.pi),
    "SQRT_HALF": math.sqrt(0.5),
    "SQRT_TWO_PI": math.sqrt(2.0 * math.pi),
    "INV_SQRT_TWO_PI": 1.0 / math.sqrt(2.0 * math.pi),
}

VOCABULARY = {
    "where": None,  # where(c, a, b): the generated code writes it as (a if c else b)
    "digamma": digamma,
    "trigamma": trigamma,
    "tetragamma": tetragamma,
    "floor_mod": floor_mod,
    "floor_quotient": floor_quotient,
    "fmod": np.fmod,  # the truncated remainder, the dividend's sign
    "erfc": math.erfc,
    "polygamma": polygamma,
    "erfcx": erfcx,
    "log_ndtr": log_ndtr,
    "ndtri": ndtri,
    "abs": abs,
    "sign": np.sign,
    "sqrt": math.sqrt,  # NaN below 0 in compiled code
    "cbrt": np.cbrt,
    "floor": np.floor,  # floats, and inf/NaN pass through (math.floor would give an int)
    "ceil": np.ceil,
    "rint": np.rint,
    "maximum": np.maximum,  # NaN propagates from either operand
    "minimum": np.minimum,
    "exp": math.exp,
    "exp2": np.exp2,
    "expm1": math.expm1,
    "log": np.log,  # NaN below 0 (math.log would raise)
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": math.atan,
    "arctan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "arcsinh": math.asinh,
    "arccosh": np.arccosh,
    "arctanh": np.arctanh,
    "erf": math.erf,
    "lgamma": math.lgamma,
    "hypot": math.hypot,
    "logaddexp": np.logaddexp,
    **CONSTANTS,
}

# The same names for Python floats, where the ``math`` module has the function: what the tracer's scalar
# path (fasttape.scalar_recording) computes a unary row's value with while recording.  Each raises
# (ValueError, OverflowError) where NumPy would return NaN or inf with a warning, and the tracer then
# takes NumPy's path; a name missing here (where, the polygammas, NumPy-only functions) leaves its
# primitive on NumPy's path.
PYTHON_MATH = {
    "abs": abs,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "expm1": math.expm1,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "log1p": math.log1p,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "arcsinh": math.asinh,
    "arccosh": math.acosh,
    "arctanh": math.atanh,
    "erf": math.erf,
    "erfc": math.erfc,
    "lgamma": math.lgamma,
    **CONSTANTS,
}
