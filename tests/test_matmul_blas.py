"""Products large enough for BLAS (m k n >= 32768): every sweep writes them through dgemm, assigning a
first-written adjoint or tangent and accumulating into one already written (beta = 1, in place)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import fasttape as ft

from .helpers import assert_close, assert_tree_close, both

RNG = np.random.default_rng(11)


def products_twice(xp, x, y):
    """Two products of the same operands: the second adjoint written into x and y accumulates."""
    p = x @ y
    q = (0.5 * x) @ y
    return xp.sum(xp.tanh(p) * q)


def batched_then_elementwise(xp, x, y):
    """Batched products; x's adjoint is first written by the later x * x (reverse order)."""
    return xp.sum(xp.sin(x @ y)) + xp.sum(x * x)


def elementwise_then_batched(xp, x, y):
    return xp.sum(x * x * y[:, :20, :30].sum()) + xp.sum(xp.cos(x @ y))


def matrix_vector(xp, x, v):
    """n == 1: an accumulated adjoint of x is an outer product added row by row."""
    return xp.sum(xp.tanh(x @ v)) + xp.sum(xp.exp(0.01 * (x @ v)) * (x @ (v * v)))


def gram(xp, x):
    """x @ x.T: both operands are x."""
    g = x @ x.T
    return xp.sum(g * g) * 1e-3


CASES = {
    "products_twice": (products_twice, ((40, 30), (30, 50))),
    "batched_then_elementwise": (batched_then_elementwise, ((4, 20, 30), (4, 30, 50))),
    "elementwise_then_batched": (elementwise_then_batched, ((4, 20, 30), (4, 30, 50))),
    "matrix_vector": (matrix_vector, ((200, 300), (300,))),
    "gram": (gram, ((40, 900),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blas_products_match_jax_in_every_sweep(name):
    fn, shapes = CASES[name]
    f_ft, f_jax = both(fn)
    args = tuple(RNG.normal(size=s) * 0.3 for s in shapes)
    argnums = tuple(range(len(args)))
    tape = ft.trace(f_ft, *args, argnums=argnums)
    value, grads = tape.value_and_grad(*args)
    expected_value, expected_grads = jax.value_and_grad(f_jax, argnums=argnums)(*args)
    assert_close(value, expected_value)
    assert_tree_close(grads, expected_grads)
    v = tuple(RNG.normal(size=s) for s in shapes)
    assert_close(tape.jvp(args, v)[1], jax.jvp(f_jax, args, v)[1])
    hv = tape.hvp(*args, v)
    expected_hv = jax.jvp(jax.grad(f_jax, argnums=argnums), args, v)[1]
    assert_tree_close(hv if isinstance(hv, tuple) else (hv,), expected_hv)
    # two directions in one sweep equal two separate products
    w = tuple(RNG.normal(size=s) for s in shapes)
    both_dirs = tape.hvp(*args, tuple(np.stack([a, b], axis=-1) for a, b in zip(v, w)))
    single = tape.hvp(*args, w)
    both_dirs = both_dirs if isinstance(both_dirs, tuple) else (both_dirs,)
    single = single if isinstance(single, tuple) else (single,)
    for pair, first, second in zip(both_dirs, hv if isinstance(hv, tuple) else (hv,), single):
        assert_close(pair[..., 0], first)
        assert_close(pair[..., 1], second)
    # reverse-mode Jacobian: k seeds through the plain k-direction reverse
    assert_tree_close(tape.jacobian(*args, mode="rev"), jax.jacrev(f_jax, argnums=argnums)(*args))
