"""Forward mode and second order (jvp, hvp, hessian, jacobian/jacfwd/jacrev, Tape.hvp_at), checked against JAX.

As in ``test_api.py``, every test program is written once as ``f(xp, ...)`` and run as plain NumPy (traced by fasttape)
and as ``jax.numpy`` (the reference, float64).  Both sides are exact AD, so they are compared at ``rtol=1e-10``;
Hessian-vector products are also checked against central finite differences of ``ft.grad`` (``rtol=1e-6``).
Sizes are kept small: un-jitted ``jax.hessian`` and ``jax.jacfwd`` are slow.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttape as ft
from fasttape import api as ft_api

from .helpers import ATOL, RTOL, assert_close, assert_tree_close, both  # noqa: F401


def tree_axpy(a, x, y):
    """``a * x + y`` leaf by leaf (NumPy leaves stay NumPy; Python floats stay floats)."""
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)


def fd_hvp(f, primals, tangents, eps=1e-5):
    """Central differences of ``ft.grad(f)`` along ``tangents``: (∇f(x + εv) - ∇f(x - εv)) / 2ε."""
    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    g = ft.grad(f, argnums=argnums)
    plus = g(*tree_axpy(eps, tuple(tangents), tuple(primals)))
    minus = g(*tree_axpy(-eps, tuple(tangents), tuple(primals)))
    return jax.tree_util.tree_map(lambda p, m: (np.asarray(p) - np.asarray(m)) / (2 * eps), plus, minus)


def jax_hvp(f, primals, tangents):
    """JAX's forward-over-reverse HVP, shaped like fasttape's (bare for one primal, else a tuple)."""
    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    return jax.jvp(jax.grad(f, argnums=argnums), tuple(primals), tuple(tangents))[1]


def take_direction(tree, d):
    """Direction ``d`` of a tree whose leaves carry a trailing axis of directions."""
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[..., d], tree)


def rng_for(seed):
    return np.random.default_rng(seed)


def normal_like(tree, rng):
    def draw(leaf):
        if isinstance(leaf, float):
            return float(rng.normal())
        return rng.normal(size=np.shape(leaf))

    return jax.tree_util.tree_map(draw, tree)


# --------------------------------------------------------------------------
# test programs
# --------------------------------------------------------------------------
W73 = rng_for(100).normal(size=(7, 3)) / 2.0
A55 = rng_for(101).normal(size=(5, 5)) / 2.0


def scalar_of_vector(xp, x):
    return xp.sum(xp.tanh(x) * x**2) + xp.log1p(xp.sum(x**2)) * xp.sum(xp.sin(x)) + xp.prod(xp.cos(0.3 * x))


def scalar_of_float(xp, a):
    return xp.sin(a) * a**3 + xp.exp(-0.5 * a)


def vector_out(xp, x):  # R^3 -> R^7
    return xp.tanh(W73 @ x) * xp.sum(x**2) + xp.sin(W73[:, 0] * x[1])


def matrix_out(xp, a, b):  # (2, 3), (3, 4) -> (2, 4)
    return xp.exp(0.5 * (a @ b)) * xp.sum(a**2, axis=1, keepdims=True)


def tuple_out(xp, x, y):  # (3,), (2,) -> (scalar, (3,), (3, 2))
    prod = xp.sum(xp.sin(x)) * xp.sum(y**2)
    return prod, xp.exp(0.3 * x[::-1]) * y[0], x[:, None] * xp.tanh(y)[None, :]


def two_args(xp, x, y):  # x (3,), y (2, 3) -> scalar (the power has a positive base: see test_hvp_of_power_...)
    return (
        xp.sum(xp.sin(y @ x) * xp.exp(0.3 * y[:, 0]))
        + xp.sum(xp.exp(0.2 * x) ** 3) * xp.sum(y**2)
        + xp.sum(xp.tanh(x * y))
        + xp.sum(x * x * x)
    )


def float_and_array(xp, a, x):  # a Python float, x (3,)
    return a**2 * xp.sum(xp.sin(a * x)) + xp.sum(xp.exp(0.2 * x)) * a


def container_fn(xp, params, data):
    """params: {"w": (3, 2), "b": (2,), "pair": ((2,), float)}; data: (4, 3), constant here."""
    h = xp.tanh(data @ params["w"] + params["b"])
    scale, shift = params["pair"]
    return xp.sum(xp.sin(h * scale + shift) ** 2) + xp.sum(params["w"] ** 2) * shift


def container_params(seed):
    rng = rng_for(seed)
    return {
        "w": rng.normal(size=(3, 2)),
        "b": rng.normal(size=2),
        "pair": (rng.uniform(0.5, 1.5, size=2), float(rng.uniform(-0.5, 0.5))),
    }


def container_data(seed=7):
    return rng_for(seed).normal(size=(4, 3))


def rosenbrock(xp, x):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


# --------------------------------------------------------------------------
# jvp
# --------------------------------------------------------------------------
JVP_CASES = [
    ("scalar_of_vector", scalar_of_vector, [(5,)]),
    ("scalar_of_float", scalar_of_float, ["float"]),
    ("vector_out", vector_out, [(3,)]),
    ("matrix_out", matrix_out, [(2, 3), (3, 4)]),
    ("tuple_out", tuple_out, [(3,), (2,)]),
    ("two_args", two_args, [(3,), (2, 3)]),
    ("float_and_array", float_and_array, ["float", (3,)]),
]


def _draw(spec, rng):
    return float(rng.uniform(0.3, 1.2)) if spec == "float" else rng.normal(size=spec)


@pytest.mark.parametrize("fn, specs", [c[1:] for c in JVP_CASES], ids=[c[0] for c in JVP_CASES])
def test_jvp_matches_jax(fn, specs):
    f_np, f_jx = both(fn)
    for seed in (0, 1):  # the tracing call, then a cached tape on new primals and tangents
        rng = rng_for(seed)
        primals = tuple(_draw(s, rng) for s in specs)
        tangents = tuple(_draw(s, rng) for s in specs)
        out, tan = ft.jvp(f_np, primals, tangents)
        jout, jtan = jax.jvp(f_jx, primals, tangents)
        assert_tree_close(out, jout)
        assert_tree_close(out, f_np(*primals))
        assert_tree_close(tan, jtan)


def test_jvp_accepts_lists_and_is_linear_in_the_tangent():
    f_np, f_jx = both(two_args)
    rng = rng_for(2)
    x, y = rng.normal(size=3), rng.normal(size=(2, 3))
    vx, vy = rng.normal(size=3), rng.normal(size=(2, 3))
    _, t1 = ft.jvp(f_np, [x, y], [vx, vy])
    _, t2 = ft.jvp(f_np, (x, y), (2.5 * vx, 2.5 * vy))
    _, t0 = ft.jvp(f_np, (x, y), (np.zeros(3), np.zeros((2, 3))))
    assert_close(t2, 2.5 * t1)
    assert t0 == 0.0
    assert_close(t1, jax.jvp(f_jx, (x, y), (vx, vy))[1])


def test_jvp_container_primals_with_matching_tangents():
    f_np, f_jx = both(container_fn)
    data = container_data()
    for seed in (3, 4):
        params = container_params(seed)
        rng = rng_for(seed + 10)
        t_params = normal_like(params, rng)
        t_data = rng.normal(size=data.shape)
        out, tan = ft.jvp(f_np, (params, data), (t_params, t_data))
        jout, jtan = jax.jvp(f_jx, (params, data), (t_params, t_data))
        assert_close(out, jout)
        assert_close(tan, jtan)


def test_jvp_tuple_primal_and_tuple_output():
    def fn(xp, pair):
        a, b = pair
        return {"s": xp.sum(a) * xp.sum(b**2), "v": (xp.sin(a) * b[0], xp.outer(a, b))}

    f_np, f_jx = both(fn)
    rng = rng_for(5)
    pair = (rng.normal(size=3), rng.normal(size=2))
    tangent = (rng.normal(size=3), rng.normal(size=2))
    out, tan = ft.jvp(f_np, (pair,), (tangent,))
    jout, jtan = jax.jvp(f_jx, (pair,), (tangent,))
    assert_tree_close(out, jout)
    assert_tree_close(tan, jtan)


def test_jvp_has_aux():
    def fn(xp, x, y):
        h = xp.tanh(x * y)
        return xp.sin(h) * x, {"h": h, "mean": xp.mean(h), "label": "layer"}

    f_np, f_jx = both(fn)
    for seed in (6, 7):
        rng = rng_for(seed)
        primals = (rng.normal(size=4), rng.normal(size=4))
        tangents = (rng.normal(size=4), rng.normal(size=4))
        out, tan, aux = ft.jvp(f_np, primals, tangents, has_aux=True)
        jout, jtan, jaux = jax.jvp(f_jx, primals, tangents, has_aux=True)
        assert_close(out, jout)
        assert_close(tan, jtan)
        assert aux["label"] == "layer"
        assert_close(aux["h"], jaux["h"])
        assert_close(aux["mean"], jaux["mean"])


def test_tape_jvp_with_k_directions_equals_separate_jvps():
    f_np, f_jx = both(matrix_out)
    rng = rng_for(8)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    Va, Vb = rng.normal(size=(2, 3, 3)), rng.normal(size=(3, 4, 3))  # 3 directions
    tape = ft.trace(f_np, a, b, argnums=(0, 1))
    out, tans = tape.jvp((a, b), (Va, Vb))
    assert_close(out, f_np(a, b))
    assert tans.shape == (2, 4, 3)
    for d in range(3):
        _, single = tape.jvp((a, b), (Va[..., d], Vb[..., d]))
        assert_close(tans[..., d], single, rtol=1e-13, atol=1e-14)
        assert_close(single, jax.jvp(f_jx, (a, b), (Va[..., d], Vb[..., d]))[1])


def products_and_partials(xp, a, b, w):
    """Batched products with the left, the right and both operands varying (small ones, by loops, and one
    large enough for BLAS), through elementwise steps whose partials the k-direction sweeps compute once."""
    c = xp.tanh(a @ w)  # (2, 5, 64) @ (64, 64): left operand varying, BLAS-sized
    d = xp.sin(w[:6, :6]) @ xp.arctan(b)  # right operand varying
    e = (a[:, :3, :4] ** 1.5 + 2.0) @ xp.exp(b[:, :4, :2] / 3.0)  # both
    return (
        xp.sum(c**2) * xp.hypot(xp.sum(d), 1.0) + xp.sum(xp.log1p(e * e)) + xp.sum(xp.power(xp.abs(c) + 1.0, w[0, :64]))
    )


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_k_direction_jacobians_equal_one_direction_at_a_time(tier):
    from fasttape import tiers

    rng = rng_for(21)
    a, b, w = rng.normal(size=(2, 5, 64)) ** 2, rng.normal(size=(2, 6, 3)), rng.normal(size=(64, 64)) / 8
    f_np, f_jx = both(products_and_partials)
    args = (a, b, w)
    with tiers.only(tier):
        tape = ft.trace(f_np, *args, argnums=(0, 1, 2))
        V = tuple(rng.normal(size=x.shape + (5,)) for x in args)
        _, many = tape.jvp(args, V)
        for d in range(5):
            _, one = tape.jvp(args, tuple(v[..., d] for v in V))
            assert_close(many[..., d], one, rtol=1e-12, atol=1e-12)
        assert_close(one, jax.jvp(f_jx, args, tuple(v[..., 4] for v in V))[1])
        small = ft.trace(lambda b: f_np(a, b, w), b)
        assert_close(small.jacobian(b, mode="fwd"), small.jacobian(b, mode="rev"))
        assert_close(small.jacobian(b, mode="fwd"), jax.jacfwd(lambda b: f_jx(a, b, w))(b))


def test_direction_buffers_kept_between_calls_hold_nothing_of_the_last_call():
    """jvp, jacfwd, jacrev and hessian keep their k-direction buffers with the tape's workspaces: a call
    at a new point (and with other directions) equals JAX's, as the first did."""
    f_np, f_jx = both(products_and_partials)
    rng = rng_for(22)
    a, w = rng.normal(size=(2, 5, 64)) ** 2, rng.normal(size=(64, 64)) / 8
    tape = ft.trace(lambda b: f_np(a, b, w) * b, rng.normal(size=(2, 6, 3)))  # (2, 6, 3) out
    scalar = ft.trace(lambda b: f_np(a, b, w), rng.normal(size=(2, 6, 3)))
    for _ in range(2):
        b, V = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3, 4))
        want_jac = jax.jacfwd(lambda b: f_jx(a, b, w) * b)(b)
        assert_close(tape.jacobian(b, mode="fwd"), want_jac)
        assert_close(tape.jacobian(b, mode="rev"), want_jac)
        _, tangents = tape.jvp((b,), V)
        assert_close(tangents, np.einsum("...ijk,ijkd->...d", want_jac, V))
        assert_close(scalar.hessian(b), jax.hessian(lambda b: f_jx(a, b, w))(b))


# --------------------------------------------------------------------------
# hvp
# --------------------------------------------------------------------------
def test_hvp_one_primal_matches_jax_and_finite_differences():
    f_np, f_jx = both(scalar_of_vector)
    for seed in (10, 11):
        rng = rng_for(seed)
        x, v = rng.normal(size=5), rng.normal(size=5)
        hv = ft.hvp(f_np, (x,), (v,))
        assert isinstance(hv, np.ndarray) and hv.shape == x.shape
        assert_close(hv, jax_hvp(f_jx, (x,), (v,)))
        assert_close(hv, fd_hvp(f_np, (x,), (v,)), rtol=1e-6, atol=1e-7)


def test_hvp_python_float_primal():
    f_np, f_jx = both(scalar_of_float)
    hv = ft.hvp(f_np, (0.7,), (1.5,))
    assert np.ndim(hv) == 0
    assert_close(hv, jax_hvp(f_jx, (0.7,), (1.5,)))
    assert_close(hv, fd_hvp(f_np, (0.7,), (1.5,)), rtol=1e-6, atol=1e-7)


def test_hvp_several_primals_returns_a_tuple():
    f_np, f_jx = both(two_args)
    for seed in (12, 13):
        rng = rng_for(seed)
        primals = (rng.normal(size=3), rng.normal(size=(2, 3)))
        tangents = (rng.normal(size=3), rng.normal(size=(2, 3)))
        hv = ft.hvp(f_np, primals, tangents)
        assert isinstance(hv, tuple) and len(hv) == 2
        assert hv[0].shape == (3,) and hv[1].shape == (2, 3)
        assert_tree_close(hv, jax_hvp(f_jx, primals, tangents))
        assert_tree_close(hv, fd_hvp(f_np, primals, tangents), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [1, 4])
def test_hvp_k_directions_equal_separate_products_and_H_times_V(k):
    f_np, f_jx = both(scalar_of_vector)
    rng = rng_for(14 + k)
    x, V = rng.normal(size=5), rng.normal(size=(5, k))
    HV = ft.hvp(f_np, (x,), (V,))
    assert HV.shape == (5, k)
    H = np.asarray(jax.hessian(f_jx)(x))
    assert_close(HV, H @ V)
    for d in range(k):
        assert_close(HV[:, d], ft.hvp(f_np, (x,), (V[:, d],)), rtol=1e-13, atol=1e-14)
        assert_close(HV[:, d], fd_hvp(f_np, (x,), (V[:, d],)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [1, 4])
def test_hvp_k_directions_several_primals(k):
    f_np, f_jx = both(two_args)
    rng = rng_for(20 + k)
    primals = (rng.normal(size=3), rng.normal(size=(2, 3)))
    tangents = (rng.normal(size=(3, k)), rng.normal(size=(2, 3, k)))
    hv = ft.hvp(f_np, primals, tangents)
    assert hv[0].shape == (3, k) and hv[1].shape == (2, 3, k)
    for d in range(k):
        single = take_direction(tangents, d)
        assert_tree_close(take_direction(hv, d), ft.hvp(f_np, primals, single), rtol=1e-13, atol=1e-14)
        assert_tree_close(take_direction(hv, d), jax_hvp(f_jx, primals, single))


def test_hvp_container_primal():
    f_np, f_jx = both(container_fn)
    data = container_data()
    for seed in (30, 31):
        params = container_params(seed)
        v = normal_like(params, rng_for(seed + 5))
        f1_np = functools.partial(f_np, data=data)
        f1_jx = functools.partial(f_jx, data=data)
        hv = ft.hvp(f1_np, (params,), (v,))
        assert isinstance(hv, dict) and isinstance(hv["pair"], tuple)
        assert_tree_close(hv, jax_hvp(f1_jx, (params,), (v,)))
        assert_tree_close(hv, fd_hvp(f1_np, (params,), (v,)), rtol=1e-6, atol=1e-7)


def test_hvp_container_primal_with_k_directions():
    f_np, f_jx = both(container_fn)
    data = container_data()
    f1_np = functools.partial(f_np, data=data)
    f1_jx = functools.partial(f_jx, data=data)
    params = container_params(32)
    rng = rng_for(33)
    k = 3
    V = jax.tree_util.tree_map(lambda leaf: rng.normal(size=np.shape(leaf) + (k,)), params)
    hv = ft.hvp(f1_np, (params,), (V,))
    assert hv["w"].shape == (3, 2, k) and hv["pair"][1].shape == (k,)
    for d in range(k):
        vd = take_direction(V, d)
        vd["pair"] = (vd["pair"][0], float(vd["pair"][1]))
        assert_tree_close(take_direction(hv, d), jax_hvp(f1_jx, (params,), (vd,)))


def powers(xp, x, p):
    return xp.sum(x**p * xp.cos(x)) + xp.sum(xp.sin(x) ** p)


@pytest.mark.parametrize("p", [3, 4.0, -2], ids=str)
@pytest.mark.parametrize("how", ["hvp", "hessian", "hvp_at"])
def test_hvp_of_power_with_constant_exponent_at_negative_base(how, p):
    """x**p with a constant exponent is smooth at x < 0; only d/dp involves log(x), and p is not differentiated."""
    f_np = functools.partial(powers, np, p=p)
    f_jx = functools.partial(powers, jnp, p=p)
    x = np.array([-0.7, 0.4, -1.3, 2.0])
    v = np.array([1.0, -0.5, 0.25, 2.0])
    H = np.asarray(jax.hessian(f_jx)(x))
    if how == "hvp":
        got = ft.hvp(f_np, (x,), (v,))
    elif how == "hessian":
        got = ft.hessian(f_np)(x) @ v
    else:
        got = ft.trace(f_np, x).hvp_at(x)(v)
    assert_close(got, H @ v)
    assert_close(got, fd_hvp(f_np, (x,), (v,)), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# hessian
# --------------------------------------------------------------------------
def test_hessian_int_argnums_matches_jax():
    f_np, f_jx = both(scalar_of_vector)
    hfun = ft.hessian(f_np)
    for seed in (40, 41):
        x = rng_for(seed).normal(size=5)
        H = hfun(x)
        assert H.shape == (5, 5)
        assert_close(H, jax.hessian(f_jx)(x))
    assert len(hfun.cache) == 1


@pytest.mark.parametrize("argnums", [1, (0, 1), (1, 0), (-1,)], ids=str)
def test_hessian_argnums_nested_blocks_match_jax(argnums):
    f_np, f_jx = both(two_args)
    rng = rng_for(42)
    x, y = rng.normal(size=3), rng.normal(size=(2, 3))
    H = ft.hessian(f_np, argnums=argnums)(x, y)
    jax_argnums = argnums if isinstance(argnums, int) else tuple(a % 2 for a in argnums)
    J = jax.hessian(f_jx, argnums=jax_argnums)(x, y)
    assert_tree_close(H, J)
    if argnums == (0, 1):
        assert H[0][0].shape == (3, 3) and H[0][1].shape == (3, 2, 3)
        assert H[1][0].shape == (2, 3, 3) and H[1][1].shape == (2, 3, 2, 3)


def test_hessian_python_float_arguments():
    f_np, f_jx = both(float_and_array)
    x = rng_for(43).normal(size=3)
    H = ft.hessian(f_np, argnums=(0, 1))(0.8, x)
    assert np.ndim(H[0][0]) == 0 and H[0][1].shape == (3,) and H[1][0].shape == (3,)
    assert_tree_close(H, jax.hessian(f_jx, argnums=(0, 1))(0.8, x))
    h = ft.hessian(both(scalar_of_float)[0])(1.3)
    assert np.ndim(h) == 0
    assert_close(h, jax.hessian(both(scalar_of_float)[1])(1.3))


def test_hessian_dict_argument_is_nested_dict_of_dict():
    def fn(xp, p):
        return xp.sum(xp.sin(p["a"])) * xp.sum(p["b"] ** 2) * p["c"] + xp.sum(
            xp.tanh(p["a"][:, None] * p["b"][None, :]) ** 2
        )

    f_np, f_jx = both(fn)
    rng = rng_for(44)
    p = {"a": rng.normal(size=3), "b": rng.normal(size=2), "c": 0.7}
    H = ft.hessian(f_np)(p)
    assert set(H) == {"a", "b", "c"} and all(set(row) == {"a", "b", "c"} for row in H.values())
    assert H["a"]["b"].shape == (3, 2) and H["b"]["a"].shape == (2, 3) and np.ndim(H["c"]["c"]) == 0
    assert_tree_close(H, jax.hessian(f_jx)(p))


def test_hessian_spanning_several_blocks():
    """More inputs than directions per sweep: the Hessian takes several HVP sweeps."""
    f_np, f_jx = both(rosenbrock)
    n = 70  # > derivatives.MAX_BLOCK
    x = 1.0 + 0.3 * rng_for(45).normal(size=n)
    H = ft.hessian(f_np)(x)
    assert_close(H, jax.hessian(f_jx)(x))


# random smooth programs -----------------------------------------------------
UNARY = {
    "tanh": lambda xp, u: xp.tanh(u),
    "sin": lambda xp, u: xp.sin(u),
    "exp": lambda xp, u: xp.exp(0.5 * u),
    "log1p_sq": lambda xp, u: xp.log1p(u**2),
}
BINARY = {
    "mul": lambda xp, u, w: u * w,
    "matmul": lambda xp, u, w: A55[: u.shape[0], : u.shape[0]] @ u + w,
}


def random_program(xp, x, y, recipe):
    """Each step applies an op to earlier values (picked by index); returns a scalar of the last two."""
    vals = [x, y]
    for op, i, j in recipe:
        u, w = vals[i % len(vals)], vals[j % len(vals)]
        vals.append(UNARY[op](xp, u) if op in UNARY else BINARY[op](xp, u, w))
    return xp.sum(vals[-1] * xp.cos(vals[-2])) + 0.1 * xp.sum(vals[-1] ** 2)


recipes = st.lists(
    st.tuples(st.sampled_from(sorted(UNARY) + sorted(BINARY)), st.integers(0, 7), st.integers(0, 7)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=20)
@given(recipe=recipes, n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_hessian_of_random_smooth_programs_matches_jax_and_is_symmetric(recipe, n, seed):
    f_np = functools.partial(random_program, np, recipe=recipe)
    f_jx = functools.partial(random_program, jnp, recipe=recipe)
    rng = rng_for(seed)
    x, y = rng.uniform(-1, 1, size=n), rng.uniform(-1, 1, size=n)
    H = ft.hessian(f_np, argnums=(0, 1))(x, y)
    assert_tree_close(H, jax.hessian(f_jx, argnums=(0, 1))(x, y), atol=1e-10)
    full = np.block([[H[0][0], H[0][1]], [H[1][0], H[1][1]]])
    scale = max(1.0, np.abs(full).max())
    np.testing.assert_allclose(full, full.T, rtol=0, atol=1e-13 * scale)
    v = rng.normal(size=2 * n)
    hv = ft.hvp(f_np, (x, y), (v[:n], v[n:]))
    assert_close(np.concatenate(hv), full @ v, atol=1e-10)


# --------------------------------------------------------------------------
# jacobian / jacfwd / jacrev
# --------------------------------------------------------------------------
def wide(xp, x):  # R^7 -> R^2
    return xp.stack([xp.sum(xp.sin(x) * x), xp.sum(xp.tanh(x[:4] * x[3:]))])


def pytree_out(xp, x):  # (3,) -> {"s": scalar, "pair": ((2, 3), (3,)), "id": x}
    return {"s": xp.sum(x**2), "pair": (xp.outer(xp.sin(x[:2]), x), xp.exp(0.5 * x) * x[0]), "id": x}


def many_out(xp, x):  # R^3 -> R^70: more outputs than directions per reverse sweep
    return xp.sin(xp.outer(xp.arange(70.0) / 35.0, x) @ xp.ones(3)) * xp.sum(x**2)


def many_in(xp, x):  # R^70 -> R^3: more inputs than directions per forward sweep
    return xp.stack([xp.sum(xp.sin(x)), xp.sum(x**2 * xp.cos(x)), xp.sum(xp.tanh(x[1:] * x[:-1]))])


JAC_CASES = [
    ("tall n<m", vector_out, [(3,)], 0),
    ("wide n>m", wide, [(7,)], 0),
    ("scalar out", scalar_of_vector, [(5,)], 0),
    ("float in", scalar_of_float, ["float"], 0),
    ("matrix in/out", matrix_out, [(2, 3), (3, 4)], 0),
    ("matrix argnums tuple", matrix_out, [(2, 3), (3, 4)], (1, 0)),
    ("tuple out argnums tuple", tuple_out, [(3,), (2,)], (0, 1)),
    ("pytree out", pytree_out, [(3,)], 0),
    ("many outputs", many_out, [(3,)], 0),
    ("many inputs", many_in, [(70,)], 0),
]


@pytest.mark.parametrize("fn, specs, argnums", [c[1:] for c in JAC_CASES], ids=[c[0] for c in JAC_CASES])
def test_jacobian_modes_agree_with_each_other_and_jax(fn, specs, argnums):
    f_np, f_jx = both(fn)
    for seed in (50, 51):  # tracing, then a cached tape
        rng = rng_for(seed)
        args = tuple(_draw(s, rng) for s in specs)
        want = jax.jacrev(f_jx, argnums=argnums)(*args)
        as_numpy = functools.partial(jax.tree_util.tree_map, np.asarray)
        assert_tree_close(as_numpy(jax.jacfwd(f_jx, argnums=argnums)(*args)), want)  # the reference agrees with itself
        results = {
            "jacobian": ft.jacobian(f_np, argnums=argnums)(*args),
            "jacfwd": ft.jacfwd(f_np, argnums=argnums)(*args),
            "jacrev": ft.jacrev(f_np, argnums=argnums)(*args),
        }
        for got in results.values():
            assert_tree_close(got, want)
        assert_tree_close(results["jacfwd"], results["jacrev"])
        tape = ft.trace(f_np, *args, argnums=argnums)
        for mode in ("fwd", "rev", "auto"):
            assert_tree_close(tape.jacobian(*args, mode=mode), want)


def test_jacobian_transform_caches_one_tape_per_signature():
    f_np, f_jx = both(vector_out)
    jfun = ft.jacrev(f_np)
    for seed in range(3):
        x = rng_for(seed).normal(size=3)
        assert_close(jfun(x), jax.jacrev(f_jx)(x))
    assert len(jfun.cache) == 1
    assert_close(jfun(np.ones(3)), jax.jacrev(f_jx)(np.ones(3)))


@pytest.mark.parametrize("make", [ft.jacobian, ft.jacfwd, ft.jacrev], ids=["jacobian", "jacfwd", "jacrev"])
def test_jacobian_has_aux(make):
    def fn(xp, x):
        h = xp.tanh(W73 @ x)
        return h * x[0], {"h": h, "n": 3}

    f_np, f_jx = both(fn)
    x = rng_for(52).normal(size=3)
    jac, aux = make(f_np, has_aux=True)(x)
    jjac, jaux = jax.jacfwd(f_jx, has_aux=True)(x)
    assert_close(jac, jjac)
    assert_close(aux["h"], jaux["h"])
    assert aux["n"] == 3


# --------------------------------------------------------------------------
# Tape.hvp_at
# --------------------------------------------------------------------------
def test_hvp_at_repeated_calls_match_fresh_hvp():
    f_np, f_jx = both(scalar_of_vector)
    rng = rng_for(60)
    x = rng.normal(size=5)
    tape = ft.trace(f_np, x)
    op = tape.hvp_at(x)
    vs = [rng.normal(size=5) for _ in range(6)]
    first = [op(v) for v in vs]
    for _ in range(3):  # the operator does not drift: same numbers on every later call
        for v, hv0 in zip(vs, first):
            hv = op(v)
            np.testing.assert_array_equal(hv, hv0)
    for v, hv0 in zip(vs, first):
        assert_close(hv0, ft.hvp(f_np, (x,), (v,)), rtol=1e-13, atol=1e-14)
        assert_close(hv0, tape.hvp(x, v), rtol=1e-13, atol=1e-14)
        assert_close(hv0, jax_hvp(f_jx, (x,), (v,)))


def test_hvp_at_value_and_grad():
    f_np, f_jx = both(two_args)
    rng = rng_for(61)
    x, y = rng.normal(size=3), rng.normal(size=(2, 3))
    tape = ft.trace(f_np, x, y, argnums=(0, 1))
    op = tape.hvp_at(x, y)
    value, grads = ft.value_and_grad(f_np, argnums=(0, 1))(x, y)
    assert_close(op.value, value)
    assert_tree_close(op.grad, grads)
    jvalue, jgrads = jax.value_and_grad(f_jx, argnums=(0, 1))(x, y)
    assert_close(op.value, jvalue)
    assert_tree_close(op.grad, jgrads)
    v = (rng.normal(size=3), rng.normal(size=(2, 3)))
    assert_tree_close(op(v), jax_hvp(f_jx, (x, y), v))
    assert_close(op.value, value)  # products leave the stored value and gradient alone
    assert_tree_close(op.grad, grads)


def test_hvp_at_k_directions():
    f_np, f_jx = both(scalar_of_vector)
    rng = rng_for(62)
    x, V = rng.normal(size=5), rng.normal(size=(5, 4))
    op = ft.trace(f_np, x).hvp_at(x)
    HV = op(V)
    assert HV.shape == (5, 4)
    assert_close(HV, np.asarray(jax.hessian(f_jx)(x)) @ V)
    for d in range(4):
        assert_close(HV[:, d], op(V[:, d]), rtol=1e-13, atol=1e-14)


def test_hvp_at_operators_at_different_points_are_independent():
    f_np, f_jx = both(scalar_of_vector)
    rng = rng_for(63)
    x1, x2, x3 = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    tape = ft.trace(f_np, x1)
    op1, op2 = tape.hvp_at(x1), tape.hvp_at(x2)
    for _ in range(3):
        v = rng.normal(size=5)
        tape.grad(x3)  # other work on the same tape in between
        tape.hvp(x3, v)
        assert_close(op1(v), jax_hvp(f_jx, (x1,), (v,)))
        assert_close(op2(v), jax_hvp(f_jx, (x2,), (v,)))
    assert_close(op1.value, f_np(x1))
    assert_close(op2.grad, jax.grad(f_jx)(x2))


def test_hvp_at_newton_cg_on_rosenbrock():
    """Truncated CG on H p = -g through the operator: the quadratic model decreases and the residual shrinks."""
    f_np, f_jx = both(rosenbrock)
    n = 50
    x = 1.0 + 0.05 * rng_for(64).normal(size=n)  # near the minimum, where H is positive definite
    op = ft.trace(f_np, x).hvp_at(x)
    g = op.grad
    H = np.asarray(jax.hessian(f_jx)(x))
    assert_close(g, jax.grad(f_jx)(x))
    assert np.linalg.eigvalsh(H).min() > 0

    p = np.zeros(n)
    r = -g.copy()
    d = r.copy()
    residuals = [np.linalg.norm(r)]
    models = [0.0]
    for _ in range(25):
        Hd = op(d)
        assert_close(Hd, H @ d, rtol=1e-10, atol=1e-9)
        alpha = (r @ r) / (d @ Hd)
        p = p + alpha * d
        r_new = r - alpha * Hd
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
        residuals.append(np.linalg.norm(-g - op(p)))  # the true residual, through the operator again
        models.append(g @ p + 0.5 * p @ op(p))
    assert all(b < a + 1e-12 for a, b in zip(models, models[1:])), models  # CG decreases the model monotonically
    assert residuals[-1] < 1e-4 * residuals[0], residuals
    assert_close(-g - H @ p, -g - op(p), rtol=1e-6, atol=1e-8 * residuals[0])


# --------------------------------------------------------------------------
# Python control flow on traced values
# --------------------------------------------------------------------------
def branch_pos(xp, x):
    return xp.sum(xp.sin(x) * x**2)


def branch_neg(xp, x):
    return xp.sum(xp.exp(x) * x) * 2.0


def branchy(xp, x):
    if xp.sum(x) > 0:
        return branch_pos(xp, x)
    return branch_neg(xp, x)


def vec_branch_pos(xp, x):
    return xp.sin(x) * x[0]


def vec_branch_neg(xp, x):
    return xp.cos(x) * x**2


def vec_branchy(xp, x):
    return vec_branch_pos(xp, x) if xp.max(x) > 1.0 else vec_branch_neg(xp, x)


POS = np.array([0.5, 1.0, -0.2])
NEG = np.array([-0.5, -1.0, 0.2])


def test_hvp_follows_branches_and_caches_a_tape_per_branch():
    f_np = functools.partial(branchy, np)
    v = np.array([0.3, -1.2, 0.8])
    for k, x in enumerate([POS, NEG, POS * 2.0, NEG * 1.5]):
        taken = branch_pos if np.sum(x) > 0 else branch_neg
        hv = ft.hvp(f_np, (x,), (v,))
        assert_close(hv, jax_hvp(functools.partial(taken, jnp), (x,), (v,)))
        assert_close(hv, fd_hvp(f_np, (x,), (v,)), rtol=1e-6, atol=1e-7)
        assert len(ft_api._cached_transform(f_np, "hvp", 0, False).cache) == min(k + 1, 2)


def test_hessian_follows_branches_and_caches_a_tape_per_branch():
    hfun = ft.hessian(functools.partial(branchy, np))
    for k, x in enumerate([POS, NEG, POS * 2.0, NEG * 1.5]):
        taken = branch_pos if np.sum(x) > 0 else branch_neg
        assert_close(hfun(x), jax.hessian(functools.partial(taken, jnp))(x))
        assert len(hfun.cache) == min(k + 1, 2)


@pytest.mark.parametrize("make", [ft.jacobian, ft.jacfwd, ft.jacrev], ids=["jacobian", "jacfwd", "jacrev"])
def test_jacobian_follows_branches_and_caches_a_tape_per_branch(make):
    jfun = make(functools.partial(vec_branchy, np))
    inputs = [np.array([0.5, 2.0, 0.1]), np.array([0.5, 0.7, 0.1]), np.array([3.0, 0.0, -1.0])]
    for k, x in enumerate(inputs):
        taken = vec_branch_pos if np.max(x) > 1.0 else vec_branch_neg
        assert_close(jfun(x), jax.jacfwd(functools.partial(taken, jnp))(x))
        assert len(jfun.cache) == min(k + 1, 2)


def test_jvp_follows_branches():
    f_np = functools.partial(vec_branchy, np)
    v = np.array([1.0, -0.5, 0.25])
    for x in (np.array([0.5, 2.0, 0.1]), np.array([0.5, 0.7, 0.1]), np.array([3.0, 0.0, -1.0])):
        taken = vec_branch_pos if np.max(x) > 1.0 else vec_branch_neg
        out, tan = ft.jvp(f_np, (x,), (v,))
        jout, jtan = jax.jvp(functools.partial(taken, jnp), (x,), (v,))
        assert_close(out, jout)
        assert_close(tan, jtan)


def test_raw_tape_second_order_refuses_the_other_branch():
    tape = ft.trace(functools.partial(branchy, np), POS)
    v = np.ones(3)
    for call in (
        lambda x: tape.hvp(x, v),
        lambda x: tape.hvp_at(x),
        lambda x: tape.hessian(x),
        lambda x: tape.jacobian(x),
        lambda x: tape.jacobian(x, mode="fwd"),
        lambda x: tape.jvp((x,), v),  # a tape recorded with argnums=0 takes the bare tangent
    ):
        with pytest.raises(ft.BranchChangedError):
            call(NEG)
    assert_close(tape.hvp(POS * 3.0, v), jax_hvp(functools.partial(branch_pos, jnp), (POS * 3.0,), (v,)))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_second_order_of_a_vector_valued_function_is_a_type_error_naming_the_fix():
    f_np = functools.partial(vector_out, np)
    x = np.ones(3)
    for call in (
        lambda: ft.hvp(f_np, (x,), (x,)),
        lambda: ft.hessian(f_np)(x),
        lambda: ft.trace(f_np, x).hvp_at(x),
        lambda: ft.trace(f_np, x).hvp(x, x),
        lambda: ft.trace(f_np, x).hessian(x),
    ):
        with pytest.raises(ft.NonScalarOutputError, match="jacobian") as info:
            call()
        assert isinstance(info.value, TypeError)
        assert "(7,)" in str(info.value)


def test_wrong_tangent_shape_is_a_value_error():
    f_np = functools.partial(scalar_of_vector, np)
    g_np = functools.partial(two_args, np)
    x, y = np.ones(5), np.ones((2, 3))
    op = ft.trace(f_np, x).hvp_at(x)
    for call in (
        lambda: ft.jvp(f_np, (x,), (np.ones(4),)),
        lambda: ft.jvp(f_np, (x,), (np.ones((2, 5)),)),
        lambda: ft.hvp(f_np, (x,), (np.ones(4),)),
        lambda: ft.hvp(f_np, (x,), (np.ones((5, 2, 2)),)),
        lambda: ft.hvp(g_np, (x[:3], y), (np.ones(3), np.ones((3, 2)))),
        lambda: ft.hvp(g_np, (x[:3], y), (np.ones((3, 2)), np.ones((2, 3, 4)))),  # k differs between parts
        lambda: op(np.ones(6)),
        lambda: ft.jvp(
            functools.partial(container_fn, np),
            (container_params(0), container_data()),
            ({"w": np.ones((3, 2)), "b": np.ones(2)}, container_data()),
        ),  # tangent structure differs
    ):
        with pytest.raises(ValueError, match="shape|structure|directions"):
            call()


def test_mismatched_number_of_tangents_is_a_value_error():
    g_np = functools.partial(two_args, np)
    x, y = np.ones(3), np.ones((2, 3))
    for call in (
        lambda: ft.jvp(g_np, (x, y), (x,)),
        lambda: ft.jvp(g_np, (x, y), (x, y, y)),
        lambda: ft.hvp(g_np, (x, y), (x,)),
        lambda: ft.hvp(g_np, (x, y), (x, y, y)),
    ):
        with pytest.raises(ValueError, match="tangent"):
            call()
    tape = ft.trace(g_np, x, y, argnums=(0, 1))
    with pytest.raises(ValueError):
        tape.hvp(x, y, x)  # one tangent for two differentiated arguments


# --------------------------------------------------------------------------
# NaN and inf: JAX's symbolic zeros (layout.F_CONST_ADJOINT, layout.CURVATURE)
# --------------------------------------------------------------------------
def _with_nonfinite(x):
    x = np.array(x, dtype=float)
    flat = x.reshape(-1)
    flat[1], flat[-2], flat[-1] = np.inf, -np.inf, np.nan
    return x


@pytest.mark.parametrize("n", [4, 9000], ids=["family-kernels", "fused-regions"])
def test_a_hessian_that_does_not_depend_on_the_point_stays_exact_beside_nan_and_inf(n):
    # sum(w x²) + sum(0.7 x y): H v = (2 w v_x + 0.7 v_y, 0.7 v_x) whatever x is; the terms z̄' f' are
    # structural zeros (z̄ is a constant), which must not meet f' = 2x = inf (0 x inf = NaN)
    rng = np.random.default_rng(0)
    w, y = rng.normal(size=n), rng.normal(size=n)
    x = _with_nonfinite(rng.normal(size=n))
    vx, vy = rng.normal(size=n), rng.normal(size=n)
    hx, hy = ft.hvp(lambda x, y: np.sum(w * x**2) + np.sum(0.7 * x * y), (x, y), (vx, vy))
    np.testing.assert_allclose(hx, 2 * w * vx + 0.7 * vy, rtol=1e-14)
    np.testing.assert_allclose(hy, 0.7 * vx, rtol=1e-14)


def test_the_scalar_code_and_matmul_form_no_product_with_a_structural_zero():
    def scalar_loop(x):
        a, b = x[0], x[1]
        for _ in range(3):
            a, b = a + 0.5 * b, 2.0 * b
        return a * b  # a = x0 + 3.5 x1, b = 8 x1: H = [[0, 8], [8, 56]] wherever x is

    x = np.array([np.inf, 1.0])
    np.testing.assert_array_equal(ft.hessian(scalar_loop)(x), [[0.0, 8.0], [8.0, 56.0]])
    rng = np.random.default_rng(1)
    W, A, B = rng.normal(size=(3, 5)), _with_nonfinite(rng.normal(size=(3, 4))), rng.normal(size=(4, 5))
    VA, VB = rng.normal(size=A.shape), rng.normal(size=B.shape)
    hA, hB = ft.hvp(lambda A, B: np.sum(W * (A @ B)), (A, B), (VA, VB))  # H (VA, VB) = (W VBᵀ, VAᵀ W)
    np.testing.assert_allclose(hA, W @ VB.T, rtol=1e-14)
    np.testing.assert_allclose(hB, VA.T @ W, rtol=1e-14)


def test_rows_whose_output_adjoint_is_a_constant_are_marked():
    from fasttape import layout as K

    def marked(f, x):
        tape = ft.trace(f, x)
        names = {p.opcode: p.name for p in ft.PRIMITIVES}
        return [(names[r[K.C_OP]], bool(r[K.C_FLAGS] & K.F_CONST_ADJOINT)) for r in tape.ins]

    x = np.array([0.5, 1.5])
    # exp's adjoint is 2 (a constant); x's, 2 exp(x), is not -- but no row's output is x
    assert marked(lambda x: np.sum(2.0 * np.exp(x)), x) == [("exp", True), ("multiply", True), ("sum", True)]
    # square's adjoint is 1; exp's, 2 exp(x) ȳ, varies with x: not marked
    assert marked(lambda x: np.sum(np.exp(x) ** 2), x) == [("exp", False), ("square", True), ("sum", True)]


def test_a_gathers_sources_carry_second_order_adjoints_whatever_their_position():
    # a stack is one gather over its sources; an adjoint that varies reaches each of them (the second
    # source has no F_GRAD bit of its own)
    x = np.array([0.5, -1.25, 2.0])
    hessian = ft.hessian(lambda x: np.sum(np.stack([x, x**2, np.sin(x)]) ** 2))(x)
    # f = Σ x² + x⁴ + sin² x:  f'' = 2 + 12 x² + 2 cos 2x
    np.testing.assert_allclose(hessian, np.diag(2 + 12 * x**2 + 2 * np.cos(2 * x)), rtol=1e-13, atol=1e-14)


def test_a_value_read_only_by_rules_without_derivative_sends_back_no_nan():
    # sign(tanh(x)): tanh's adjoint is a structural zero (JAX's symbolic zero), not 0 x tanh'(NaN)
    x = np.array([np.nan, 0.5, np.inf])
    g = ft.grad(lambda x: np.sum(-x) + np.sum(np.sign(1.5 + np.tanh(x))))(x)
    np.testing.assert_array_equal(g, [-1.0, -1.0, -1.0])


def test_an_infinite_adjoint_of_a_max_meets_its_zero_weights_as_in_jax():
    # min(-x)² at x = (0.5, inf, 1): the adjoint of the min is -inf; the elements that are not the
    # minimum get 0 x -inf = NaN (JAX's mask times adjoint), the minimum -inf x -1 = inf
    x = np.array([0.5, np.inf, 1.0])
    f = functools.partial(lambda xp, x: xp.min(-x) ** 2)
    with jax.disable_jit():
        expected = jax.grad(lambda x: f(jnp, x))(x)
    np.testing.assert_array_equal(ft.grad(lambda x: f(np, x))(x), expected)
    np.testing.assert_array_equal(expected, [np.nan, np.inf, np.nan])
    t = np.array([1.0, np.inf, 0.0])  # the min's tangent: the minimum's, plus 0 x inf from another element
    with jax.disable_jit():
        expected = jax.jvp(lambda x: jnp.min(x), (x,), (t,))[1]
    assert np.isnan(expected)
    np.testing.assert_array_equal(ft.jvp(lambda x: np.min(x), (x,), (t,))[1], expected)


@pytest.mark.parametrize("tier", ["compiled", "executor"])
@pytest.mark.parametrize("x", [[np.nan], [np.inf, 2.0]], ids=["one-factor", "two-factors"])
def test_an_empty_prefix_or_suffix_of_a_product_has_no_tangent_term(tier, x):
    # the exclusive products of prod are prefix x suffix; an empty one is the constant 1, so its tangent
    # is a structural zero: prod([x]) has no second partial (H v = c v at x = NaN, JAX's symbolic zero),
    # and the end elements of a longer product form no 0 x inf (JAX's own tree pads three factors with
    # a 1 whose zero tangent does: the oracle's exact product is the reference there)
    from fasttape import tiers

    x = np.array(x)
    v = np.linspace(1.0, 2.0, x.size)

    def f(xp, x):
        y = xp.prod(x)
        return 0.3 * y + 0.35 * y * y

    with jax.disable_jit():
        expected = jax.jvp(jax.grad(functools.partial(f, jnp)), (x,), (v,))[1]
    with tiers.only(tier), np.errstate(all="ignore"):
        actual = ft.hvp(functools.partial(f, np), (x,), (v,))
    np.testing.assert_array_equal(actual, expected)
    if x.size == 1:
        np.testing.assert_array_equal(actual, 0.7 * v)


@pytest.mark.parametrize("tier", ["compiled", "executor"])
@pytest.mark.parametrize("x", [[-1e295] * 3, [1e6, 1e6 + 0.5, 1e6 - 2.0]], ids=["log-k-absorbed", "z-1e6"])
def test_logsumexp_weights_stay_a_softmax_where_its_value_absorbs_log_k(tier, x):
    # at x = (-1e295, -1e295, -1e295), z = -1e295 + log 3 rounds to -1e295; exp(x - z) would weigh each
    # element 1, not 1/3 (a gradient three times too large); at |z| = 1e6 it would be off by 1e-10
    import fasttape.numpy as fnp
    from fasttape import tiers

    x = np.array(x)
    c, v = 0.7 / np.max(np.abs(x)), np.linspace(0.5, 1.5, x.size)

    def loss(logsumexp, x):
        y = logsumexp(x)
        return 0.4 * y + 0.5 * (c * y) * y

    reference = functools.partial(loss, jax.scipy.special.logsumexp)
    with tiers.only(tier):
        g = ft.grad(functools.partial(loss, fnp.logsumexp))(x)
        hv = ft.hvp(functools.partial(loss, fnp.logsumexp), (x,), (v,))
    np.testing.assert_allclose(g, jax.grad(reference)(x), rtol=1e-12)
    expected_hv = jax.jvp(jax.grad(reference), (x,), (v,))[1]
    np.testing.assert_allclose(hv, expected_hv, rtol=1e-10, atol=1e-12 * np.max(np.abs(expected_hv)))


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_the_tangent_of_a_product_beside_an_infinite_factor_is_the_textbook_jvp(tier):
    # d prod = Σ t_k Π_{j≠k} x_j: along e_0 at x = (a, a, -inf) the term t_1 x_0 x_2 = 0 x inf is NaN, as
    # JAX's JVP of that formula; a running dual-number product (acc x + p t) would skip it and give inf
    from fasttape import tiers

    x = np.array([-1.25, -1.25, -np.inf])
    t = np.array([1.0, 0.0, 0.0])
    with tiers.only(tier), np.errstate(all="ignore"):
        assert np.isnan(ft.jvp(lambda x: np.prod(x), (x,), (t,))[1])
        finite = np.array([-1.25, -1.25, 2.0])
        np.testing.assert_array_equal(ft.jvp(lambda x: np.prod(x), (finite,), (np.array([0.0, 0.0, 1.0]),))[1], 1.5625)


@pytest.mark.parametrize("tier", ["compiled", "executor"])
def test_value_grad_and_hvp_is_value_and_grad_and_hvp_from_one_sweep(tier):
    from fasttape import tiers

    f_np, f_jax = both(lambda xp, x, y: xp.sum(xp.tanh(x) ** 2 * xp.exp(y)) + xp.sum(x[:2] * y[1:]))
    x, y = np.linspace(-1.0, 1.0, 3), np.linspace(0.5, -0.5, 3)
    v, w = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.0, -1.0])
    with tiers.only(tier):
        value, grads, hv = ft.value_grad_and_hvp(f_np, (x, y), (v, w))
        tape = ft.trace(f_np, x, y, argnums=(0, 1))
        value2, grads2, hv2 = tape.value_grad_and_hvp(x, y, (np.stack([v, 2 * v], -1), np.stack([w, 2 * w], -1)))
    assert_close(value, f_jax(x, y))
    assert_tree_close(grads, jax.grad(f_jax, argnums=(0, 1))(x, y))
    assert_tree_close(hv, jax_hvp(f_jax, (x, y), (v, w)))
    assert_close(value2, value)
    assert_tree_close(grads2, grads)
    assert_tree_close(tuple(h[..., 1] for h in hv2), tuple(2 * h for h in hv))


def test_vjp_functions_that_are_gone_give_their_buffers_to_the_next_vjp():
    import gc

    tape = ft.trace(lambda x: np.tanh(x) * x, np.ones(4))
    _, back = tape.vjp(np.ones(4))
    first = back._ws
    kept = back(np.ones(4))[0]
    del back
    gc.collect()
    out, back = tape.vjp(np.full(4, 2.0))
    assert back._ws is first  # reused, not a fresh value+adjoint buffer
    assert_close(back(np.ones(4))[0], jax.vjp(lambda x: jnp.tanh(x) * x, jnp.full(4, 2.0))[1](jnp.ones(4))[0])
    assert_close(kept, jax.vjp(lambda x: jnp.tanh(x) * x, jnp.ones(4))[1](jnp.ones(4))[0])


def test_jacobian_auto_mode_measures_both_modes_once_when_the_shapes_do_not_decide_and_keeps_its_choice():
    from fasttape import derivatives, tiers

    W = rng_for(22).normal(size=(40, 50))
    f_np, f_jx = both(lambda xp, x: xp.tanh(W @ x) * x[:40])
    x = rng_for(23).normal(size=50)
    with tiers.only("compiled"):
        tape = ft.trace(f_np, x)
        J = tape.jacobian(x)  # 50 inputs, 40 outputs: within CLEAR_CHOICE of each other, so measured
        assert 40 * derivatives.CLEAR_CHOICE > 50
        mode = tape._jacobian_mode
        assert mode in ("fwd", "rev")
        assert_close(J, jax.jacfwd(f_jx)(x))
        again = tape.jacobian(x)  # the kept mode: the same bits
        assert again.tobytes() == J.tobytes() and tape._jacobian_mode == mode
        for mode in ("fwd", "rev"):
            assert_close(tape.jacobian(x, mode=mode), J, rtol=1e-13, atol=1e-14)
    wide = ft.trace(lambda x: f_np(x)[:3], x)
    assert_close(wide.jacobian(x), jax.jacrev(lambda x: f_jx(x)[:3])(x))
    assert not hasattr(wide, "_jacobian_mode")  # 3 outputs against 50 inputs: reverse, nothing measured
