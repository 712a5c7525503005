"""Item assignment and scatter updates on traced arrays: ``x[key] = v``, ``x[key] += v``, ``np.add.at`` (and
subtract, multiply, minimum, maximum), ``np.zeros_like`` and friends, JAX's ``x.at[key]`` methods.  Values
are NumPy's (repeated indices included), derivatives JAX's to second order in both tiers; NumPy aliasing
that a functional update cannot reproduce, and a plain array receiving traced values, raise with the fix."""

from __future__ import annotations

import numpy as np
import pytest

import fasttape as ft
from fasttape import tiers
from fasttape.errors import TracerMutationError

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(43)
A = RNG.normal(size=(6, 6))
U = RNG.normal(size=6)
W = RNG.normal(size=4)
REPEATED = np.array([0, 2, 2, 5])
UNIQUE = np.array([0, 2, 5])


def step(u):
    """The issue's stencil, as a NumPy user writes it: a Laplacian filled into a zero array."""
    v = np.zeros_like(u)
    v[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
    return np.sum(np.sin(np.einsum("ij,j->i", A, v)))


def jax_step(u):
    v = jnp.zeros_like(u).at[1:-1].set(u[2:] - 2 * u[1:-1] + u[:-2])
    return jnp.sum(jnp.sin(jnp.einsum("ij,j->i", A, v)))


def updates(x, w):
    y = x.copy()
    y[REPEATED] += w  # NumPy: a repeated index is written once
    y[3] = y[1] * w[0]
    t = np.zeros_like(x)
    np.add.at(t, REPEATED, w)  # accumulates
    np.maximum.at(t, REPEATED, 0.5 * w)
    s = np.ones_like(x)
    np.subtract.at(s, [1, 1], w[:2])
    np.multiply.at(s, UNIQUE, w[:3])
    return np.sum(np.sin(y) + t**2 + np.cos(s) + x.at[REPEATED].add(w) ** 2 + x.at[REPEATED].min(w) ** 3
                  + x.at[REPEATED].max(w) ** 2 + x.at[1:3].set(0.5) ** 2 + x.at[UNIQUE].divide(w[:3])
                  + x.at[REPEATED].subtract(w) ** 2 + x.at[UNIQUE].multiply(w[:3]) ** 2
                  ) + np.sum(x.at[UNIQUE].get())  # fmt: skip


def jax_updates(x, w):
    x, w = jnp.asarray(x), jnp.asarray(w)
    y = x.at[REPEATED].set(x[REPEATED] + w)
    y = y.at[3].set(y[1] * w[0])
    t = jnp.zeros_like(x).at[REPEATED].add(w).at[REPEATED].max(0.5 * w)
    s = jnp.ones_like(x).at[jnp.array([1, 1])].add(-w[:2]).at[UNIQUE].multiply(w[:3], unique_indices=True)
    return jnp.sum(jnp.sin(y) + t**2 + jnp.cos(s) + x.at[REPEATED].add(w) ** 2 + x.at[REPEATED].min(w) ** 3
                   + x.at[REPEATED].max(w) ** 2 + x.at[1:3].set(0.5) ** 2
                   + x.at[UNIQUE].divide(w[:3], unique_indices=True) + x.at[REPEATED].subtract(w) ** 2
                   + x.at[UNIQUE].multiply(w[:3], unique_indices=True) ** 2) + jnp.sum(x[UNIQUE])  # fmt: skip


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_assignments_and_scatters_have_jaxs_value_gradient_and_hvp(tier):
    v = RNG.normal(size=U.shape)
    with tiers.only(tier):
        stencil_value, stencil_grad = ft.value_and_grad(step)(U)
        value, grads = ft.value_and_grad(updates, argnums=(0, 1))(U, W)
        hv = ft.hvp(lambda x: updates(x, W), (U,), (v,))
    np.testing.assert_allclose(stencil_value, jax_step(U), rtol=1e-12)
    np.testing.assert_allclose(stencil_grad, jax.grad(jax_step)(U), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(value, jax_updates(U, W), rtol=1e-12)
    for ours, jaxs in zip(grads, jax.grad(jax_updates, argnums=(0, 1))(U, W)):
        np.testing.assert_allclose(ours, jaxs, rtol=1e-10, atol=1e-12)
    hv_jax = jax.jvp(jax.grad(lambda x: jax_updates(x, W)), (U,), (v,))[1]
    np.testing.assert_allclose(hv, hv_jax, rtol=1e-10, atol=1e-12)


def test_values_follow_numpy_with_repeated_indices_and_broadcasting():
    def numpy_updates(x):
        y = np.zeros_like(x)
        y[[1, 1, 4]] = x[:3]  # the last write wins
        y[2:4] += 1.5  # a scalar broadcast
        z = np.empty_like(x, shape=(2, 3))
        z[:] = x[:3]
        z[1, ::2] = -1.0
        np.add.at(y, [0, 0, 0], x[3])
        return np.concatenate([y, z.ravel(), np.copy(x)])

    np.testing.assert_allclose(ft.trace(numpy_updates, U)(U), numpy_updates(U.copy()), rtol=1e-14)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(numpy_updates(x) ** 2))(U),
                               jax.grad(lambda x: jnp.sum(jnp.concatenate([
                                   jnp.zeros(6).at[1].set(x[1]).at[4].set(x[2]).at[2:4].add(1.5).at[0].add(3 * x[3]),
                                   jnp.stack([x[:3], x[:3]]).at[1, ::2].set(-1.0).ravel(), x]) ** 2))(U),
                               rtol=1e-12)  # fmt: skip


def test_a_copy_and_a_rebound_view_are_free_to_change():
    def f(x):
        y = x * 1.0
        kept = y.copy()
        y = y.reshape(2, 3)  # the old y is gone: nothing can see a write through it
        y[0, 1] = 5.0
        return np.sum(y**2) + np.sum(kept)

    np.testing.assert_allclose(ft.grad(f)(U), 2 * U * (np.arange(6) != 1) + 1.0, rtol=1e-14)


def test_aliasing_that_a_functional_update_cannot_reproduce_raises_with_the_fix():
    def write_after_view(x):
        head = x[1:]
        x[0] = 1.0
        return np.sum(head)

    def write_into_view(x):
        y = x * 1.0
        tail = y[1:]
        tail[0] = 1.0
        return np.sum(y)

    with pytest.raises(TracerMutationError, match=r"view of it taken earlier.*\.copy\(\)"):
        ft.grad(write_after_view)(U)
    with pytest.raises(TracerMutationError, match=r"view of another traced array.*\.copy\(\)"):
        ft.grad(write_into_view)(U)


def test_a_plain_array_receiving_traced_values_says_so_and_names_zeros_like():
    def fill_plain(x):
        buf = np.zeros(8)
        buf[:4] = x[:4]
        return np.sum(buf)

    with pytest.raises(TracerMutationError, match=r"plain NumPy array cannot receive traced values.*zeros_like"):
        ft.grad(fill_plain)(U)
    with pytest.raises(TracerMutationError, match=r"numpy\.add\.at writes traced values into a plain NumPy array"):
        ft.grad(lambda x: np.sum(np.add.at(np.zeros(6), [0], x[0]) or x))(U)
    with pytest.raises(IndexError):  # NumPy's own
        ft.grad(lambda x: np.sum(x.at[7].set(1.0)))(U)
    with pytest.raises(ValueError):  # a value that does not broadcast: NumPy's own
        ft.grad(lambda x: np.sum(x.at[:2].set(x[:3])))(U)
