"""Batches (``ft.vmap``, ``.map``, ``Tape.value_and_grad_batch``): a loop of single calls' results, bit for bit.

Each test compares a batch with the loop of single calls it replaces, under both tiers a single call can
run (the interpreter, ``tape_kernels="never"``, and the tape's own kernels, ``"always"``), on one thread and
on several; JAX's ``vmap`` of the same function checks the layout (``in_axes`` / ``out_axes``).  Batches
large enough to share run the parallel driver (``batch.SERIAL_VALUES``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numba
import numpy as np
import pytest

import fasttape as ft
from fasttape import batch, batch_blocks

from .helpers import branchy_loss as _branchy
from .helpers import regression_loss as _regression

B = 128  # members: with the tapes below, enough values of work for the parallel driver
WORKERS = (1, min(2, numba.config.NUMBA_NUM_THREADS))


@pytest.fixture(params=["never", "always"])
def tier(request):
    with ft.options(tape_kernels=request.param):
        yield request.param


def _rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _params(p, x):
    return np.sum(np.tanh(p["W"] @ x + p["b"]) ** 2) * p["scale"]


rng = np.random.default_rng(3)
W = rng.uniform(-1.5, 1.5, (B, 40))
X = rng.normal(size=(30, 40))
Y = rng.normal(size=30)


def _loop(fn, members):
    return [fn(*args) for args in members]


def _assert_identical(batched, singles):
    """The batch's results (stacked on axis 0) are the singles', every bit."""
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *singles)
    leaves_a, tree_a = jax.tree_util.tree_flatten(batched)
    leaves_b, tree_b = jax.tree_util.tree_flatten(stacked)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b):
        assert np.asarray(a).shape == np.asarray(b).shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=False)
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("workers", WORKERS)
def test_grad_of_one_array_matches_the_loop(tier, workers):
    g = ft.grad(_rosenbrock)
    batched = ft.vmap(g, workers=workers)(W)
    _assert_identical(batched, _loop(g, [(w,) for w in W]))
    tape = g.tape(W[0])
    assert B * tape.n_values >= batch.SERIAL_VALUES  # (the parallel driver ran)
    assert (tape._kernels.value_and_grad_io is not None) == (tier == "always")  # (and in the tier asked for)


@pytest.mark.parametrize("workers", WORKERS)
def test_value_and_grad_with_shared_arguments_matches_the_loop(tier, workers):
    vg = ft.value_and_grad(_regression)
    batched = ft.vmap(vg, in_axes=(0, None, None), workers=workers)(W, X, Y)
    _assert_identical(batched, _loop(vg, [(w, X, Y) for w in W]))


def test_map_maps_the_differentiated_arguments(tier):
    g = ft.grad(_regression)
    _assert_identical(g.map(W, X, Y), _loop(g, [(w, X, Y) for w in W]))
    gx = ft.grad(_regression, argnums=(0, 2))
    Ys = rng.normal(size=(B, 30))
    _assert_identical(gx.map(W, X, Ys), _loop(gx, [(w, X, y) for w, y in zip(W, Ys)]))


def test_containers_aux_and_scalars_match_the_loop(tier):
    params = {"W": rng.normal(size=(B, 5, 40)), "b": rng.normal(size=(B, 5)), "scale": 0.7}
    g = ft.grad(_params)
    axes = ({"W": 0, "b": 0, "scale": None}, None)
    batched = ft.vmap(g, in_axes=axes)(params, W[0])
    singles = [g({"W": params["W"][b], "b": params["b"][b], "scale": 0.7}, W[0]) for b in range(B)]
    _assert_identical(batched, singles)

    def with_aux(w, c):
        return np.sum(np.sin(w) * c), {"norm": np.sum(w * w), "c": c}

    ga = ft.value_and_grad(with_aux, argnums=(0, 1), has_aux=True)
    cs = rng.normal(size=B)  # a float per member: member arguments of shape ()
    batched = ft.vmap(ga, in_axes=(0, 0))(W, cs)
    _assert_identical(batched, _loop(ga, [(w, float(c)) for w, c in zip(W, cs)]))


def test_integer_labels_may_be_mapped(tier):
    def picked(w, labels):
        return np.sum(np.tanh(w[labels]) ** 2)

    labels = rng.integers(0, 40, size=(B, 12))
    g = ft.grad(picked)
    _assert_identical(ft.vmap(g, in_axes=(0, 0))(W, labels), _loop(g, zip(W, labels)))


def test_axes_follow_jax(tier):
    Wt = np.ascontiguousarray(W.T)  # members along axis 1
    g = ft.grad(_regression)
    ours = ft.vmap(g, in_axes=(1, None, None), out_axes=1)(Wt, X, Y)

    def reference(w, X, y):
        r = jnp.tanh(X @ w) - y
        return jnp.sum(r * r) + 0.1 * jnp.sum(w**4)

    theirs = jax.vmap(jax.grad(reference), in_axes=(1, None, None), out_axes=1)(Wt, X, Y)
    assert ours.shape == theirs.shape == (40, B)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    values, grads = ft.vmap(ft.value_and_grad(_regression), in_axes=(-1, None, None), out_axes=(0, -1))(Wt, X, Y)
    assert values.shape == (B,) and grads.shape == (40, B)
    np.testing.assert_array_equal(grads, ours)


def test_members_on_other_branches_are_traced_apart(tier):
    g = ft.grad(_branchy)
    batched = ft.vmap(g, in_axes=(0, None, None))(W, X, Y)
    signs = np.sum(W, axis=1) > 0.0
    assert signs.any() and not signs.all()
    _assert_identical(batched, _loop(g, [(w, X, Y) for w in W]))
    assert len(g.cache) == 2


def test_a_tape_names_the_members_on_another_branch(tier):
    tape = ft.trace(_branchy, np.ones(40), X, Y)
    with pytest.raises(ft.BranchChangedError, match=r"batch members \[\d+.*of 128\) take a different branch"):
        tape.value_and_grad_batch(W, X, Y)
    positive = W[np.sum(W, axis=1) > 0.0]
    values, grads = tape.value_and_grad_batch(positive, X, Y)
    _assert_identical((values, grads), _loop(tape.value_and_grad, [(w, X, Y) for w in positive]))


def test_tape_batches_match_the_loop(tier):
    tape = ft.trace(_regression, W[0], X, Y)
    batched = tape.value_and_grad_batch(W, X, Y, workers=-1)
    _assert_identical(batched, _loop(tape.value_and_grad, [(w, X, Y) for w in W]))
    _assert_identical(tape.forward_batch(W, X, Y), _loop(tape, [(w, X, Y) for w in W]))


def test_an_index_out_of_range_names_the_member(tier):
    def picked(w, i):
        return np.sum(w[i] ** 2)

    index = np.zeros((B, 3), dtype=np.int64)
    index[17, 1] = 99
    with pytest.raises(IndexError, match=r"^batch member 17: index 99 is out of bounds"):
        ft.vmap(ft.grad(picked), in_axes=(0, 0))(W, index)


def test_long_runs_that_call_numpy_inside_the_threads(tier):
    """Elementwise runs of 4096+ values call NumPy from the sweep (holding the GIL a moment): the driver
    releases it, so the threads take turns instead of deadlocking."""
    big = rng.normal(size=(8, 5000))
    g = ft.grad(lambda x: np.sum(np.exp(np.sin(x)) * x))
    _assert_identical(ft.vmap(g, workers=WORKERS[-1])(big), _loop(g, [(x,) for x in big]))


def test_products_that_call_blas(tier):
    A = rng.normal(size=(64, 64))
    members = rng.normal(size=(16, 64, 64))  # 64³ multiply-adds per product: BLAS (matmul.BLAS_SIZE)
    g = ft.grad(lambda M, A: np.sum(np.tanh(M @ A) ** 2))
    batched = ft.vmap(g, in_axes=(0, None), workers=WORKERS[-1])(members, A)
    _assert_identical(batched, _loop(g, [(m, A) for m in members]))


def _vector(w):
    return np.tanh(w[:10]) * np.sum(w)


V = rng.normal(size=(B, 40))


@pytest.mark.parametrize("workers", WORKERS)
def test_jvp_hvp_and_vjp_match_the_loop(tier, workers):
    f = functools.partial(_regression, X=X, y=Y)
    hvps = ft.vmap(functools.partial(ft.hvp, f), workers=workers)((W,), (V,))
    _assert_identical(hvps, [ft.hvp(f, (w,), (v,)) for w, v in zip(W, V)])
    jvps = ft.vmap(ft.jvp, in_axes=(None, 0, 0), workers=workers)(_vector, (W,), (V,))
    _assert_identical(jvps, [ft.jvp(_vector, (w,), (v,)) for w, v in zip(W, V)])
    shared = ft.vmap(ft.jvp, in_axes=(None, 0, None), workers=workers)(_vector, (W,), (V[0],))
    _assert_identical(shared, [ft.jvp(_vector, (w,), (V[0],)) for w in W])
    several = ft.vmap(ft.hvp, in_axes=(None, (0, None, None), (0, None, None)))(_regression, (W, X, Y), (V, X, Y))
    _assert_identical(several, [ft.hvp(_regression, (w, X, Y), (v, X, Y)) for w, v in zip(W, V)])
    cotangents = rng.normal(size=(B, 10))
    outputs, pull_back = ft.vmap(functools.partial(ft.vjp, _vector), workers=workers)(W)
    singles = [ft.vjp(_vector, w) for w in W]
    _assert_identical(outputs, [out for out, _ in singles])
    _assert_identical(pull_back(cotangents), [vjp_fn(c) for (_, vjp_fn), c in zip(singles, cotangents)])


@pytest.mark.parametrize("workers", WORKERS)
def test_value_grad_and_hvp_matches_the_loop(tier, workers):
    """Its single call reads the value and gradient the interpreter's HVP sweep leaves, or runs the tape's HVP
    kernel and then its value_and_grad kernel: the batch does the same."""
    f = functools.partial(_regression, X=X, y=Y)
    mapped = ft.vmap(functools.partial(ft.value_grad_and_hvp, f), workers=workers)
    assert mapped.compiled
    _assert_identical(mapped((W,), (V,)), [ft.value_grad_and_hvp(f, (w,), (v,)) for w, v in zip(W, V)])
    several = ft.vmap(ft.value_grad_and_hvp, in_axes=(None, (0, None, None), (0, None, None)), workers=workers)
    singles = [ft.value_grad_and_hvp(_regression, (w, X, Y), (v, X, Y)) for w, v in zip(W, V)]
    _assert_identical(several(_regression, (W, X, Y), (V, X, Y)), singles)


def _with_aux(w):
    return _vector(w), {"norm": np.sum(w**2), "top": np.argmax(w)}


def test_jvp_and_vjp_with_aux_match_the_loop(tier):
    jvps = ft.vmap(functools.partial(ft.jvp, _with_aux, has_aux=True))((W,), (V,))
    _assert_identical(jvps, [ft.jvp(_with_aux, (w,), (v,), has_aux=True) for w, v in zip(W, V)])
    shared = ft.vmap(functools.partial(ft.jvp, has_aux=True), in_axes=(None, 0, None))(_with_aux, (W,), (V[0],))
    _assert_identical(shared, [ft.jvp(_with_aux, (w,), (V[0],), has_aux=True) for w in W])
    outputs, pull_back, aux = ft.vmap(functools.partial(ft.vjp, _with_aux, has_aux=True))(W)
    singles = [ft.vjp(_with_aux, w, has_aux=True) for w in W]
    _assert_identical((outputs, aux), [(out, found) for out, _, found in singles])
    cotangents = rng.normal(size=(B, 10))
    _assert_identical(pull_back(cotangents), [vjp_fn(c) for (_, vjp_fn, _), c in zip(singles, cotangents)])
    assert ft.vmap(functools.partial(ft.jvp, _with_aux, has_aux=True)).compiled
    assert not ft.vmap(functools.partial(ft.hvp, _regression, has_aux=True)).compiled  # (hvp takes no aux)


def test_directions_follow_jax():
    def reference(w):
        return jnp.tanh(w[:10]) * jnp.sum(w)

    _, ours = ft.vmap(ft.jvp, in_axes=(None, 0, 0), out_axes=(0, 1))(_vector, (W,), (V,))
    _, theirs = jax.vmap(lambda w, v: jax.jvp(reference, (w,), (v,)), out_axes=(0, 1))(W, V)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    hvps = ft.vmap(ft.hvp, in_axes=(None, 0, 0))(lambda w: np.sum(_vector(w) ** 2), (W,), (V,))
    expected = jax.vmap(lambda w, v: jax.jvp(jax.grad(lambda u: jnp.sum(reference(u) ** 2)), (w,), (v,))[1])(W, V)
    np.testing.assert_allclose(hvps, expected, rtol=1e-10, atol=1e-12)


def _drivers_run(monkeypatch):
    """The members whose matrices the block drivers returned (fasttape.batch_blocks), call by call."""
    ran, run = [], batch_blocks.run

    def counted(*args, **kwargs):
        result = run(*args, **kwargs)
        ran.append(None if result is None else int(result[0].size))
        return result

    monkeypatch.setattr(batch_blocks, "run", counted)
    return ran


def _curved(w, X, y):
    return np.sum(np.tanh(X @ w) ** 2 * y) * np.sum(w**3)


def _pair(p, x):
    return np.tanh(p["W"] @ x) * np.sum(x), {"norm": np.sum(x**2)}


YS = rng.normal(size=(B, 30))


@pytest.mark.parametrize("workers", WORKERS)
def test_jacobians_and_hessians_match_the_loop(tier, workers, monkeypatch):
    ran = _drivers_run(monkeypatch)
    members = W[:64]
    for jac in (ft.jacfwd(_vector), ft.jacrev(_vector), ft.jacobian(_vector)):
        mapped = ft.vmap(jac, workers=workers)
        assert mapped.strategy == "sweeps" and mapped.compiled
        _assert_identical(mapped(members), _loop(jac, [(w,) for w in members]))
    hess = ft.hessian(_curved)
    batched = ft.vmap(hess, in_axes=(0, None, None), workers=workers)(members, X, Y)
    _assert_identical(batched, _loop(hess, [(w, X, Y) for w in members]))
    several = ft.hessian(_curved, argnums=(0, 2))  # nested blocks, one mapped and one shared argument
    batched = ft.vmap(several, in_axes=(0, None, 0), workers=workers)(members, X, YS[:64])
    _assert_identical(batched, _loop(several, [(w, X, y) for w, y in zip(members, YS)]))
    assert ran == [64] * 5  # every matrix from the block drivers, none from single calls
    if tier == "always":  # jacfwd's blocks on the tape's own JVP kernel, as its single calls run them
        assert any(key[:2] == ("jacfwd", "kernel") for key in batch_blocks._DRIVERS)


def test_matrices_of_containers_aux_and_scalars(tier, monkeypatch):
    ran = _drivers_run(monkeypatch)
    params = {"W": rng.normal(size=(16, 5, 40)), "b": np.zeros(5)}
    jac = ft.jacobian(_pair, argnums=(0, 1), has_aux=True)
    batched = ft.vmap(jac, in_axes=({"W": 0, "b": None}, 0))(params, W[:16])
    _assert_identical(batched, _loop(jac, [({"W": p, "b": params["b"]}, w) for p, w in zip(params["W"], W)]))
    cubic = ft.hessian(lambda t: np.sin(t) * t**3)  # one input: the HVP along 1
    _assert_identical(ft.vmap(cubic)(W[:, 0]), _loop(cubic, [(t,) for t in W[:, 0]]))
    rows = ft.jacrev(lambda t: np.stack([np.sin(t), t**2]) * t)
    _assert_identical(ft.vmap(rows)(W[:, 0]), _loop(rows, [(t,) for t in W[:, 0]]))
    assert ran == [16, B, B]


def test_matrices_on_other_branches_and_errors(tier):
    def branchy(w, X, y):
        return _branchy(w, X, y) * np.sum(w**2)

    hess = ft.hessian(branchy)
    _assert_identical(ft.vmap(hess, in_axes=(0, None, None))(W[:64], X, Y), _loop(hess, [(w, X, Y) for w in W[:64]]))
    assert len(hess.cache) == 2

    def picked(w, i):
        return np.tanh(w[i]) * w[:3]

    index = np.zeros((B, 3), dtype=np.int64)
    index[17, 1] = 99
    with pytest.raises(IndexError, match=r"^batch member 17: index 99 is out of bounds"):
        ft.vmap(ft.jacfwd(picked), in_axes=(0, 0))(W, index)
    with pytest.raises(ft.NonScalarOutputError, match="hessian needs a function with a scalar output"):
        ft.vmap(ft.hessian(_vector))(W)


def test_matrices_follow_jax():
    def reference(w):
        return jnp.tanh(w[:10]) * jnp.sum(w)

    ours = ft.vmap(ft.jacobian(_vector), out_axes=2)(W[:8])
    theirs = jax.vmap(jax.jacrev(reference), out_axes=2)(W[:8])
    assert ours.shape == theirs.shape == (10, 40, 8)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    ours = ft.vmap(ft.hessian(lambda w: np.sum(_vector(w) ** 2)))(W[:8])
    theirs = jax.vmap(jax.hessian(lambda w: jnp.sum(reference(w) ** 2)))(W[:8])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_matrices_before_the_drivers_are_ready_run_the_single_calls(monkeypatch):
    """While the interpreter's sweeps compile, the members' single calls run on a pool of threads."""
    monkeypatch.setattr(batch, "interpreter", lambda name: None)
    with ft.options(tape_kernels="never"):
        jac = ft.jacrev(_vector)
        _assert_identical(ft.vmap(jac, workers=WORKERS[-1])(W[:24]), _loop(jac, [(w,) for w in W[:24]]))


def test_directions_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match="the function \\(argument 0\\) cannot be mapped"):
        ft.vmap(ft.jvp, in_axes=(0, 0, 0))(_vector, (W,), (V,))
    with pytest.raises(ValueError, match="mapped sizes differ"):
        ft.vmap(ft.jvp, in_axes=(None, 0, 0))(_vector, (W,), (V[:5],))
    _, pull_back = ft.vmap(functools.partial(ft.vjp, _vector))(W)
    with pytest.raises(ValueError, match="cotangent leaf 0 must hold one cotangent per member"):
        pull_back(np.ones((3, 10)))
    with pytest.raises(ft.InputSignatureError, match="cotangent of shape \\(10,\\) per member"):
        pull_back(np.ones((B, 4)))


def test_plain_functions_run_as_a_loop():
    mapped = ft.vmap(lambda x, s: np.sin(x) * s, in_axes=(0, None))
    assert not mapped.compiled
    np.testing.assert_array_equal(mapped(W, 2.0), np.sin(W) * 2.0)
    assert ft.vmap(ft.grad(_rosenbrock)).compiled


def test_workers_option_and_errors():
    g = ft.grad(_rosenbrock)
    with ft.options(workers=1):
        _assert_identical(ft.vmap(g)(W), _loop(g, [(w,) for w in W]))
    with pytest.raises(ValueError, match="workers must be a positive int"):
        ft.set_options(workers=0)
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        ft.vmap(g, workers=numba.config.NUMBA_NUM_THREADS + 1)(W)
    with pytest.raises(ValueError, match="workers must be a positive int or -1"):
        ft.vmap(g, workers=0)(W)


@pytest.mark.parametrize(
    "in_axes, args, message",
    [
        ((0, None), (W, X, Y), r"in_axes has 2 entries but the call has 3 positional arguments"),
        ((0, 0, None), (W, X, Y), r"mapped sizes differ: arg0 has 128 members .* but arg1 has 30"),
        ((2, None, None), (W, X, Y), r"in_axes 2 for arg0, but it has 2 dimension\(s\)"),
        ((None, None, None), (W, X, Y), r"no argument is mapped"),
        (({"a": 0}, None, None), (W, X, Y), r"in_axes entry \{'a': 0\} for argument 0 is not a tree prefix"),
        ((0.5, None, None), (W, X, Y), r"in_axes for arg0 must be an int or None"),
    ],
)
def test_bad_axes_name_the_argument(in_axes, args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ft.vmap(ft.grad(_regression), in_axes=in_axes)(*args)


def test_static_arguments_cannot_be_mapped():
    def scaled(w, n):
        return np.sum(w**2) * n

    g = ft.grad(scaled)
    with pytest.raises(ValueError, match=r"in_axes maps arg1.*static value baked into the tape"):
        ft.vmap(g, in_axes=(0, 0))(W, np.arange(B))  # an int array is data; a Python int in a list is not
    with pytest.raises(ValueError, match="out_axes None for result, but it differs between members"):
        ft.vmap(g, in_axes=(0, None), out_axes=None)(W[:, :3], 2)
