"""The arguments a tape's gradient kernel reads where the caller holds them (fasttape.input_refs): which
ones, and the same results as the interpreter for every entry point, whichever path a call takes."""

import re

import numpy as np
import pytest

import fasttape as ft
from fasttape import tape_kernels
from tests.helpers import assert_tree_close

RTOL = 1e-12  # (the generated code adds up in another order than the interpreter)


def assert_same(expected, got):
    assert_tree_close(got, expected, rtol=RTOL, atol=1e-300)


def _compiled(f, *args, argnums=0):
    """``ft.value_and_grad(f)`` with its tape's kernels built, the interpreter's answer, and the tape."""
    with ft.options(tape_kernels="never"):
        expected = ft.value_and_grad(f, argnums=argnums)(*args)
    vg = ft.value_and_grad(f, argnums=argnums)
    with ft.options(tape_kernels="always"):
        vg(*args)
    tape = vg.tape(*args)
    assert tape._kernels.state == "ready"
    return vg, expected, tape


def _in_place(tape, args):
    """The indices of the arguments the gradient kernel reads in place."""
    offsets = [spec.leaves[0].offset for spec in tape._args]
    return {offsets.index(offset) for offset, _ in tape._kernels.refs}


def logistic(w, X, y):
    return np.mean(np.logaddexp(0.0, -y * (X @ w)))


@pytest.mark.parametrize("m", [30, 400])  # (400 x 100: the products go to BLAS)
def test_a_logistic_regression_reads_all_three_arguments_in_place(m):
    rng = np.random.default_rng(m)
    X = rng.standard_normal((m, 100))
    y = np.sign(rng.standard_normal(m))
    w = 0.1 * rng.standard_normal(100)
    vg, expected, tape = _compiled(logistic, w, X, y)
    assert _in_place(tape, (w, X, y)) == {0, 1, 2}
    assert "call_product_forward" in tape_kernels.kernel_source(tape)
    for _ in range(2):
        assert_same(expected, vg(w, X, y))
    assert_same(expected, vg(w, np.asfortranarray(X), y))  # (the general path: views of the buffer)
    # the buffers the io calls left behind hold no inputs: every other entry point binds its own
    v = rng.standard_normal(100)
    with ft.options(tape_kernels="never"):
        reference = ft.trace(logistic, w, X, y)
        expected_hvp = reference.hvp(w, X, y, v)
        expected_jvp = reference.jvp((w, X, y), v)
        expected_value = reference(w, X, y)
    assert_same(expected_value, tape(w, X, y))
    assert_same(expected_jvp, tape.jvp((w, X, y), v))
    assert_same(expected_hvp, tape.hvp(w, X, y, v))
    assert_same(expected, vg(w, X, y))
    w2 = -w  # new values through the same tape: nothing kept from the last call
    with ft.options(tape_kernels="never"):
        assert_same(ft.value_and_grad(logistic)(w2, X, y), vg(w2, X, y))


def test_an_argument_another_family_reads_is_copied_and_the_rest_read_in_place():
    def f(w, X, c):
        return np.sum(w * np.sum(X, axis=0)) + np.sum(np.tanh(X @ w) * c)  # X: a reduction reads it

    rng = np.random.default_rng(1)
    X, w, c = rng.standard_normal((20, 6)), rng.standard_normal(6), rng.standard_normal(20)
    vg, expected, tape = _compiled(f, w, X, c)
    assert _in_place(tape, (w, X, c)) == {0, 2}
    assert_same(expected, vg(w, X, c))
    assert_same(expected, vg(w.copy(), X.copy(), c.copy()))
    with ft.options(tape_kernels="never"):  # new values of each: nothing read from an earlier call
        expected = ft.value_and_grad(f)(0.5 * w, X[::-1].copy(), c + 1.0)
    assert_same(expected, vg(0.5 * w, X[::-1].copy(), c + 1.0))


def test_an_output_that_is_an_argument_s_element_is_read_from_the_buffer():
    def f(x, y):
        if np.sum(y * y) > 1.0:  # (rows for the kernels to run)
            return x[2]  # (the output's position is in x: the caller reads it from the buffer)
        return x[3]

    x, y = np.arange(1.0, 6.0), np.ones(3)
    vg, expected, tape = _compiled(f, x, y)
    assert _in_place(tape, (x, y)) == {1} and tape._out_position == tape._args[0].leaves[0].offset + 2
    assert_same(expected, vg(x, y))
    assert_same((np.float64(4.0), np.eye(5)[2]), vg(x + 1.0, y))
    assert_same((np.float64(4.0), np.eye(5)[3]), vg(x, 0.1 * y))  # (the other branch)


def test_a_loop_that_steps_through_an_argument_reads_it_from_the_buffer():
    def f(x, a):
        s = a[0]
        for k in range(80):  # a period of two rows, whose iterations read x two elements further on each
            s = np.sin(s) * x[2 * k]
        return s + np.sum(a * a)

    x, a = np.linspace(0.5, 1.5, 160), np.array([0.7, 0.2])
    vg, expected, tape = _compiled(f, x, a)
    plan = tape_kernels._plan(tape)[0]
    assert plan.periods and any(any(moves) for moves in plan.periods[0].strided)
    assert _in_place(tape, (x, a)) == {1}
    assert_same(expected, vg(x, a))
    assert_same(expected, vg(x.copy(), a.copy()))
    with ft.options(tape_kernels="never"):
        assert_same(ft.value_and_grad(f)(x[::-1].copy(), a), vg(x[::-1].copy(), a))


def test_a_differentiated_argument_other_than_the_first_is_read_in_place_and_gets_its_gradient():
    rng = np.random.default_rng(5)
    X, y, w = rng.standard_normal((50, 8)), np.sign(rng.standard_normal(50)), rng.standard_normal(8)
    vg, expected, tape = _compiled(logistic, w, X, y, argnums=1)
    assert 1 in _in_place(tape, (w, X, y))
    assert_same(expected, vg(w, X, y))
    assert_same(expected[1], ft.grad(logistic, argnums=1)(w, X, y))


def test_the_hvp_of_a_tape_of_one_argument_reads_it_and_the_direction_in_place():
    def f(x):
        t = x[1:] - x[:-1] ** 2
        return np.sum(100.0 * t * t + (1.0 - x[:-1]) ** 2)

    rng = np.random.default_rng(7)
    x, v = rng.uniform(0.5, 1.5, (4, 6)), rng.standard_normal((4, 6))
    with ft.options(tape_kernels="never"):
        expected = ft.trace(f, x).hvp(x, v)
        expected_other = ft.trace(f, x).hvp(-x, 2.0 * v)
    vg, _, tape = _compiled(f, x)
    with ft.options(tape_kernels="always"):
        assert_same(expected, tape.hvp(x, v))
    assert tape._kernels.hvp_refs == [(tape._args[0].leaves[0].offset, 24)]
    assert "def hvp(ins, aux, buf, tangents, adj2, fns, in0, tn0):" in tape_kernels.kernel_source(tape)
    assert_same(expected, ft.hvp(f, (x,), (v,)))
    assert_same(expected, tape.hvp(x, v))
    assert_same(expected_other, tape.hvp(-x, 2.0 * v))  # (new values: nothing kept from the last call)
    assert_same(expected, tape.hvp(np.asfortranarray(x), np.asfortranarray(v)))  # (views of the buffers)
    assert_same(expected, tape.hvp(x, v))


def _hvp_compiled(f, *args):
    """A tape of ``f`` with its HVP kernel built (its gradient's kernels too)."""
    _, _, tape = _compiled(f, *args)
    v = np.ones_like(args[0])
    with ft.options(tape_kernels="always"):
        tape.hvp(*args, v)
    assert tape._kernels.hvp is not None and tape._kernels.hvp_io is not None
    return tape


def _interpreted_hvp(f, args, v):
    with ft.options(tape_kernels="never"):
        return ft.trace(f, *args).hvp(*args, v)


def test_the_hvp_of_a_logistic_regression_reads_its_three_arguments_in_place_and_no_input_gradient():
    rng = np.random.default_rng(3)
    X, y, w = rng.standard_normal((400, 100)), np.sign(rng.standard_normal(400)), 0.1 * rng.standard_normal(100)
    v = rng.standard_normal(100)
    tape = _hvp_compiled(logistic, w, X, y)
    offsets = [spec.leaves[0].offset for spec in tape._args]
    assert {offsets.index(offset) for offset, _ in tape._kernels.hvp_refs} == {0, 1, 2}
    hvp = tape_kernels._tangent_source(tape).split("def hvp(")[1]
    # X @ w: X is a constant, w an input, whose first-order adjoint only the gradient reads (first_b off)
    (call,) = [line for line in hvp.splitlines() if "call_product_second(" in line]
    assert call.strip().endswith("r0 != 0, r0 == 0, r0 != 0, r0 != 0, r0 != 0, r0 != 0, r0 == 0)  # matmul")
    expected = _interpreted_hvp(logistic, (w, X, y), v)
    assert_same(expected, tape.hvp(w, X, y, v))  # (the io entry)
    assert_same(expected, tape.hvp(w, np.asfortranarray(X), y, v))  # (the general path: views of the buffers)
    other = _interpreted_hvp(logistic, (-w, 0.5 * X, y), 2.0 * v)
    assert_same(other, tape.hvp(-w, 0.5 * X, y, 2.0 * v))  # (new values: nothing kept from the last call)
    assert_same(expected, tape.hvp(w, X, y, v))


def _square_products(x):  # both operands views of the argument: every second-order term of a product
    return np.sum(np.tanh(x[:12].reshape(3, 4) @ x[12:].reshape(4, 3)) ** 2)


def _two_layers(x):  # a product of an intermediate (its first-order adjoint needed) and a batched product
    h = np.tanh(x.reshape(2, 3, 4) @ np.linspace(-1.0, 1.0, 20).reshape(4, 5))
    return np.sum(np.sin(h @ np.cos(np.arange(10.0)).reshape(5, 2)))


def _linear_sum(x):  # the product's second-order adjoint is a structural zero (its adjoint a constant)
    W = np.linspace(-1.0, 1.0, 6 * len(x)).reshape(6, len(x))
    return np.sum(W @ x) + np.sum(x**3)


def _with_a_maximum(x):  # x read by a reduction too: copied into the buffer, v into the tangent plane
    W = np.linspace(-1.0, 1.0, 5 * len(x)).reshape(5, len(x))
    return np.sum(np.tanh(W @ x) ** 2) + np.max(x) ** 2


def _recurrence(x):  # a product in a loop found again in the rows (a period): the family's kernels
    W = 0.5 * x[4:].reshape(4, 4)
    h = x[:4]
    for _ in range(30):
        h = np.tanh(W @ h + 0.1)
    return np.sum(h * h)


PRODUCTS = [_square_products, _two_layers, _linear_sum, _with_a_maximum, _recurrence]


@pytest.mark.parametrize("f", PRODUCTS, ids=lambda f: f.__name__)
def test_an_hvp_through_products_matches_the_interpreter(f):
    rng = np.random.default_rng(11)
    x = rng.uniform(-1.0, 1.0, 24 if f is not _recurrence else 20)
    v = rng.standard_normal(x.size)
    tape = _hvp_compiled(f, x)
    hvp = tape_kernels._tangent_source(tape).split("def hvp(")[1]
    assert bool(tape_kernels._plan(tape)[0].periods) == (f is _recurrence)
    assert (tape._kernels.hvp_refs == []) == (f is _with_a_maximum)
    assert "call_product_second(" in hvp  # (the recurrence's first product comes before its period)
    assert bool(re.search(r"call_second\(.*# matmul", hvp)) == (f is _recurrence)
    for point, direction in ((x, v), (-0.5 * x, np.cos(v)), (x, v)):
        assert_same(_interpreted_hvp(f, (point,), direction), tape.hvp(point, direction))
        assert_same(_interpreted_hvp(f, (point,), direction), ft.hvp(f, (point,), (direction,)))
