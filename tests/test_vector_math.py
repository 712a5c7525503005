"""The tape kernels' vectorisable exp, expm1, log, log1p, tanh and logaddexp (fasttape.vector_math) against NumPy's:
within 3 units in the last place over their whole domains (subnormal arguments and results included),
the same infinities, signed zeros and NaNs, and vectorised when inlined in a loop."""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest

from fasttape import vector_math

# not fasttape.jit: Numba would cache these test loops beside this file, keyed by its timestamp alone, and
# reuse them after an edit of vector_math (fasttape's own kernels are keyed by vector_math's source)
jit = numba.njit(error_model="numpy", cache=False)
rng = np.random.default_rng(20261205)
_EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 5e-324, -5e-324, 2.2250738585072014e-308,
                   1e-310, 1.7976931348623157e308, -1.7976931348623157e308, 709.78, 709.79, -745.13,
                   -745.14, 1e-300, 20.0, 19.9, -20.1, 0.5, 0.7071067811865476, 1.4142135623730951,
                   -0.9999999999999999])  # fmt: skip

CASES = {  # name: (NumPy's function, samples across the domain)
    "exp": (np.exp, [rng.uniform(-746, 710, 200_000), rng.normal(size=100_000) * 5, rng.uniform(-1e-6, 1e-6, 10_000)]),
    "expm1": (np.expm1, [rng.uniform(-50, 710, 200_000), rng.normal(size=100_000), rng.uniform(-1e-12, 1e-12, 10_000)]),
    "log": (
        np.log,
        [
            np.exp(rng.uniform(-745, 709, 200_000)),
            rng.uniform(0.5, 2, 100_000),
            1 + rng.uniform(-1e-6, 1e-6, 10_000),
            rng.uniform(0, 1e-308, 10_000),
            -rng.random(100),
        ],
    ),  # fmt: skip
    "log1p": (
        np.log1p,
        [
            np.expm1(rng.uniform(-40, 709, 200_000)),
            rng.uniform(-1, 2, 100_000),
            rng.uniform(-1e-300, 1e-300, 10_000),
            -1 - rng.random(100),
        ],
    ),  # fmt: skip
    "tanh": (np.tanh, [rng.normal(size=200_000) * 3, rng.uniform(-1e-5, 1e-5, 10_000), rng.uniform(-25, 25, 100_000)]),
}


_PAIRS = np.concatenate([rng.normal(size=(100_000, 2)) * 10, rng.uniform(-800, 800, (100_000, 2)),
                         np.array([(a, b) for a in _EDGES for b in _EDGES])])  # fmt: skip


def test_logaddexp_within_four_ulp_of_numpys_with_its_infinities():
    @jit
    def apply(x, y, out):
        for i in range(x.size):
            out[i] = vector_math.vlogaddexp(x[i], y[i])

    x, y = _PAIRS[:, 0].copy(), _PAIRS[:, 1].copy()
    ours = np.empty_like(x)
    apply(x, y, ours)
    with np.errstate(all="ignore"):
        theirs = np.logaddexp(x, y)
    ordinary = np.isfinite(theirs) & (theirs != 0)
    # in units of the larger operand's last place: max + log1p(...) cancels where the result is near 0, and
    # log1p's 2 units there are up to 4 of a result half its size
    scale = np.maximum(np.abs(theirs), np.abs(np.maximum(x, y)))[ordinary]
    ulps = np.abs(ours[ordinary] - theirs[ordinary]) / np.spacing(scale)
    assert ulps.max() <= 4, (_PAIRS[ordinary][np.argmax(ulps)], ulps.max())
    special = ~ordinary
    assert np.all((ours[special] == theirs[special]) | (np.isnan(ours[special]) & np.isnan(theirs[special])))


def _loop(function):
    @jit
    def apply(x, out):
        for i in range(x.size):
            out[i] = function(x[i])

    return apply


_LOOPS = {name: _loop(vector_math.KERNEL_FUNCTIONS[name]) for name in CASES}


@pytest.mark.parametrize("name", sorted(CASES))
def test_within_three_ulp_of_numpy_with_the_same_special_values(name):
    reference, samples = CASES[name]
    x = np.concatenate(samples + [_EDGES])
    ours = np.empty_like(x)
    _LOOPS[name](x, ours)
    with np.errstate(all="ignore"):
        theirs = reference(x)
    ordinary = np.isfinite(theirs) & (theirs != 0)
    ulps = np.abs(ours[ordinary] - theirs[ordinary]) / np.spacing(np.abs(theirs[ordinary]))
    assert ulps.max() <= 3, (name, x[ordinary][np.argmax(ulps)], ulps.max())
    special = ~ordinary  # infinities, zeros (with their sign) and NaNs exactly as NumPy's
    same = (ours[special] == theirs[special]) & (np.signbit(ours[special]) == np.signbit(theirs[special]))
    both_nan = np.isnan(ours[special]) & np.isnan(theirs[special])
    assert np.all(same | both_nan), (name, x[special][~(same | both_nan)], ours[special][~(same | both_nan)])


_SCALAR_CALL = re.compile(r"call [^\n]*double @(llvm\.)?(exp|expm1|log|log1p|tanh)(\.f64)?\(")  # libm, per element
_KERNEL_CALL = re.compile(r"call [^\n]*@_ZN8fasttape11vector_math")  # one of ours not inlined: a call per element


def _vectorised(apply) -> bool:
    x = np.linspace(-3, 3, 64)
    apply(x, np.empty_like(x))
    ir = "".join(apply.inspect_llvm().values())
    return "x double>" in ir and not _SCALAR_CALL.search(ir) and not _KERNEL_CALL.search(ir)


_LOGADDEXP_LOOP = _loop(numba.njit(inline="always")(lambda v: vector_math.vlogaddexp(0.0, v)))  # (logistic's)


@pytest.mark.parametrize("name", [*sorted(CASES), "logaddexp"])
def test_a_loop_calling_it_is_vectorised(name):
    """The reason the module exists: LLVM packs the loop into vector instructions, with no call per
    element (math.exp's loop calls the scalar libm function for each, and a loop calling one of ours that
    LLVM did not inline, one call of it per element)."""
    loop = _LOGADDEXP_LOOP if name == "logaddexp" else _LOOPS[name]
    assert _vectorised(loop), f"{name}: the loop's LLVM IR has no vector arithmetic, or a call per element"


def test_the_scalar_libm_loop_is_not_vectorised_so_the_check_above_can_fail():
    assert not _vectorised(_loop(numba.njit(inline="always")(lambda v: np.exp(v))))
