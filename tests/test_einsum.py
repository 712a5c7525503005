"""numpy.einsum, tensordot and kron on traced arrays: every subscript form (explicit, implicit, interleaved,
ellipsis with broadcasting, repeated letters, several operands, optimize=) has NumPy's value and JAX's
gradient and HVP, lowered onto matmul (no new primitive); NumPy's own errors for bad subscripts.  The
oracle checks the einsum, tensordot and kron cases in every derivative kind."""

from __future__ import annotations

import numpy as np
import pytest

import fasttape as ft
from fasttape import tiers

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(31)

SUBSCRIPTS = [
    ("ij,j->i", [(3, 4), (4,)]),
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ijk,ikl->jl", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i", [(4,), (4,)]),
    ("ij,kj", [(3, 4), (5, 4)]),
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("...i,...i->...", [(2, 1, 4), (3, 4)]),
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
    ("ab,cd,bd->ac", [(2, 3), (4, 5), (3, 5)]),
]


def _check(f, jax_f, xs, tier="compiled"):
    argnums = tuple(range(len(xs)))
    v = RNG.normal(size=xs[0].shape)
    with tiers.only(tier):
        value, grads = ft.value_and_grad(f, argnums=argnums)(*xs)
        hv = ft.hvp(lambda x0: f(x0, *xs[1:]), (xs[0],), (v,))
    np.testing.assert_allclose(value, jax_f(*xs), rtol=1e-12)
    for ours, jaxs in zip(grads, jax.grad(jax_f, argnums=argnums)(*xs)):
        np.testing.assert_allclose(ours, jaxs, rtol=1e-10, atol=1e-12)
    hv_jax = jax.jvp(jax.grad(lambda x0: jax_f(x0, *xs[1:])), (xs[0],), (v,))[1]
    np.testing.assert_allclose(hv, hv_jax, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("subscripts", "shapes"), SUBSCRIPTS, ids=[s for s, _ in SUBSCRIPTS])
def test_every_subscript_pattern_has_numpys_value_and_jaxs_derivatives(subscripts, shapes):
    xs = [RNG.normal(size=s) for s in shapes]
    traced = ft.trace(lambda *xs: np.einsum(subscripts, *xs), *xs, argnums=tuple(range(len(xs))))(*xs)
    np.testing.assert_allclose(traced, np.einsum(subscripts, *xs), rtol=1e-12, atol=1e-14)
    _check(lambda *xs: np.sum(np.sin(np.einsum(subscripts, *xs))),
           lambda *xs: jnp.sum(jnp.sin(jnp.einsum(subscripts, *xs))), xs)  # fmt: skip


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_interleaved_form_optimize_tensordot_and_kron(tier):
    A, B, C = RNG.normal(size=(3, 4)), RNG.normal(size=(4, 5)), RNG.normal(size=(2, 3, 4))
    x = RNG.normal(size=3)

    def f(A, B, C, x, xp=np):
        return (xp.sum(xp.einsum(A, [0, 1], B, [1, 2], [0, 2]) ** 2)
                + xp.sum(xp.einsum("ij,jk,kl->il", A, B, B.T, optimize="optimal") ** 2)
                + xp.sum(xp.tensordot(A, B, axes=1) ** 2) + xp.sum(xp.tensordot(C, A, axes=([1, 2], [0, 1])) ** 3)
                + xp.sum(xp.sin(xp.kron(A, B))) + xp.sum(xp.kron(x, A) ** 2))  # fmt: skip

    _check(f, lambda *args: f(*args, xp=jnp), [A, B, C, x], tier)


def test_integer_constants_and_numpys_errors():
    labels = np.arange(12).reshape(3, 4) % 3  # an integer operand is a constant of the tape
    x = RNG.normal(size=4)
    g = ft.grad(lambda x: np.sum(np.einsum("ij,j->i", labels, x) ** 2))(x)
    np.testing.assert_allclose(g, jax.grad(lambda x: jnp.sum(jnp.einsum("ij,j->i", labels, x) ** 2))(x), rtol=1e-12)
    with pytest.raises(ValueError, match="operand"):
        ft.grad(lambda x: np.sum(np.einsum("ij,j->i", x, x)))(x)
    with pytest.raises(ValueError):
        ft.grad(lambda x: np.sum(np.einsum("i,i->i", x, x[:3])))(x)


def test_a_contraction_is_one_batched_product_on_the_tape():
    A, B = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 4, 5))
    listing = str(ft.trace(lambda A, B: np.sum(np.einsum("bij,bjk->bik", A, B)), A, B, argnums=(0, 1)))
    assert listing.count("matmul[") == 1
