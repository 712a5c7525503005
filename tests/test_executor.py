"""The NumPy executor (the tier that serves calls while kernels compile) against the compiled
sweeps: every primitive case of the oracle and the special paths (scalar code, fused regions,
guards, containers), every derivative kind, to 1e-12; and the tiers' switching."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fasttape as ft
from fasttape import primitives, scalar_math, tiers
from fasttape.families import elementwise
from oracle.cases import NP, PRIMITIVE_CASES, scalar_loss
from tests.programs import M33, X3, rich

RTOL = 1e-12


def assert_same(actual, expected, what):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN pattern")
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=RTOL, atol=RTOL * scale, err_msg=what)


def _leaves(tree):
    import optree

    return [np.asarray(leaf) for leaf in optree.tree_leaves(tree)]


def every_kind(tape, args):
    """Results of every sweep kind on one tape: value and gradient, JVP and HVP in two directions,
    the Jacobian by forward and by reverse sweeps, and a VJP."""
    rng = np.random.default_rng(1)
    diff = tape.argnums if isinstance(tape.argnums, tuple) else (tape.argnums,)
    primals = [args[i] for i in diff]
    directions = [rng.normal(size=np.shape(x) + (2,)) for x in primals]
    results = {"forward": _leaves(tape(*args))}
    if tape._scalar_out:
        results["value_and_grad"] = _leaves(tape.value_and_grad(*args))
    packed = tuple(directions) if isinstance(tape.argnums, tuple) else directions[0]
    jvp = tape.jvp(args, packed)
    results["jvp"] = _leaves(jvp)
    if tape._scalar_out:
        hvp = tape.hvp(*args, packed)
        results["hvp"] = _leaves(hvp)
    if sum(np.size(x) for x in primals) <= 64:  # a Jacobian of the fused-region case would be 20 000 sweeps
        results["jacrev"] = _leaves(tape.jacobian(*args, mode="rev"))
        results["jacfwd"] = _leaves(tape.jacobian(*args, mode="fwd"))
    out, pull = tape.vjp(*args)
    results["vjp"] = _leaves(pull(np.ones(np.shape(out))))
    return results


def compare(tape, args):
    with tiers.only("compiled"):
        expected = every_kind(tape, args)
    with tiers.only("executor"):
        actual = every_kind(tape, args)
    for kind, leaves in expected.items():
        assert len(actual[kind]) == len(leaves), kind
        for i, (a, e) in enumerate(zip(actual[kind], leaves)):
            assert_same(a, e, f"{kind}[{i}]")


@pytest.mark.parametrize("case", PRIMITIVE_CASES, ids=lambda c: c.name)
def test_executor_matches_the_compiled_sweeps(case):
    rng = case.rng()
    args = case.inputs(rng)
    loss = functools.partial(scalar_loss(case, args, rng), NP)
    tape = ft.trace(loss, *args, argnums=tuple(range(len(args))))
    compare(tape, args)


def _scalar_loop(x):
    a, b = x[0], x[1]
    for _ in range(30):
        a, b = a + 0.01 * b * b, b - 0.02 * a * b
    return a * b + a / b


def _long_chain(x):  # fused regions (>= 8192 elements) in the compiled sweeps
    t = x[1:] - x[:-1] ** 2
    return np.sum(100.0 * t * t + (1.0 - x[:-1]) ** 2) + np.sum(np.sin(x) * x)


def _vector_out(x, m):
    return np.tanh(m @ x) * x[::-1] + np.cumsum(x)


SPECIAL = {
    "scalar-code": (_scalar_loop, (np.array([0.7, 1.3]),), 0),
    "fused-regions": (_long_chain, (np.linspace(-1.0, 1.5, 9000),), 0),
    "rich-with-guard": (rich, (X3, M33), (0, 1)),
    "vector-output": (_vector_out, (X3, M33), (0, 1)),
    "prod-with-zeros": (lambda x: np.prod(x * x[::-1]) + np.prod(x[:2]), (np.array([0.0, 2.0, 0.0, 3.0]),), 0),
    "max-ties": (lambda x: np.max(np.maximum(x, 1.0)) + np.min(x), (np.array([1.0, 1.0, 0.5, 0.5]),), 0),
}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_executor_matches_on_the_special_paths(name):
    f, args, argnums = SPECIAL[name]
    compare(ft.trace(f, *args, argnums=argnums), args)


def test_executor_fails_guards_as_the_compiled_sweeps_do():
    tape = ft.trace(rich, X3, M33)
    with tiers.only("executor"):
        with pytest.raises(ft.BranchChangedError):
            tape.value_and_grad(-X3, M33)


def test_the_executor_vocabulary_is_the_compiled_one():
    assert set(elementwise.ARRAY_VOCABULARY) == set(scalar_math.VOCABULARY)
    assert set(elementwise.FORMULAS) == set(primitives.opcodes(lambda p: p.elementwise))


def test_a_call_in_auto_mode_is_compiled_once_the_kernel_is_ready():
    # the session's warm-up compiled every entry point: auto mode binds the dispatchers themselves
    assert tiers.mode() == "auto"
    ft.value_and_grad(lambda x: np.sum(x * x))(np.ones(3))
    assert tiers.run_value_and_grad is tiers._ENTRIES["run_value_and_grad"].compiled
    assert set(tiers.status().values()) == {"compiled"}
