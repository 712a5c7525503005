"""Behaviour of the user-facing API (grad, value_and_grad, vjp, trace, Tape, fasttape.numpy), checked against JAX.

Every test function is written once as ``f(xp, ...)`` over an array namespace: ``numpy`` for fasttape (which traces
plain NumPy code) and ``jax.numpy`` for the reference.  Both sides are exact reverse-mode AD, so they are compared at
``rtol=1e-10``; where it is cheap the gradient is also checked against central finite differences of the plain NumPy
function.  JAX runs in float64 (``tests/conftest.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fasttape as ft
import fasttape.numpy as fnp

from .helpers import ATOL, RTOL, assert_close, assert_tree_close, both  # noqa: F401


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar NumPy function of one float array."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def assert_fd_close(g, f, x, rtol=1e-6, atol=1e-7):
    np.testing.assert_allclose(g, fd_grad(f, x), rtol=rtol, atol=atol)


def rng_for(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# argnums and has_aux
# --------------------------------------------------------------------------
def three_args(xp, x, y, z):
    # x (2, 3), y (3,), z (2, 1): distinct shapes, so a gradient in the wrong slot cannot match
    return xp.sum(xp.sin(x) * y) + xp.sum(z**2) * xp.sum(x) + xp.sum(xp.tanh(y * z))


def _three_inputs(seed=0):
    rng = rng_for(seed)
    return rng.normal(size=(2, 3)), rng.normal(size=3), rng.normal(size=(2, 1))


ARGNUMS = [0, 1, 2, -1, -2, -3, (0,), (-1,), (0, 2), (2, 0), (-1, 1), (0, 1, 2)]


def _jax_argnums(argnums, n=3):
    return argnums % n if isinstance(argnums, int) else tuple(a % n for a in argnums)


@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
def test_grad_argnums_matches_jax(argnums):
    f_np, f_jx = both(three_args)
    gfun = ft.grad(f_np, argnums=argnums)
    jfun = jax.grad(f_jx, argnums=_jax_argnums(argnums))
    for seed in (0, 1):  # the tracing call, then a replay on new inputs
        args = _three_inputs(seed)
        got = gfun(*args)
        want = jfun(*args)
        if isinstance(argnums, int):
            assert isinstance(got, np.ndarray) and got.shape == args[argnums].shape
        else:
            assert isinstance(got, tuple) and len(got) == len(argnums)
            for g, a in zip(got, argnums):
                assert np.shape(g) == args[a].shape
        assert_tree_close(got, want)


@pytest.mark.parametrize("argnums", ARGNUMS, ids=str)
def test_value_and_grad_argnums_matches_jax(argnums):
    f_np, f_jx = both(three_args)
    vg = ft.value_and_grad(f_np, argnums=argnums)
    jvg = jax.value_and_grad(f_jx, argnums=_jax_argnums(argnums))
    for seed in (2, 3):
        args = _three_inputs(seed)
        value, grads = vg(*args)
        jvalue, jgrads = jvg(*args)
        assert np.ndim(value) == 0
        assert_close(value, jvalue)
        assert_close(value, f_np(*args))
        assert_tree_close(grads, jgrads)


def test_grad_matches_finite_differences_for_each_argument():
    f_np, _ = both(three_args)
    args = _three_inputs(4)
    grads = ft.grad(f_np, argnums=(0, 1, 2))(*args)
    for i, g in enumerate(grads):

        def partial_f(v, i=i):
            a = list(args)
            a[i] = v
            return f_np(*a)

        assert_fd_close(g, partial_f, args[i])


def with_aux(xp, x, y):
    h = xp.tanh(x @ y)
    loss = xp.sum(h**2) + xp.sum(x) * 0.1
    aux = {
        "h": h,
        "mean": xp.mean(h),
        "x": x,  # an input itself
        "row": x[1],  # a view of an input
        "label": "layer-1",
        "count": 3,
        "nothing": None,
        "const": np.arange(3.0),
        "pair": (loss, 2.5),
    }
    return loss, aux


def _check_aux(aux, x, y):
    _, want = with_aux(np, x, y)
    assert set(aux) == set(want)
    for key in ("h", "mean", "x", "row"):
        assert_close(aux[key], want[key])
    assert aux["label"] == "layer-1"
    assert aux["count"] == 3 and type(aux["count"]) is int
    assert aux["nothing"] is None
    np.testing.assert_array_equal(aux["const"], want["const"])
    assert isinstance(aux["pair"], tuple) and len(aux["pair"]) == 2
    assert_close(aux["pair"][0], want["pair"][0])
    assert aux["pair"][1] == 2.5


def test_has_aux_value_and_grad_and_grad():
    f_np, f_jx = both(with_aux)
    vg = ft.value_and_grad(f_np, argnums=(0, 1), has_aux=True)
    g = ft.grad(f_np, argnums=0, has_aux=True)
    jvg = jax.value_and_grad(lambda x, y: f_jx(x, y)[0], argnums=(0, 1))
    rng = rng_for(5)
    for _ in range(3):  # tracing call, then replays: aux must follow the new inputs
        x, y = rng.normal(size=(3, 4)), rng.normal(size=4)
        (value, aux), grads = vg(x, y)
        jvalue, jgrads = jvg(x, y)
        assert_close(value, jvalue)
        assert_tree_close(grads, jgrads)
        _check_aux(aux, x, y)
        gx, aux2 = g(x, y)
        assert_close(gx, jgrads[0])
        _check_aux(aux2, x, y)


def test_has_aux_keeps_boolean_dtype():
    """Aux is returned as the function computed it: a traced comparison stays a boolean array."""

    def fn(x):
        return np.sum(x**2), {"mask": x > 0, "any": np.any(x > 0.5)}

    x = np.array([[-1.0, 0.25, 2.0], [0.5, -0.5, 3.0]])
    _, want = fn(x)
    (_, aux), _ = ft.value_and_grad(fn, has_aux=True)(x)
    for key in ("mask", "any"):
        np.testing.assert_array_equal(aux[key], want[key])
        assert np.asarray(aux[key]).dtype == np.asarray(want[key]).dtype == np.dtype(bool), key
    assert np.sum(x[aux["mask"]]) == np.sum(x[want["mask"]])  # usable as a mask, as NumPy's result is


def test_has_aux_results_are_not_aliased_to_the_tape_buffer():
    f_np, f_jx = both(with_aux)
    vg = ft.value_and_grad(f_np, has_aux=True)
    rng = rng_for(6)
    x1, y1 = rng.normal(size=(3, 4)), rng.normal(size=4)
    x2, y2 = rng.normal(size=(3, 4)), rng.normal(size=4)
    (v1, aux1), g1 = vg(x1, y1)
    saved = (float(v1), aux1["h"].copy(), aux1["x"].copy(), g1.copy())
    vg(x2, y2)  # replays into the same workspace
    assert float(v1) == saved[0]
    np.testing.assert_array_equal(aux1["h"], saved[1])
    np.testing.assert_array_equal(aux1["x"], saved[2])
    np.testing.assert_array_equal(g1, saved[3])
    g1[...] = 0.0  # mutating a returned gradient must not leak into the next call
    _, g3 = vg(x1, y1)
    assert_close(g3, jax.grad(lambda x: f_jx(x, y1)[0])(x1))


# --------------------------------------------------------------------------
# argument kinds and containers
# --------------------------------------------------------------------------
def scalar_fn(xp, x):
    return xp.sin(x) * x**3 + xp.exp(-x)


@pytest.mark.parametrize("make", [float, np.float64, np.array], ids=["python-float", "np.float64", "0d-array"])
def test_scalar_arguments(make):
    f_np, f_jx = both(scalar_fn)
    vg = ft.value_and_grad(f_np)
    for v in (0.7, -1.3):
        x = make(v)
        value, g = vg(x)
        jvalue, jg = jax.value_and_grad(f_jx)(v)
        assert np.ndim(g) == 0 and np.ndim(value) == 0
        assert_close(value, jvalue)
        assert_close(g, jg)
        assert_fd_close(g, f_np, v)


def structured(xp, params, data):
    w = params["w"]
    b, c = params["bc"]
    h = xp.tanh(data @ w + b)
    for layer in params["layers"]:
        h = xp.sin(h * layer["scale"] + layer["shift"])
    return xp.sum(h**2) * c + xp.sum(data**2) * params["layers"][0]["scale"]


def _params(seed):
    rng = rng_for(seed)
    params = {
        "w": rng.normal(size=(3, 4)),
        "bc": (rng.normal(size=4), float(rng.uniform(0.5, 1.5))),
        "layers": [
            {"scale": np.array(rng.uniform(0.5, 1.5)), "shift": rng.normal(size=4)},
            {"scale": float(rng.uniform(0.5, 1.5)), "shift": rng.normal(size=(1, 4))},
        ],
    }
    return params, rng.normal(size=(5, 3))


def test_nested_container_arguments_gradients_keep_structure():
    f_np, f_jx = both(structured)
    g0 = ft.grad(f_np)
    g01 = ft.value_and_grad(f_np, argnums=(0, 1))
    for seed in (7, 8):
        params, data = _params(seed)
        got = g0(params, data)
        assert isinstance(got, dict) and isinstance(got["bc"], tuple) and isinstance(got["layers"], list)
        assert_tree_close(got, jax.grad(f_jx)(params, data))
        value, grads = g01(params, data)
        jvalue, jgrads = jax.value_and_grad(f_jx, argnums=(0, 1))(params, data)
        assert_close(value, jvalue)
        assert_tree_close(grads, jgrads)
    assert len(g0.cache) == 1  # the structure and shapes did not change: one tape


def test_nested_container_gradient_matches_finite_differences():
    f_np, _ = both(structured)
    params, data = _params(9)
    grads = ft.grad(f_np)(params, data)

    def f_of_w(w):
        return f_np({**params, "w": w}, data)

    def f_of_shift(s):
        layers = [params["layers"][0], {**params["layers"][1], "shift": s}]
        return f_np({**params, "layers": layers}, data)

    assert_fd_close(grads["w"], f_of_w, params["w"])
    assert_fd_close(grads["layers"][1]["shift"], f_of_shift, params["layers"][1]["shift"])


def list_and_tuple_args(xp, xs, pair):
    a, (b, c) = pair
    total = 0.0
    for i, x in enumerate(xs):
        total = total + xp.sum(xp.cos(x) * (i + 1))
    return total * a + xp.sum(b * c)


def test_list_and_tuple_arguments():
    f_np, f_jx = both(list_and_tuple_args)
    rng = rng_for(10)
    xs = [rng.normal(size=2), rng.normal(size=(2, 2)), np.array(0.3)]
    pair = (0.5, (rng.normal(size=3), rng.normal(size=3)))
    got = ft.grad(f_np, argnums=(0, 1))(xs, pair)
    assert isinstance(got[0], list) and isinstance(got[1], tuple) and isinstance(got[1][1], tuple)
    assert_tree_close(got, jax.grad(f_jx, argnums=(0, 1))(xs, pair))


def test_non_differentiated_float_arguments_are_dynamic():
    """A float array outside argnums is an input of the tape: new values replay without re-tracing."""
    f_np, f_jx = both(three_args)
    gfun = ft.grad(f_np, argnums=1)
    for seed in range(3):
        args = _three_inputs(seed)
        assert_close(gfun(*args), jax.grad(f_jx, argnums=1)(*args))
    assert len(gfun.cache) == 1


# --------------------------------------------------------------------------
# static (non-float) arguments
# --------------------------------------------------------------------------
def static_fn(xp, x, n, mode, scale, idx):
    y = x
    for _ in range(n):
        y = xp.sin(y) if mode == "sin" else xp.cos(y) * 0.9
    if scale is not None:
        y = y * scale
    return xp.sum(y[idx] ** 2)


def test_static_arguments_retrace_and_stay_correct():
    f_np, f_jx = both(static_fn)
    gfun = ft.value_and_grad(f_np)
    x = rng_for(11).normal(size=5)
    idx_a = np.array([0, 2, 2, 4])
    idx_b = np.array([1, 1, 3, 0])  # same shape and dtype, other values
    calls = [  # (arguments, tapes recorded so far)
        ((1, "sin", None, idx_a), 1),
        ((3, "sin", None, idx_a), 2),  # another loop count
        ((3, "cos", None, idx_a), 3),  # another string
        ((3, "cos", 2, idx_a), 4),  # None -> an int
        ((3, "cos", 2, idx_b), 4),  # another integer index array: data of the tape, no new one
        ((3, "cos", 3, idx_b), 5),
    ]
    for static, recorded in calls:
        value, g = gfun(x, *static)
        jvalue, jg = jax.value_and_grad(f_jx)(x, *static)
        assert_close(value, jvalue)
        assert_close(g, jg)
        assert len(gfun.cache) == recorded
    calls = [static for static, _ in calls]
    for k, static in enumerate(calls):  # every combination again: all cached, still right
        x2 = x + 0.1 * k
        value, g = gfun(x2, *static)
        jvalue, jg = jax.value_and_grad(f_jx)(x2, *static)
        assert_close(value, jvalue)
        assert_close(g, jg)
    assert len(gfun.cache) == 5  # the two index arrays share a tape
    assert_fd_close(gfun(x, 2, "cos", 2, idx_b)[1], lambda v: f_np(v, 2, "cos", 2, idx_b), x)


def static_in_container(xp, x, opts):
    y = x * opts["gain"] if opts["gain"] is not None else x
    for _ in range(opts["steps"]):
        y = xp.tanh(y)
    return xp.sum(y[opts["take"]])


def test_static_leaves_inside_containers():
    f_np, f_jx = both(static_in_container)
    gfun = ft.grad(f_np)
    x = rng_for(12).normal(size=6)
    option_sets = [
        {"gain": None, "steps": 1, "take": np.array([0, 5])},
        {"gain": 2, "steps": 1, "take": np.array([0, 5])},
        {"gain": 2, "steps": 2, "take": np.array([0, 5])},
        {"gain": 2, "steps": 2, "take": np.array([[1, 1], [2, 3]])},
    ]
    for k, opts in enumerate(option_sets, start=1):
        assert_close(gfun(x, opts), jax.grad(f_jx)(x, opts))
        assert len(gfun.cache) == k
    assert_close(gfun(x * 2, option_sets[1]), jax.grad(f_jx)(x * 2, option_sets[1]))
    assert len(gfun.cache) == len(option_sets)


# --------------------------------------------------------------------------
# vjp
# --------------------------------------------------------------------------
W34 = rng_for(13).normal(size=(3, 4))


def vec_out(xp, x):
    return xp.tanh(W34 @ x) * x[:3]


def mat_out(xp, a, b):
    return xp.exp(a @ b) * xp.sum(a, axis=1, keepdims=True)


def tuple_out(xp, x, y):
    prod = x * y
    return xp.sum(prod), (prod, xp.exp(x[::-1]), x[:, None] * y[None, :])


def identity_out(xp, x):
    return x, 2.0 * x


def repeated_out(xp, x):
    y = xp.sin(x)
    return y, y


def _cotangent_like(out, rng):
    return jax.tree_util.tree_map(lambda o: rng.normal(size=np.shape(o)), out)


@pytest.mark.parametrize(
    "fn, shapes",
    [
        (vec_out, [(4,)]),
        (mat_out, [(3, 2), (2, 5)]),
        (tuple_out, [(4,), (4,)]),
        (identity_out, [(3,)]),
        (repeated_out, [(2, 3)]),
    ],
    ids=["vector", "matrix", "tuple", "identity", "repeated"],
)
def test_vjp_matches_jax(fn, shapes):
    f_np, f_jx = both(fn)
    rng = rng_for(14)
    for _ in range(2):  # tracing, then a cached tape on new primals
        primals = [rng.normal(size=s) for s in shapes]
        out, vjp_fn = ft.vjp(f_np, *primals)
        jout, jvjp_fn = jax.vjp(f_jx, *primals)
        assert_tree_close(out, jout)
        assert_tree_close(out, f_np(*primals))
        for _ in range(3):  # one forward sweep, many pullbacks
            ct = _cotangent_like(jout, rng)
            got = vjp_fn(ct)
            assert isinstance(got, tuple) and len(got) == len(primals)
            assert_tree_close(got, jvjp_fn(ct))


def test_vjp_functions_keep_their_own_primals():
    f_np, f_jx = both(mat_out)
    rng = rng_for(15)
    p1 = [rng.normal(size=(3, 2)), rng.normal(size=(2, 5))]
    p2 = [rng.normal(size=(3, 2)), rng.normal(size=(2, 5))]
    _, pull1 = ft.vjp(f_np, *p1)
    _, pull2 = ft.vjp(f_np, *p2)
    _, jpull1 = jax.vjp(f_jx, *p1)
    _, jpull2 = jax.vjp(f_jx, *p2)
    for _ in range(2):
        ct = rng.normal(size=(3, 5))
        assert_tree_close(pull1(ct), jpull1(ct))
        assert_tree_close(pull2(ct), jpull2(ct))


def test_vjp_with_container_primal_and_aux():
    def fn(xp, params, x):
        h = xp.tanh(params["w"] @ x + params["b"])
        return h * 2.0, {"h": h, "tag": "ok"}

    f_np, f_jx = both(fn)
    rng = rng_for(16)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}
    x = rng.normal(size=4)
    out, vjp_fn, aux = ft.vjp(f_np, params, x, has_aux=True)
    jout, jvjp_fn, jaux = jax.vjp(lambda p, v: (f_jx(p, v)[0], f_jx(p, v)[0] / 2.0), params, x, has_aux=True)
    assert_close(out, jout)
    assert_close(aux["h"], jaux)
    assert aux["tag"] == "ok"
    for _ in range(2):
        ct = rng.normal(size=3)
        got = vjp_fn(ct)
        assert isinstance(got[0], dict)
        assert_tree_close(got, jvjp_fn(ct))


# --------------------------------------------------------------------------
# ft.trace and the Tape object
# --------------------------------------------------------------------------
def traced_fn(xp, x, w):
    h = xp.tanh(x * w)
    return xp.sum(h * x) + xp.sum(xp.exp(-(x**2)))


def test_trace_returns_a_working_tape():
    f_np, f_jx = both(traced_fn)
    rng = rng_for(17)
    x, w = rng.normal(size=6), rng.normal(size=6)
    tape = ft.trace(f_np, x, w, argnums=(0, 1))
    assert isinstance(tape, ft.Tape)
    for _ in range(2):  # the recording inputs, then new ones of the same shape
        assert_close(tape(x, w), f_np(x, w))
        value, grads = tape.value_and_grad(x, w)
        jvalue, jgrads = jax.value_and_grad(f_jx, argnums=(0, 1))(x, w)
        assert_close(value, jvalue)
        assert_tree_close(grads, jgrads)
        assert_tree_close(tape.grad(x, w), jgrads)
        out, pull = tape.vjp(x, w)
        assert_close(out, jvalue)
        assert_tree_close(pull(2.0), tuple(2.0 * np.asarray(g) for g in jgrads))
        x, w = rng.normal(size=6), rng.normal(size=6)


def test_trace_default_argnums_and_has_aux():
    f_np, f_jx = both(with_aux)
    rng = rng_for(18)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    tape = ft.trace(f_np, x, y, has_aux=True)
    (value, aux), g = tape.value_and_grad(x, y)
    assert_close(value, f_np(x, y)[0])
    _check_aux(aux, x, y)
    assert_close(g, jax.grad(lambda a: f_jx(a, y)[0])(x))
    g2, aux2 = tape.grad(x, y)
    np.testing.assert_array_equal(g2, g)
    _check_aux(aux2, x, y)


def test_tape_listing_and_stats():
    f_np, _ = both(traced_fn)
    x, w = rng_for(19).normal(size=(2, 6))
    tape = ft.trace(f_np, x, w)
    text = str(tape)
    assert "= multiply %" in text
    assert "= tanh %" in text
    assert "f64[6]" in text and "f64[]" in text
    assert "input arg0" in text and "input arg1" in text
    stats = tape.stats()
    n_rows = sum(
        line.split("= ", 1)[1].split()[0] not in ("input", "const", "view") for line in text.splitlines()[1:-1]
    )
    assert stats["instructions"] == n_rows > 0
    assert sum(stats["by_kind"].values()) == stats["instructions"]
    assert stats["by_kind"]["unary"] >= 2  # tanh, exp
    assert stats["by_kind"]["reduction"] == 2
    assert stats["by_primitive"]["tanh"] == 1 and stats["by_primitive"]["exp"] == 1
    assert stats["inputs"] == 2
    assert stats["guards"] == 0
    assert stats["bytes"]["total"] > 0
    assert stats["bytes"]["total"] == sum(v for k, v in stats["bytes"].items() if k != "total")


def test_tape_listing_shows_guards():
    tape = ft.trace(functools.partial(branchy, np), np.ones(3))
    assert tape.stats()["guards"] == 1
    assert "guard" in str(tape)


# --------------------------------------------------------------------------
# replay is bitwise identical
# --------------------------------------------------------------------------
def replay_fn(xp, x, m):
    h = xp.tanh(m @ x)
    return xp.sum(h * h) + xp.max(xp.cos(x)) + xp.sum(xp.exp(x[::3]) * xp.mean(x))


def test_replay_is_bitwise_identical_to_the_tracing_call():
    f_np, f_jx = both(replay_fn)
    rng = rng_for(20)
    x, m = rng.normal(size=40), rng.normal(size=(8, 40))
    vg = ft.value_and_grad(f_np, argnums=(0, 1))
    first_value, first_grads = vg(x, m)  # records the tape
    for _ in range(3):
        value, grads = vg(x, m)
        assert np.array_equal(value, first_value)
        assert np.array_equal(grads[0], first_grads[0]) and np.array_equal(grads[1], first_grads[1])
    gfun = ft.grad(f_np)
    g_first = gfun(x, m)
    for _ in range(2):
        assert np.array_equal(gfun(x, m), g_first)
    assert_close(g_first, first_grads[0])
    for _ in range(2):  # new inputs after that still match JAX
        x2, m2 = rng.normal(size=40), rng.normal(size=(8, 40))
        value, grads = vg(x2, m2)
        jvalue, jgrads = jax.value_and_grad(f_jx, argnums=(0, 1))(x2, m2)
        assert_close(value, jvalue)
        assert_tree_close(grads, jgrads)
    assert np.array_equal(vg(x, m)[1][0], first_grads[0])


def test_vjp_replay_is_bitwise_identical():
    f_np, _ = both(vec_out)
    x = rng_for(21).normal(size=4)
    ct = np.array([0.5, -1.0, 2.0])
    out1, pull1 = ft.vjp(f_np, x)
    g1 = pull1(ct)
    out2, pull2 = ft.vjp(f_np, x)
    assert np.array_equal(out1, out2)
    assert np.array_equal(pull2(ct)[0], g1[0])
    assert np.array_equal(pull1(ct)[0], g1[0])


# --------------------------------------------------------------------------
# Python control flow on traced values: guards
# --------------------------------------------------------------------------
def branch_pos(xp, x):
    return xp.sum(xp.sin(x) * x)


def branch_neg(xp, x):
    return xp.sum(xp.exp(x)) * 2.0


def branchy(xp, x):
    if xp.sum(x) > 0:
        return branch_pos(xp, x)
    else:
        return branch_neg(xp, x)


def test_if_on_traced_value_retraces_per_branch():
    gfun = ft.value_and_grad(functools.partial(branchy, np))
    pos = np.array([0.5, 1.0, -0.2])
    neg = np.array([-0.5, -1.0, 0.2])
    for k, x in enumerate([pos, neg, pos, neg, pos * 2.0]):
        value, g = gfun(x)
        taken = branch_pos if np.sum(x) > 0 else branch_neg  # JAX on the branch actually taken
        jvalue, jg = jax.value_and_grad(functools.partial(taken, jnp))(x)
        assert_close(value, jvalue)
        assert_close(g, jg)
        assert len(gfun.cache) == min(k + 1, 2)
    assert_fd_close(gfun(neg)[1], functools.partial(branchy, np), neg)


def halving(xp, x):
    while xp.sum(x * x) > 1.0:
        x = x * 0.5
    return xp.sum(xp.sin(x) + x**3)


def halved_k(xp, x, k):
    for _ in range(k):
        x = x * 0.5
    return xp.sum(xp.sin(x) + x**3)


def _halvings(x):
    k = 0
    while np.sum(x * x) > 1.0:
        x = x * 0.5
        k += 1
    return k


def test_while_on_traced_value_retraces_per_trip_count():
    gfun = ft.grad(functools.partial(halving, np))
    inputs = [np.array([0.3, 0.4]), np.array([1.0, 2.0]), np.array([4.0, -3.0]), np.array([0.1, 0.2])]
    ks = [_halvings(x) for x in inputs]
    assert len(set(ks)) == 3 and ks[0] == ks[3]  # three distinct trip counts, then the first one again
    for x, k in zip(inputs, ks):
        assert_close(gfun(x), jax.grad(functools.partial(halved_k, jnp), argnums=0)(x, k))
    assert len(gfun.cache) == 3


def test_raw_tape_refuses_the_other_branch():
    pos = np.array([0.5, 1.0, -0.2])
    neg = -pos
    tape = ft.trace(functools.partial(branchy, np), pos)
    assert_close(tape(pos), branch_pos(np, pos))
    for call in (tape, tape.value_and_grad, tape.grad, tape.vjp):
        with pytest.raises(ft.BranchChangedError):
            call(neg)
    with pytest.raises(ValueError):  # BranchChangedError is a ValueError
        tape(neg)
    assert issubclass(ft.BranchChangedError, ValueError)
    assert_close(tape.grad(pos * 3.0), jax.grad(functools.partial(branch_pos, jnp))(pos * 3.0))

    wtape = ft.trace(functools.partial(halving, np), np.array([1.0, 2.0]))
    with pytest.raises(ft.BranchChangedError):
        wtape.grad(np.array([4.0, -3.0]))  # one more trip through the loop


def test_vjp_follows_branches():
    def fn(xp, x):
        return xp.sin(x) if xp.max(x) > 1.0 else xp.cos(x) * x

    f_np, f_jx = both(fn)
    for x in (np.array([0.5, 2.0]), np.array([0.5, 0.7]), np.array([3.0, 0.0])):
        out, pull = ft.vjp(f_np, x)
        jout, jpull = jax.vjp(f_jx, x)
        assert_close(out, jout)
        ct = np.array([1.5, -0.5])
        assert_tree_close(pull(ct), jpull(ct))


# --------------------------------------------------------------------------
# broadcasting in gradients
# --------------------------------------------------------------------------
def bcast_mul(xp, a, b):
    return xp.sum(xp.sin(a * b) * (a + b))


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3, 1), (1, 4)), ((4,), (2, 3, 4)), ((), (2, 3)), ((2, 3), ()), ((1,), (3, 1)), ((2, 1, 3), (4, 1))],
    ids=str,
)
def test_broadcasting_gradients(shape_a, shape_b):
    f_np, f_jx = both(bcast_mul)
    rng = rng_for(22)
    a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
    value, (ga, gb) = ft.value_and_grad(f_np, argnums=(0, 1))(a, b)
    jvalue, (jga, jgb) = jax.value_and_grad(f_jx, argnums=(0, 1))(a, b)
    assert_close(value, jvalue)
    assert_close(ga, jga)
    assert_close(gb, jgb)
    assert_fd_close(ga, lambda v: f_np(v, b), a)


def test_python_scalar_times_array():
    def fn(xp, s, x):
        return xp.sum(xp.tanh(s * x) * s)

    f_np, f_jx = both(fn)
    x = rng_for(23).normal(size=(2, 3))
    got = ft.grad(f_np, argnums=(0, 1))(0.7, x)
    assert np.ndim(got[0]) == 0
    assert_tree_close(got, jax.grad(f_jx, argnums=(0, 1))(0.7, x))


BINARY_OPS = {
    "add": lambda xp, a, b: a + b,
    "multiply": lambda xp, a, b: a * b,
    "subtract": lambda xp, a, b: a - b,
    "divide": lambda xp, a, b: a / b,
    "maximum": lambda xp, a, b: xp.maximum(a, b),
    "where": lambda xp, a, b: xp.where(a > b, xp.sin(a), b * b),
}


def weighted_binop(name, xp, a, b, w):
    return xp.sum(BINARY_OPS[name](xp, a, b) * w)


BINOP_VG = {name: ft.value_and_grad(functools.partial(weighted_binop, name, np), argnums=(0, 1)) for name in BINARY_OPS}
BINOP_JAX_VG = {
    name: jax.value_and_grad(functools.partial(weighted_binop, name, jnp), argnums=(0, 1)) for name in BINARY_OPS
}


@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
    name=st.sampled_from(sorted(BINARY_OPS)),
    seed=st.integers(0, 2**32 - 1),
)
def test_broadcasting_binary_ops_property(shapes, name, seed):
    (shape_a, shape_b), out_shape = shapes.input_shapes, shapes.result_shape
    rng = rng_for(seed)
    a = rng.normal(size=shape_a)
    b = rng.normal(size=shape_b)
    if name == "divide":  # keep the denominator away from zero
        b = np.sign(b + (b == 0)) * rng.uniform(0.5, 2.0, size=shape_b)
    w = rng.normal(size=out_shape)
    value, (ga, gb) = BINOP_VG[name](a, b, w)
    jvalue, (jga, jgb) = BINOP_JAX_VG[name](a, b, w)
    assert_close(value, jvalue)
    assert_close(ga, jga)  # the shapes must match the operands, not the broadcast result
    assert_close(gb, jgb)


# --------------------------------------------------------------------------
# tracer methods, properties, indexing and reflected operators
# --------------------------------------------------------------------------
W_CONST = rng_for(24).normal(size=(3, 4))
MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])
IDX = np.array([2, 0, 2, 1])


def _row_weights(xp, x):
    total = 0.0
    for i, row in enumerate(x):  # iteration over rows
        total = total + row.max() * (i + 1)
    return total


METHOD_CASES = {
    "sum-axis-keepdims": (lambda xp, x: (x.sum(axis=1, keepdims=True) * x).sum(), (3, 4)),
    "sum-axis-tuple": (lambda xp, x: (xp.sin(x).sum(axis=(0, 2)) ** 2).sum(), (2, 3, 4)),
    "sum-negative-axis": (lambda xp, x: (x.sum(axis=-1) ** 3).sum(), (3, 4)),
    "mean": (lambda xp, x: x.mean() * x.mean(axis=0).sum() + (x.mean(axis=1, keepdims=True) * x).sum(), (3, 4)),
    "max": (lambda xp, x: x.max() + x.max(axis=0).sum() + (x.max(axis=1, keepdims=True) ** 2).sum(), (3, 4)),
    "max-min-3d": (lambda xp, x: (x.max(axis=(0, 2)) ** 2).sum() + x.min(axis=1, keepdims=True).sum(), (2, 3, 4)),
    "min": (lambda xp, x: x.min() * 2.0 + (x.min(axis=1) ** 2).sum(), (3, 4)),
    "max-ties": (lambda xp, x: (x * x).max() + xp.abs(x).min(axis=1).sum(), "ties"),
    "prod": (lambda xp, x: x.prod() + x.prod(axis=1).sum() + x.prod(axis=0, keepdims=True).sum(), (3, 4)),
    "prod-with-zero": (lambda xp, x: x.prod(axis=1).sum(), "zero"),
    "reshape": (lambda xp, x: (x.reshape(4, 3) @ xp.arange(3.0)).sum() + (x.reshape((2, -1)) ** 2).sum(), (3, 4)),
    "T": (lambda xp, x: (x.T * xp.arange(3.0)).sum() + (x @ x.T).sum(), (3, 4)),
    "ravel": (lambda xp, x: (x.ravel() * xp.arange(12.0)).sum(), (3, 4)),
    "dot": (lambda xp, x: x.dot(W_CONST.T).sum() + x[0].dot(x[1]) + (x.dot(x.T) ** 2).sum(), (3, 4)),
    "shape-ndim-size": (
        lambda xp, x: (x.reshape(x.shape[1], x.shape[0]).sum(axis=x.ndim - 1) ** 2).sum() / x.size,
        (3, 4),
    ),
    "dtype": (
        lambda xp, x: xp.sum(xp.zeros(x.shape, dtype=x.dtype) + x**2) * (2.0 if x.dtype == np.float64 else 3.0),
        (3, 4),
    ),
    "len": (lambda xp, x: sum(x[i].sum() * (i + 1.0) for i in range(len(x))), (3, 4)),
    "iterate-rows": (_row_weights, (3, 4)),
    "slice-steps": (lambda xp, x: (x[:6:2] * x[1::2]).sum() + (x[::-1] * xp.arange(7.0)).sum(), (7,)),
    "negative-indices": (lambda xp, x: x[-1] * x[-3] + (x[-4:-1] ** 2).sum() + x[1:-1:2].sum(), (7,)),
    "2d-slices": (lambda xp, x: (x[1:, ::-2] ** 2).sum() + x[:, -1].sum() * x[-1, 0] + x[..., 1].sum(), (3, 4)),
    "newaxis": (lambda xp, x: (x[:, None] * x[None, :]).sum() + x[None, 1:][0].sum(), (4,)),
    "integer-array": (lambda xp, x: (x[IDX] ** 2).sum() + (x[:, IDX[:2]] * 2.0).sum(), (3, 4)),
    "integer-array-2d": (lambda xp, x: (x[np.array([0, 2, 2]), np.array([3, 1, 1])] ** 3).sum(), (3, 4)),
    "integer-array-negative": (lambda xp, x: (x[np.array([-1, 0, -1])] * xp.arange(4.0)).sum() ** 2, (3, 4)),
    "scalar-element": (lambda xp, x: x[1, 2] * x[-1, -1] + x[0][3] ** 2, (3, 4)),
    "boolean-mask": (lambda xp, x: (x[MASK] ** 2).sum() + x[MASK[:, 0]].sum(), (3, 4)),
    "rsub": (lambda xp, x: ((2.0 - x) ** 2).sum(), (3, 4)),
    "rtruediv": (lambda xp, x: (1.0 / x).sum(), "positive"),
    "rpow": (lambda xp, x: (2.0**x).sum(), (3, 4)),
    "pow": (lambda xp, x: (x**2).sum() + (x**3.0).sum() + (x**0.5).sum(), "positive"),
    "rmatmul": (lambda xp, x: (xp.tanh(W_CONST @ x[0]) ** 2).sum() + (W_CONST.T @ x).sum(), (3, 4)),
    "neg-abs": (lambda xp, x: (-x).sum() * abs(x).sum() + (+x).sum(), (3, 4)),
    "radd-rmul": (lambda xp, x: (3.0 + x * 0.5 + 2.0 * x).prod(), (2, 2)),
}


def _method_input(spec, rng):
    if spec == "ties":  # repeated maxima: the adjoint is shared among them, as JAX
        return np.array([[1.0, -3.0, 3.0, 2.0], [0.5, -0.5, 0.5, 2.0], [1.0, 1.0, -1.0, 0.25]])
    if spec == "zero":  # exact zeros in a product: prefix/suffix products, not division
        return np.array([[1.5, 0.0, 2.0, -1.0], [0.0, 0.0, 3.0, 0.5], [2.0, -0.5, 1.5, 0.75]])
    if spec == "positive":
        return rng.uniform(0.5, 2.0, size=(3, 4))
    return rng.normal(size=spec)


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_tracer_methods_and_indexing(name):
    fn, spec = METHOD_CASES[name]
    f_np, f_jx = both(fn)
    rng = rng_for(25)
    vg = ft.value_and_grad(f_np)
    for _ in range(2 if isinstance(spec, tuple) else 1):
        x = _method_input(spec, rng)
        value, g = vg(x)
        jvalue, jg = jax.value_and_grad(f_jx)(x)
        assert_close(value, jvalue)
        assert_close(value, f_np(x))
        assert_close(g, jg)
    if spec not in ("ties", "zero"):  # finite differences only where the function is smooth
        assert_fd_close(g, f_np, x, rtol=1e-5, atol=1e-6)


def test_tracer_properties_inside_trace():
    seen = {}

    def fn(x):
        seen.update(shape=x.shape, ndim=x.ndim, size=x.size, dtype=x.dtype, len=len(x))
        seen["cmp_dtype"] = (x > 0).dtype
        return np.sum(x)

    x = np.ones((3, 4))
    ft.grad(fn)(x)
    assert seen == {
        "shape": (3, 4),
        "ndim": 2,
        "size": 12,
        "dtype": np.dtype(np.float64),
        "len": 3,
        "cmp_dtype": np.dtype(bool),
    }


# --------------------------------------------------------------------------
# the fasttape.numpy namespace
# --------------------------------------------------------------------------
NN_CASES = {
    "sigmoid": (fnp.sigmoid, jax.nn.sigmoid),
    "softplus": (fnp.softplus, jax.nn.softplus),
    "relu": (fnp.relu, jax.nn.relu),
    "logsumexp": (fnp.logsumexp, jax.scipy.special.logsumexp),
    "logsumexp-axis0": (
        lambda x: fnp.logsumexp(x, axis=0),
        lambda x: jax.scipy.special.logsumexp(x, axis=0),
    ),
    "logsumexp-keepdims": (
        lambda x: fnp.logsumexp(x, axis=1, keepdims=True) * x,
        lambda x: jax.scipy.special.logsumexp(x, axis=1, keepdims=True) * x,
    ),
    "softmax": (fnp.softmax, jax.nn.softmax),
    "softmax-axis0": (lambda x: fnp.softmax(x, axis=0), lambda x: jax.nn.softmax(x, axis=0)),
    "log_softmax": (fnp.log_softmax, jax.nn.log_softmax),
    "log_softmax-axis0": (lambda x: fnp.log_softmax(x, axis=0), lambda x: jax.nn.log_softmax(x, axis=0)),
}


@pytest.mark.parametrize("name", sorted(NN_CASES))
def test_fnp_nn_functions_match_jax_nn(name):
    f, jf = NN_CASES[name]
    rng = rng_for(26)
    x = rng.normal(size=(3, 5)) * 3.0
    x[0, 0], x[1, 1] = 30.0, -25.0  # large magnitudes: the stable forms must not overflow
    w = rng.normal(size=np.shape(jf(x)))
    assert_close(f(x), jf(x))  # on plain arrays: NumPy values
    value, g = ft.value_and_grad(lambda v: np.sum(f(v) * w))(x)
    jvalue, jg = jax.value_and_grad(lambda v: jnp.sum(jf(v) * w))(x)
    assert_close(value, jvalue)
    assert_close(g, jg)
    out, pull = ft.vjp(f, x)
    jout, jpull = jax.vjp(jf, x)
    assert_close(out, jout)
    ct = rng.normal(size=np.shape(jout))
    assert_close(pull(ct)[0], jpull(ct)[0])


def test_logsumexp_stable_for_huge_inputs():
    x = np.array([[1000.0, 999.0, -1000.0], [-1e4, -1e4 + 1.0, -1e4 - 2.0]])
    value, g = ft.value_and_grad(lambda v: np.sum(fnp.logsumexp(v, axis=1) * np.array([1.0, -2.0])))(x)
    jvalue, jg = jax.value_and_grad(lambda v: jnp.sum(jax.scipy.special.logsumexp(v, axis=1) * np.array([1.0, -2.0])))(
        x
    )
    assert np.isfinite(value) and np.all(np.isfinite(g))
    assert_close(value, jvalue)
    assert_close(g, jg)


def test_sigmoid_relative_accuracy_in_the_left_tail():
    """jax.nn.sigmoid is accurate to a few ulps everywhere; log(sigmoid(x)) must stay finite."""
    x = np.array([-40.0, -30.0, -20.0, -10.0, -1.0, 0.0, 1.0, 10.0, 40.0])
    assert_close(fnp.sigmoid(x), jax.nn.sigmoid(x), atol=0.0)
    value, g = ft.value_and_grad(lambda v: np.sum(np.log(fnp.sigmoid(v))))(x)
    jvalue, jg = jax.value_and_grad(lambda v: jnp.sum(jnp.log(jax.nn.sigmoid(v))))(x)
    assert_close(value, jvalue)
    assert_close(g, jg)


def test_relu_derivative_at_zero_and_nan():
    x = np.array([-1.5, 0.0, -0.0, 2.0, np.nan, 0.5, -np.inf, np.inf])
    value, g = ft.value_and_grad(lambda v: np.sum(fnp.relu(v) * np.arange(1.0, 9.0)))(x)
    jvalue, jg = jax.value_and_grad(lambda v: jnp.sum(jax.nn.relu(v) * np.arange(1.0, 9.0)))(x)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(jvalue))
    np.testing.assert_array_equal(fnp.relu(x), jax.nn.relu(x))  # NaN positions included
    out, pull = ft.vjp(fnp.relu, x)
    np.testing.assert_array_equal(out, jax.nn.relu(x))
    np.testing.assert_array_equal(g, jg)  # 0 at exactly 0 (JAX's convention); NaN pattern as JAX
    assert g[1] == 0.0 and g[2] == 0.0
    np.testing.assert_array_equal(pull(np.ones(8))[0], jax.vjp(jax.nn.relu, x)[1](np.ones(8))[0])


def test_fnp_functions_compose_with_plain_numpy_code():
    def loss(xp, nn, w, x, labels):
        logits = x @ w
        return -xp.mean(xp.sum(nn.log_softmax(logits) * labels, axis=1)) + 0.01 * xp.sum(nn.relu(w) ** 2)

    rng = rng_for(27)
    w, x = rng.normal(size=(4, 3)), rng.normal(size=(6, 4))
    labels = np.eye(3)[rng.integers(0, 3, size=6)]
    f_np = functools.partial(loss, np, fnp)
    f_jx = functools.partial(loss, jnp, jax.nn)
    value, g = ft.value_and_grad(f_np)(w, x, labels)
    jvalue, jg = jax.value_and_grad(f_jx)(w, x, labels)
    assert_close(value, jvalue)
    assert_close(g, jg)
    assert_fd_close(g, lambda v: f_np(v, x, labels), w)


# --------------------------------------------------------------------------
# outputs that do not depend on the inputs
# --------------------------------------------------------------------------
CONSTANT_CASES = {
    "python-float": lambda xp, x, y: 3.5,
    "numpy-constant": lambda xp, x, y: xp.sum(xp.ones(3)) * 2.0,
    "shape-only": lambda xp, x, y: xp.sum(xp.ones(x.shape)) + x.size * 1.5,
    "through-floor": lambda xp, x, y: xp.sum(xp.floor(x * 10.0)),
    "through-comparison": lambda xp, x, y: xp.sum(xp.where(x > 0, 1.0, -1.0)),
    "unused-argument": lambda xp, x, y: xp.sum(xp.sin(y)),
}


@pytest.mark.parametrize("name", sorted(CONSTANT_CASES))
def test_outputs_independent_of_the_input(name):
    f_np, f_jx = both(CONSTANT_CASES[name])
    rng = rng_for(28)
    vg = ft.value_and_grad(f_np)
    for _ in range(2):
        x, y = rng.normal(size=(2, 3)) + 0.05, rng.normal(size=4)
        value, g = vg(x, y)
        jvalue, jg = jax.value_and_grad(f_jx)(x, y)
        assert np.ndim(value) == 0
        assert_close(value, f_np(x, y))
        assert_close(value, jvalue)
        assert g.shape == x.shape
        np.testing.assert_array_equal(g, jg)  # exactly zero


def test_constant_output_of_a_scalar_argument_and_in_vjp():
    value, g = ft.value_and_grad(lambda x: 3.5)(1.25)
    jvalue, jg = jax.value_and_grad(lambda x: 3.5)(1.25)
    assert np.ndim(g) == 0 and np.ndim(value) == 0
    assert value == jvalue and g == jg
    out, pull = ft.vjp(lambda x: (x * 2.0, np.ones(2)), np.array([1.0, 2.0]))
    jout, jpull = jax.vjp(lambda x: (x * 2.0, jnp.ones(2)), np.array([1.0, 2.0]))
    assert_tree_close(out, jout)
    ct = (np.array([1.0, -1.0]), np.array([5.0, 7.0]))
    assert_tree_close(pull(ct), jpull(ct))


def test_signed_zero_constants_are_kept_apart():
    """0.0 and -0.0 are different constants: arctan2(-0.0, x < 0) is -pi, arctan2(0.0, x < 0) is +pi."""

    def fn(xp, x):
        return xp.sum(x * 0.0) + xp.sum(xp.arctan2(-0.0, x))

    f_np, f_jx = both(fn)
    x = np.array([-1.0, -2.0])
    value, g = ft.value_and_grad(f_np)(x)
    jvalue, jg = jax.value_and_grad(f_jx)(x)
    assert_close(value, f_np(x))
    assert_close(value, jvalue)
    assert_close(g, jg)
