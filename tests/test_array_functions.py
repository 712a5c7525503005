"""NumPy's array-building functions on traced arrays (diff, pad, convolve, correlate, polyval, linspace, cumprod and
ufunc.accumulate) and
the masked reductions (``where=`` and ``initial=`` of sum, prod, max, min, mean, var, std): NumPy's values,
JAX's gradients and HVPs in both tiers, NumPy's errors, and a clear error for the modes that are not a
movement of elements.  The oracle checks their cases in every derivative kind."""

from __future__ import annotations

import numpy as np
import pytest

import fasttape as ft
from fasttape import tiers
from fasttape.errors import UnsupportedFunctionError

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(41)
X = RNG.normal(size=(3, 5))
U = RNG.normal(size=6)
W = RNG.normal(size=3)
MASK = RNG.random((3, 5)) > 0.4
MASK[:, 0] = True


def array_functions(x, u, w, xp=np):
    """A little of everything: finite differences, padded stencils, filters, a polynomial and a grid."""
    terms = [
        xp.sum(xp.diff(x) ** 2), xp.sum(xp.diff(x, n=2, axis=0) ** 2),
        xp.sum(xp.sin(xp.diff(u, prepend=0.5, append=u[:1]))),
        xp.sum(xp.sin(xp.pad(x, ((1, 2), (0, 1))))), xp.sum(xp.sin(xp.pad(x, 2, mode="edge"))),
        xp.sum(xp.sin(xp.pad(u, (2, 3), mode="reflect"))), xp.sum(xp.sin(xp.pad(u, (2, 3), mode="wrap"))),
        xp.sum(xp.sin(xp.pad(x, ((1, 1), (2, 0)), mode="symmetric"))),
        xp.sum(xp.sin(xp.pad(x, 1, constant_values=((1.0, 2.0), (3.0, 4.0))))),
        xp.sum(xp.pad(u, 2, constant_values=u[0]) ** 2),
        xp.sum(xp.sin(xp.convolve(u, w))), xp.sum(xp.sin(xp.convolve(w, u, "same"))),
        xp.sum(xp.sin(xp.convolve(u, w, "valid"))), xp.sum(xp.sin(xp.correlate(u, w))),
        xp.sum(xp.sin(xp.correlate(w, u, "full"))),
        xp.sum(xp.sin(xp.polyval(w, u))), xp.sum(xp.polyval(u, 0.3)),
        xp.sum(xp.sin(xp.linspace(u[0], u[1], 7))),
        xp.sum(xp.sin(xp.linspace(u[:2], w[:2], 4, endpoint=False, axis=1))),
    ]  # fmt: skip
    return sum(terms[1:], terms[0])


def masked_reductions(x, xp=np):
    return (xp.sum(xp.sum(x**2, axis=1, where=MASK)) + xp.prod(x, where=MASK, initial=2.0)
            + xp.sum(xp.max(x, axis=0, where=MASK, initial=-1.0)) + xp.sum(xp.min(x, axis=1, where=MASK, initial=5.0))
            + xp.sum(xp.mean(x, axis=1, where=MASK)) + xp.sum(xp.var(x, axis=1, where=MASK, ddof=1))
            + xp.std(x, where=MASK) + xp.sum(x, initial=3.0) + xp.mean(x, where=x > 0))  # fmt: skip


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_array_functions_have_jaxs_value_gradient_and_hvp(tier):
    with tiers.only(tier):
        value, grads = ft.value_and_grad(array_functions, argnums=(0, 1, 2))(X, U, W)
        v = RNG.normal(size=U.shape)
        hv = ft.hvp(lambda u: array_functions(X, u, W), (U,), (v,))

    def jax_f(*args):
        return array_functions(*args, xp=jnp)

    np.testing.assert_allclose(value, jax_f(X, U, W), rtol=1e-12)
    for ours, jaxs in zip(grads, jax.grad(jax_f, argnums=(0, 1, 2))(X, U, W)):
        np.testing.assert_allclose(ours, jaxs, rtol=1e-10, atol=1e-12)
    hv_jax = jax.jvp(jax.grad(lambda u: jax_f(X, u, W)), (U,), (v,))[1]
    np.testing.assert_allclose(hv, hv_jax, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_masked_reductions_have_jaxs_value_gradient_and_hvp(tier):
    v = RNG.normal(size=X.shape)
    with tiers.only(tier):
        value, grad = ft.value_and_grad(masked_reductions)(X)
        hv = ft.hvp(masked_reductions, (X,), (v,))
    np.testing.assert_allclose(value, masked_reductions(X, jnp), rtol=1e-12)
    np.testing.assert_allclose(grad, jax.grad(lambda x: masked_reductions(x, jnp))(X), rtol=1e-10, atol=1e-12)
    hv_jax = jax.jvp(jax.grad(lambda x: masked_reductions(x, jnp)), (X,), (v,))[1]
    np.testing.assert_allclose(hv, hv_jax, rtol=1e-10, atol=1e-12)


def test_values_are_numpys():
    cases = [
        (lambda x: np.pad(x, ((1, 2), (3, 0)), mode="reflect"), X),
        (lambda x: np.pad(x, 2, constant_values=7.0), X),
        (lambda u: np.convolve(u, W, "same"), U),
        (lambda u: np.correlate(W, u, "full"), U),
        (lambda u: np.linspace(u[:3], 2.0, 5, axis=-1), U),
        (lambda u: np.polyval(u, W), U),
        (lambda x: np.diff(x, 3, axis=1), X),
        (lambda x: np.max(x, axis=1, where=MASK, initial=0.5), X),
    ]
    for f, x in cases:
        np.testing.assert_allclose(ft.trace(f, x)(x), f(x), rtol=1e-13, atol=1e-15)
    step = ft.trace(lambda u: np.linspace(u[0], u[1], 5, retstep=True)[1], U)(U)
    assert step == pytest.approx(np.linspace(U[0], U[1], 5, retstep=True)[1], rel=1e-14)


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(UnsupportedFunctionError, match=r"mode='mean'.*'constant', 'edge'"):
        ft.grad(lambda u: np.sum(np.pad(u, 1, mode="mean")))(U)
    with pytest.raises(UnsupportedFunctionError, match="reflect_type='odd'"):
        ft.grad(lambda u: np.sum(np.pad(u, 1, mode="reflect", reflect_type="odd")))(U)
    with pytest.raises(ValueError, match="identity"):  # NumPy's: max with a mask needs initial
        ft.grad(lambda x: np.max(x, where=MASK))(X)
    with pytest.raises(ValueError, match="one-dimensional"):
        ft.grad(lambda x: np.sum(np.convolve(x, W)))(X)
    with pytest.raises(ValueError, match="order must be non-negative"):
        ft.grad(lambda u: np.sum(np.diff(u, -1)))(U)


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_cumprod_and_accumulate_have_jaxs_derivatives_at_zeros_too(tier):
    x = RNG.normal(size=(3, 7))
    x[1, 3] = x[2, 2] = x[2, 5] = 0.0  # a prefix product through one zero, and through two

    def f(x, xp=np):
        if xp is np:
            running = (np.maximum.accumulate(x, axis=1), np.minimum.accumulate(x), np.multiply.accumulate(x, axis=1))
        else:
            running = (jax.lax.cummax(x, axis=1), jax.lax.cummin(x, axis=0), jnp.cumprod(x, axis=1))
        return (xp.sum(xp.sin(xp.cumprod(x, axis=1))) + xp.sum(xp.cumprod(x) ** 2) + xp.sum(running[0] ** 2)
                + xp.sum(running[1] ** 3) + xp.sum(xp.cos(running[2])))  # fmt: skip

    v = RNG.normal(size=x.shape)
    with tiers.only(tier):
        cumulative = ft.trace(lambda x: np.cumprod(x, axis=1), x)(x)
        value, grad = ft.value_and_grad(f)(x)
        hv = ft.hvp(f, (x,), (v,))
    np.testing.assert_allclose(cumulative, np.cumprod(x, axis=1), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(value, f(x, jnp), rtol=1e-12)
    np.testing.assert_allclose(grad, jax.grad(lambda x: f(x, jnp))(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(lambda x: f(x, jnp)), (x,), (v,))[1], rtol=1e-10, atol=1e-12)
