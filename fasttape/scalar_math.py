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
}

VOCABULARY = {
    "where": None,  # where(c, a, b): the generated code writes it as (a if c else b)
    "digamma": digamma,
    "trigamma": trigamma,
    "tetragamma": tetragamma,
    "floor_mod": floor_mod,
    "floor_quotient": floor_quotient,
    "fmod": np.fmod,  # the truncated remainder, the dividend's sign
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
