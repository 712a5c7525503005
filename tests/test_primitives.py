"""Every primitive of the table: value and gradient against JAX (float64, rtol
1e-10) and against central finite differences, on the traced call and on a
replay with new inputs.  Non-scalar programs are reduced with a fixed random
weight, so the gradient checked is a vector-Jacobian product."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fasttape as ft
from fasttape import kernels as K
from fasttape.tracing import record
from oracle.cases import NP, PRIMITIVE_CASES, Case, jax_namespace, sample, scalar_loss

jax = pytest.importorskip("jax")
JNP = jax_namespace()

RTOL = 1e-10


def assert_close(actual, expected, rtol=RTOL, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def finite_difference_check(loss, args, grads, rng, rtol=1e-6):
    """Central differences of the plain NumPy loss along a random direction per argument."""
    for i, (x, g) in enumerate(zip(args, grads)):
        v = rng.normal(size=np.shape(x))
        h = 1e-6
        plus = list(args)
        minus = list(args)
        plus[i] = x + h * v
        minus[i] = x - h * v
        fd = (loss(*plus) - loss(*minus)) / (2 * h)
        exact = float(np.sum(np.asarray(g) * v))
        scale = max(1.0, abs(exact), abs(float(loss(*args))))
        assert abs(fd - exact) <= rtol * scale * 10, f"argument {i}: finite difference {fd} vs gradient {exact}"


# the edge cases (ties, 1e300, ...) are the oracle's: it compares them with each declaration's JAX reference,
# where plain jax.numpy can be the wrong side (near 1e300 jnp.hypot's d/dx exceeds 1: 1.35 for x/h = 0.74)
SMOOTH_DOMAIN_CASES = [c for c in PRIMITIVE_CASES if "-edge-" not in c.name]


@pytest.mark.parametrize("case", SMOOTH_DOMAIN_CASES, ids=lambda c: c.name)
def test_value_and_gradient_match_jax(case: Case):
    rng = case.rng()
    args = case.inputs(rng)
    loss = scalar_loss(case, args, rng)
    argnums = tuple(range(len(args)))
    loss_np = functools.partial(loss, NP)
    loss_jax = functools.partial(loss, JNP)

    # first call: traces, then runs the compiled sweeps
    value, grads = ft.value_and_grad(loss_np, argnums=argnums)(*args)
    jvalue, jgrads = jax.value_and_grad(loss_jax, argnums=argnums)(*args)
    assert_close(value, jvalue, what="value")
    assert_close(value, loss_np(*args), rtol=1e-12, what="value vs plain NumPy")
    for k, (g, jg) in enumerate(zip(grads, jgrads)):
        assert_close(g, jg, what=f"gradient of argument {k}")
    if case.smooth:
        finite_difference_check(loss_np, args, grads, rng)

    # replay on new inputs: nothing from the traced values may leak into the tape
    tape = record(loss_np, args, argnums)
    args2 = case.inputs(rng)
    value2, grads2 = tape.value_and_grad(*args2)
    jvalue2, jgrads2 = jax.value_and_grad(loss_jax, argnums=argnums)(*args2)
    assert_close(value2, jvalue2, what="replayed value")
    for k, (g, jg) in enumerate(zip(grads2, jgrads2)):
        assert_close(g, jg, what=f"replayed gradient of argument {k}")


def _opcodes(case: Case) -> set[int]:
    rng = np.random.default_rng(0)
    args = case.inputs(rng)
    tape = ft.trace(functools.partial(case.fn, NP), *args, argnums=tuple(range(len(args))))
    return {int(op) for op in tape.ins[:, K.C_OP]}


def test_every_primitive_of_the_table_is_exercised():
    seen: set[int] = set()
    for case in PRIMITIVE_CASES:
        seen |= _opcodes(case)
    missing = sorted(p.name for p in ft.PRIMITIVES if p.opcode not in seen)
    assert not missing, f"primitives without a test case: {missing}"


def test_primitive_table_is_consistent():
    opcodes = [p.opcode for p in ft.PRIMITIVES]
    assert opcodes == list(range(K.N_OPCODES)), "opcodes must be unique and contiguous, in table order"
    import scipy.special

    groups = {"unary": K.UNARY, "binary": K.BINARY, "comparison": K.COMPARISON, "reduction": K.REDUCTION}
    for p in ft.PRIMITIVES:
        for module, names in ((np, p.numpy), (scipy.special, p.scipy)):
            for name in names:
                assert hasattr(module, name), f"{p.name}: {module.__name__}.{name} does not exist"
                assert hasattr(ft.numpy, name), f"{p.name}: fasttape.numpy.{name} is missing"
        for kind, group in groups.items():
            member = p.kind == kind or (kind == "binary" and p.kind == "comparison")
            assert bool(group[p.opcode]) == member, f"{p.name}: group {kind} disagrees with its kind {p.kind}"


# -- non-smooth points follow JAX's conventions -------------------------------
CONVENTIONS = [
    ("abs-at-0", lambda xp, x: xp.sum(xp.abs(x)), [np.array([0.0, -0.0, 1.0, -2.0])]),
    ("sqrt-at-0", lambda xp, x: xp.sum(xp.sqrt(x)), [np.array([0.0, 4.0])]),
    ("cbrt-at-0", lambda xp, x: xp.sum(xp.cbrt(x)), [np.array([0.0, 8.0])]),
    ("maximum-tie", lambda xp, x, y: xp.sum(xp.maximum(x, y)), [np.array([1.0, 2.0]), np.array([1.0, 3.0])]),
    ("minimum-tie", lambda xp, x, y: xp.sum(xp.minimum(x, y)), [np.array([1.0, 2.0]), np.array([1.0, 3.0])]),
    ("max-reduction-ties", lambda xp, x: xp.max(x), [np.array([1.0, 3.0, 3.0, -1.0])]),
    ("min-reduction-ties", lambda xp, x: xp.sum(xp.min(x, axis=0)), [np.array([[1.0, 2.0], [1.0, 0.0]])]),
    ("prod-with-zeros", lambda xp, x: xp.prod(x), [np.array([0.0, 3.0, 2.0])]),
    ("prod-two-zeros", lambda xp, x: xp.prod(x), [np.array([0.0, 3.0, 0.0])]),
    ("clip-at-bounds", lambda xp, x: xp.sum(xp.clip(x, 0.0, 1.0)), [np.array([0.0, 1.0, 0.5, 2.0])]),
    ("hypot-origin", lambda xp, x, y: xp.sum(xp.hypot(x, y)), [np.array([0.0, 3.0]), np.array([0.0, 0.0])]),
    ("sign-floor-ceil-round", lambda xp, x: xp.sum(xp.sign(x) + xp.floor(x) + xp.ceil(x) + xp.round(x)),
     [np.array([0.0, 1.5, -2.5, 0.3])]),
    ("power-zero-base", lambda xp, x, y: xp.sum(x**y), [np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.0, 0.5])]),
    ("power-negative-base", lambda xp, x: xp.sum(x**3.0), [np.array([-2.0, 0.0, 1.5])]),
    ("logaddexp-infinities", lambda xp, x, y: xp.sum(xp.logaddexp(x, y)),
     [np.array([-np.inf, 0.0, np.inf]), np.array([-np.inf, -np.inf, 1.0])]),
    ("log-at-0", lambda xp, x: xp.sum(xp.log(x)), [np.array([0.0, 1.0])]),
    ("norm-at-0", lambda xp, x: xp.linalg.norm(x), [np.zeros(3)]),
    ("where-boundary", lambda xp, x: xp.sum(xp.where(x > 0, x, 0.0)), [np.array([0.0, 1.0, -1.0])]),
    ("nan-propagation", lambda xp, x: xp.sum(xp.tanh(x) * x + xp.maximum(x, 0.0)), [np.array([np.nan, 1.0, -1.0])]),
    ("inf-input", lambda xp, x: xp.sum(xp.exp(-x) + xp.arctan(x)), [np.array([np.inf, -np.inf, 0.0])]),
]  # fmt: skip


@pytest.mark.parametrize("name,fn,args", CONVENTIONS, ids=[c[0] for c in CONVENTIONS])
def test_nonsmooth_points_follow_jax(name, fn, args):
    argnums = tuple(range(len(args)))
    with np.errstate(all="ignore"):
        value, grads = ft.value_and_grad(functools.partial(fn, NP), argnums=argnums)(*args)
    jvalue, jgrads = jax.value_and_grad(functools.partial(fn, JNP), argnums=argnums)(*args)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(jvalue))
    assert_close(value, jvalue, what="value")
    for g, jg in zip(grads, jgrads):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(np.asarray(jg)), err_msg="NaN pattern")
        assert_close(g, jg, what="gradient")


# -- long runs: transcendental functions computed by NumPy's SIMD loops ----------
LONG = K.VECTOR_RUN + 7
VECTOR_PRIMITIVES = [p for p in K.PRIMITIVES if K.VECTOR_UNARY[p.opcode] or K.VECTOR_BINARY[p.opcode]]


@pytest.mark.parametrize("prim", VECTOR_PRIMITIVES, ids=lambda p: p.name)
def test_long_runs_match_jax(prim):
    """Runs of VECTOR_RUN elements or more leave compiled code for NumPy: value, gradient and HVP stay
    JAX's, on full-length operands and with a broadcast scalar operand."""
    rng = np.random.default_rng(prim.opcode)
    domains = prim.domains
    args = [sample(d, (LONG,), rng) for d in domains]
    weight = rng.normal(size=LONG)
    name = prim.numpy[0]
    if prim.kind == "unary":
        programs = [lambda xp, x: xp.sum(getattr(xp, name)(x) * weight)]
    else:
        programs = [
            lambda xp, x, y: xp.sum(getattr(xp, name)(x, y) * weight),
            lambda xp, x, y: xp.sum(getattr(xp, name)(x[0], y) * weight + getattr(xp, name)(x, y[0]) * weight),
        ]
    argnums = tuple(range(len(args)))
    v = tuple(rng.normal(size=LONG) for _ in args)
    for program in programs:
        loss_np, loss_jax = functools.partial(program, np), functools.partial(program, JNP)
        value, grads = ft.value_and_grad(loss_np, argnums=argnums)(*args)
        jvalue, jgrads = jax.value_and_grad(loss_jax, argnums=argnums)(*args)
        assert_close(value, jvalue, what="value")
        for g, jg in zip(grads, jgrads):
            assert_close(g, jg, what="gradient")
        hv = ft.hvp(loss_np, tuple(args), v)
        jhv = jax.jvp(jax.grad(loss_jax, argnums=argnums), tuple(args), v)[1]
        for h, jh in zip(hv if isinstance(hv, tuple) else (hv,), jhv):
            assert_close(h, jh, what="hvp")
        finite_difference_check(loss_np, args, grads, rng)


def test_long_logaddexp_keeps_numpys_infinities():
    x = np.linspace(-3.0, 3.0, LONG)
    y = x[::-1].copy()
    x[:4] = [np.inf, -np.inf, np.inf, np.nan]
    y[:4] = [np.inf, -np.inf, -np.inf, 1.0]
    with np.errstate(invalid="ignore"):  # inf - inf, as NumPy computes it
        expected = np.logaddexp(x, y)
        tape = ft.trace(lambda a, b: np.logaddexp(a, b) * 1.0, x, y, argnums=(0, 1))
    out = tape(x, y)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out[~np.isnan(out)], expected[~np.isnan(expected)], rtol=1e-15)
