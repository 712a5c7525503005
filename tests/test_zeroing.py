"""Zeroing adjoint runs before a reverse sweep: long runs go through one memset, short ones a loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fasttape as ft
from fasttape import kernels as K

from .helpers import assert_close


@pytest.mark.parametrize("length", [0, 1, K.MEMSET_MIN - 1, K.MEMSET_MIN, K.MEMSET_MIN + 1, 20_011])
@pytest.mark.parametrize("start", [0, 3, 7_000])
def test_zero_clears_exactly_its_run(start, length):
    buf = np.arange(1.0, 30_000.0)
    K._zero(buf, start, length)
    expected = np.arange(1.0, 30_000.0)
    expected[start : start + length] = 0.0
    np.testing.assert_array_equal(buf, expected)


def test_accumulated_adjoints_restart_from_zero_on_every_call():
    """x[1:] and x[:-1] both add into x's adjoint, which is zeroed (by memset) before each sweep."""
    n = 4 * K.MEMSET_MIN + 5

    def f(xp, x):
        return xp.sum(xp.sin(x[1:]) * x[:-1])

    g = ft.grad(lambda x: f(np, x))
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.normal(size=n)
        assert_close(g(x), jax.grad(lambda x: f(jnp, x))(x))
