"""Indices computed in the sweep: traced integer keys, ``np.take`` / ``take_along_axis``, updates at traced
indices, integer arguments as runtime data (never re-traced) and ``static_argnums``.  Values are NumPy's,
derivatives JAX's (gradient and HVP) in both tiers; an index out of range raises NumPy's IndexError from the
sweep and leaves the tape usable."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fasttape as ft
from fasttape import tiers
from fasttape.errors import ConcretizationError, InputTypeError

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(14)
X = RNG.normal(size=(20, 3))
C = RNG.normal(size=(4, 3))
W = RNG.normal(size=(3, 5))
M = RNG.normal(size=(5, 4, 3))
TIERS = ["compiled", "executor"]


def kmeans(C, X, xp=np):
    """The issue's k-means objective: each point's squared distance to its nearest centre."""
    d = xp.sum((X[:, None, :] - C[None]) ** 2, -1)
    return xp.sum(d[xp.arange(len(X)), xp.argmin(d, axis=1)])


def xent(W, X, labels, xp=np):
    """The issue's softmax cross-entropy with integer labels, new every minibatch."""
    lse = ft.numpy.logsumexp if xp is np else jax.scipy.special.logsumexp
    z = X @ W
    return xp.mean(lse(z, axis=1) - z[xp.arange(len(labels)), labels])


def gathers(x, k, xp=np):
    """Every lowering of a traced key: one take (x[k], x[:, k], np.take), one take along an axis
    (x[arange, k], take_along_axis) and flat positions (two traced keys, a traced key beside a slice)."""
    j = k[:3]
    return (xp.sum(xp.sin(x[k]) * x[j[0]]) + xp.sum(x[:, j % 4] ** 2) + xp.sum(xp.take(x, k % 3, axis=2) ** 3)
            + xp.sum(x[xp.arange(5), j[1:2].repeat(5) % 4] ** 2) + xp.sum(x[k, j[:1].repeat(len(k)) % 4] ** 3)
            + xp.sum(x[j[0], 1:, j % 3]) ** 2 + xp.sum(xp.take_along_axis(x, (k % 3)[:4].reshape(1, 4, 1), 2) ** 2)
            + xp.sum(x[..., -1][k] * x[-k - 1, 0, 0][:, None]))  # fmt: skip


def updates(x, k, v, xp=np):
    """Updates at traced indices: scatter-add (repeated indices accumulate) and set (the last write wins)."""
    if xp is np:
        y = np.zeros_like(v, shape=x.shape)
        np.add.at(y, k, v)
        y[k[:2]] = v[:2] * 3.0
        z = x.copy()
        z[k] += v  # NumPy: a repeated index is written once
        w = x.at[k].subtract(v)
    else:
        x = jnp.asarray(x)
        y = jnp.zeros_like(x).at[k].add(v).at[k[:2]].set(v[:2] * 3.0)
        z = x.at[k].set(x[k] + v)
        w = x.at[k].add(-v)
    return xp.sum(xp.sin(y) * x + z**2 + w**3)


def check(fn, args, argnums, tier, v=None):
    """Value, gradient and (for v) the HVP of fn against JAX's, in one tier."""
    ours, jaxs = (lambda *a: fn(*a)), (lambda *a: fn(*a, xp=jnp))
    with tiers.only(tier):
        value, grads = ft.value_and_grad(ours, argnums=argnums)(*args)
        hv = None if v is None else ft.hvp(lambda x: ours(x, *args[1:]), (args[0],), (v,))
    np.testing.assert_allclose(value, jaxs(*args), rtol=1e-12)
    expected = jax.grad(jaxs, argnums=argnums)(*args)
    for g, e in zip(grads if isinstance(argnums, tuple) else (grads,), expected if isinstance(argnums, tuple)
                    else (expected,)):  # fmt: skip
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    if v is not None:
        expected_hv = jax.jvp(jax.grad(lambda x: jaxs(x, *args[1:])), (args[0],), (v,))[1]
        np.testing.assert_allclose(hv, expected_hv, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_the_issues_kmeans_and_cross_entropy_match_jax(tier):
    check(kmeans, (C, X), 0, tier, v=RNG.normal(size=C.shape))
    labels = RNG.integers(0, 5, size=len(X))
    check(xent, (W, X, labels), 0, tier, v=RNG.normal(size=W.shape))


@pytest.mark.parametrize("tier", TIERS)
def test_a_new_minibatch_of_labels_replays_the_same_tape(tier):
    grad = ft.grad(xent)
    with tiers.only(tier):
        for _ in range(4):
            labels = RNG.integers(0, 5, size=len(X))
            np.testing.assert_allclose(grad(W, X, labels), jax.grad(xent)(W, X, labels, xp=jnp), rtol=1e-10)
    assert len(grad.cache) == 1
    grad(W, X, labels.astype(np.int32))  # another integer dtype: the same signature
    assert len(grad.cache) == 1
    grad(W, X[:10], labels[:10])  # another shape: a tape of its own
    assert len(grad.cache) == 2


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("k", [np.array([0, 3, 2, 3, -2]), np.array([4, 1, 1, 0, 2])])
def test_every_lowering_of_a_traced_key_matches_jax(tier, k):
    check(gathers, (M, k), 0, tier, v=RNG.normal(size=M.shape))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("k", [np.array([1, 3, 1, 0]), np.array([2, 2, -1, 4])])
def test_updates_at_traced_indices_match_jax(tier, k):
    x, v = RNG.normal(size=5), RNG.normal(size=4)
    check(updates, (x, k, v), (0, 2), tier, v=RNG.normal(size=5))
    directions = (RNG.normal(size=5), RNG.normal(size=4))
    with tiers.only(tier):
        hv = ft.hvp(lambda x, v: updates(x, k, v), (x, v), directions)
    expected = jax.jvp(jax.grad(lambda x, v: updates(x, k, v, xp=jnp), argnums=(0, 1)), (x, v), directions)[1]
    for ours, jaxs in zip(hv, expected):
        np.testing.assert_allclose(ours, jaxs, rtol=1e-10, atol=1e-12)


def test_a_traced_mask_writes_one_value_and_refuses_to_select():
    def clipped(x):
        y = x * 1.0
        y[y < 0] = 0.0  # np.where(y < 0, 0, y)
        y[y > 1] = y[0]
        return np.sum(y**2)

    x = RNG.normal(size=8)

    def jax_clipped(x):
        y = jnp.where(x < 0, 0.0, x)
        return jnp.sum(jnp.where(y > 1, y[0], y) ** 2)

    expected = jax.grad(jax_clipped)(x)
    np.testing.assert_allclose(ft.grad(clipped)(x), expected, rtol=1e-12)
    with pytest.raises(ConcretizationError, match=r"traced boolean mask.*np\.where"):
        ft.grad(lambda x: np.sum(x[x > 0]))(x)
    with pytest.raises(ConcretizationError, match=r"single value"):
        ft.grad(lambda x: np.sum(x.at[x > 0].set(x)))(x)


@pytest.mark.parametrize("tier", TIERS)
def test_an_index_out_of_range_raises_numpys_error_from_the_sweep_and_the_tape_survives(tier):
    grad = ft.grad(gathers)
    k = np.array([0, 3, 2, 3, -2])
    with tiers.only(tier):
        expected = grad(M, k)
        for bad, axis, size in ((5, 0, 5), (-6, 0, 5)):
            message = rf"index {bad} is out of bounds for axis {axis} with size {size} in 'gathers': the indices come "
            with pytest.raises(IndexError, match=message + r"from the argument arg1 \(instruction \d+\)"):
                grad(M, np.array([0, 3, 2, 3, bad]))
        scatter_grad = ft.grad(updates, argnums=(0, 2))
        scatter_grad(np.ones(5), np.array([1, 3, 0, 0]), np.ones(4))  # traced with indices in range
        with pytest.raises(IndexError, match=r"index 7 is out of bounds .*from the argument arg1"):
            scatter_grad(np.ones(5), np.array([1, 7, 0, 0]), np.ones(4))
        np.testing.assert_array_equal(grad(M, k), expected)  # nothing was corrupted
    assert len(grad.cache) == 1


def test_integer_arguments_are_data_and_static_argnums_bakes_them_in():
    def f(x, labels, n):
        onehot = ft.numpy.take(np.eye(4), labels, axis=0)  # a constant indexed by traced labels
        scaled = (labels * 2 + 1).astype(float)  # integer arithmetic, then a float
        return np.sum(onehot @ x[:4] * scaled[:, None]) + np.sum(labels == 2) * x[0, 0] ** n

    x = RNG.normal(size=(5, 3))
    grad = ft.grad(f)
    for labels in (np.array([0, 2, 3, 2]), np.array([1, 1, 0, 2])):

        def jf(x, labels=labels):
            onehot = jnp.eye(4)[labels]
            return jnp.sum(onehot @ x[:4] * (labels * 2 + 1)[:, None]) + jnp.sum(labels == 2) * x[0, 0] ** 3

        np.testing.assert_allclose(grad(x, labels, 3), jax.grad(jf)(x), rtol=1e-12)
    assert len(grad.cache) == 1

    def with_count(x, k):
        return sum(x[i, 0] for i in range(k[0]))  # a Python loop bound: k must be static

    for plain_index in (lambda k: np.eye(5)[k], lambda k: np.take(np.eye(5), k, axis=0)):
        with pytest.raises(ConcretizationError, match=r"plain NumPy array.*fasttape\.numpy\.take\(a, k, axis=0\)"):
            ft.grad(lambda x, k, index=plain_index: np.sum(index(k) @ x))(x, np.array([1, 2]))
    with pytest.raises(ConcretizationError, match="static_argnums"):
        ft.grad(with_count)(x, np.array([2]))
    static = ft.grad(with_count, static_argnums=1)
    np.testing.assert_allclose(static(x, np.array([2]))[:, 0], [1, 1, 0, 0, 0])
    np.testing.assert_allclose(static(x, np.array([3]))[:, 0], [1, 1, 1, 0, 0])
    assert len(static.cache) == 2
    with pytest.raises(ValueError, match="both argnums and static_argnums"):
        ft.grad(with_count, static_argnums=0)(x, np.array([2]))
    with pytest.raises(InputTypeError, match=r"arg1.*int"):
        ft.grad(f, argnums=1)(x, np.array([0, 1, 2, 3]), 3)


def test_index_errors_name_the_problem():
    x = RNG.normal(size=6)
    with pytest.raises(IndexError, match=r"integer \(or boolean\) type.*astype\(int\)"):
        ft.grad(lambda x: np.sum(x[np.floor(x)]))(x)
    with pytest.raises(NotImplementedError, match=r"'multiply' update .* traced inputs"):
        ft.grad(lambda x: np.sum(x.at[np.argsort(x)].multiply(2.0)))(x)
    with pytest.raises(IndexError, match=r"out of bounds for axis 0 with size 6"):  # at trace time: NumPy's own
        ft.grad(lambda x, k: np.sum(x[k]))(x, np.array([6]))


def test_a_tape_with_traced_indices_saves_and_loads():
    labels = RNG.integers(0, 5, size=len(X))
    tape = ft.trace(lambda W, X, labels: xent(W, X, labels), W, X, labels)
    buffer = io.BytesIO()
    tape.save(buffer)
    buffer.seek(0)
    loaded = ft.load_tape(buffer)
    other = RNG.integers(0, 5, size=len(X))
    np.testing.assert_allclose(loaded.value_and_grad(W, X, other)[1], tape.value_and_grad(W, X, other)[1],
                               rtol=1e-14)  # fmt: skip
    assert "take" in loaded.listing() and "i64[20]" in loaded.listing()
