"""Transformations inside traced functions (fasttape.nesting): any order, forward and reverse mixed,
equal to JAX's compositions to 1e-10 in both tiers; no perturbation confusion; guards at every level;
the recorded derivative programs replay on new inputs; each kind of primitive differentiated to third
order through its rules (fasttape.rules)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fasttape as ft
from fasttape import tiers
from oracle import check
from oracle.cases import PRIMITIVE_CASES, scalar_loss
from tests.helpers import assert_close, assert_tree_close

TIERS = ["compiled", "executor"]
RNG = np.random.default_rng(15)


def wavy(x, xp=np):
    return xp.sin(x) * x**3


def field(x, xp=np):
    """A vector function touching the common structural kinds: cumsum, reversal, prod, max, logsumexp."""
    lse = ft.numpy.logsumexp if xp is np else jax.scipy.special.logsumexp
    return (xp.sum(xp.tanh(x) ** 2 * xp.exp(x[::-1])) + xp.prod(x[:3]) + xp.max(xp.cumsum(x) * x)
            + lse(x * 2.0))  # fmt: skip


@pytest.mark.parametrize("tier", TIERS)
def test_grad_of_grad_to_fourth_order_matches_jax(tier):
    f_np, f_jax = wavy, lambda x: wavy(x, jnp)
    with tiers.only(tier):
        for point in (1.3, -0.4):
            ours, theirs = f_np, f_jax
            for _ in range(4):  # orders 1 to 4
                ours, theirs = ft.grad(ours), jax.grad(theirs)
                assert_close(ours(point), theirs(point), rtol=1e-10, atol=1e-10)
                assert_close(ours(np.float64(point)), theirs(point), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tier", TIERS)
def test_compositions_of_forward_and_reverse_match_jax(tier):
    x = RNG.normal(size=5)
    v = RNG.normal(size=5)
    f_np, f_jax = field, lambda x: field(x, jnp)
    H = jax.hessian(f_jax)(x)
    with tiers.only(tier):
        assert_close(ft.jacfwd(ft.grad(f_np))(x), H)
        assert_close(ft.jacrev(ft.grad(f_np))(x), H)
        assert_close(ft.jacobian(ft.grad(f_np))(x), H)
        assert_close(ft.hessian(f_np)(x), H)
        third = jax.jacfwd(jax.jacrev(jax.jacrev(f_jax)))(x)
        assert_close(ft.jacfwd(ft.jacrev(ft.jacrev(f_np)))(x), third)
        # jvp of grad by hand, and its gradient (third order)
        hv = lambda y: ft.jvp(ft.grad(f_np), (y,), (v,))[1]  # noqa: E731
        hv_jax = lambda y: jax.jvp(jax.grad(f_jax), (y,), (v,))[1]  # noqa: E731
        assert_close(ft.grad(lambda y: np.sum(hv(y) ** 2))(x), jax.grad(lambda y: jnp.sum(hv_jax(y) ** 2))(x))
        # hvp and vjp called inside
        assert_close(ft.grad(lambda y: np.sum(ft.hvp(f_np, (y,), (v,)) * y))(x),
                     jax.grad(lambda y: jnp.sum(jax.jvp(jax.grad(f_jax), (y,), (v,))[1] * y))(x))  # fmt: skip

        def pulled(y, xp, vjp):
            _, back = vjp(lambda z: xp.exp(z) * z[::-1], y)
            return xp.sum(back(xp.cos(y))[0] ** 2)

        assert_close(ft.grad(lambda y: pulled(y, np, ft.vjp))(x), jax.grad(lambda y: pulled(y, jnp, jax.vjp))(x))


@pytest.mark.parametrize("tier", TIERS)
def test_several_arguments_aux_and_containers(tier):
    a, b = RNG.normal(size=3), RNG.normal(size=(2, 3))

    def inner(p, xp):
        return xp.sum(xp.sin(p["a"]) * p["b"] ** 2), p["a"] * 2.0

    def outer(a, b, xp, T):
        (value, aux), g = T.value_and_grad(lambda p: inner(p, xp), has_aux=True)({"a": a, "b": b})
        H = T.hessian(lambda s, t: xp.sum(xp.exp(s * t)), argnums=(0, 1))(a, b[0])
        return value + xp.sum(g["a"] * aux) + xp.sum(g["b"] ** 3) + sum(xp.sum(h) for row in H for h in row)

    with tiers.only(tier):
        ours = ft.grad(lambda a, b: outer(a, b, np, ft), argnums=(0, 1))(a, b)
    theirs = jax.grad(lambda a, b: outer(a, b, jnp, jax), argnums=(0, 1))(a, b)
    assert_tree_close(ours, theirs)


def test_a_nested_tape_replays_new_inputs():
    """The recorded second-order program holds no value of the point it was traced at."""
    squared = ft.grad(lambda x: np.sum(ft.grad(field)(x) ** 2))
    squared_jax = jax.grad(lambda x: jnp.sum(jax.grad(lambda y: field(y, jnp))(x) ** 2))
    hess = ft.hessian(field)
    for _ in range(3):
        x = RNG.normal(size=5)
        assert_close(hess(x), jax.hessian(lambda y: field(y, jnp))(x))
        assert_close(squared(x), squared_jax(x))
    assert len(hess.cache) == 1 and len(squared.cache) == 1


def maml(w, batches, test, T, xp):
    """Five inner gradient steps, then the loss on held-out data: differentiated through the steps."""

    def loss(w, X, y):
        return xp.mean((xp.tanh(X @ w) - y) ** 2)

    for X, y in batches:
        w = w - 0.1 * T.grad(loss)(w, X, y)
    return loss(w, *test)


@pytest.mark.parametrize("tier", TIERS)
def test_maml_five_steps_gradient_and_hvp_match_jax(tier):
    batches = [(RNG.normal(size=(8, 4)), RNG.normal(size=8)) for _ in range(5)]
    test = (RNG.normal(size=(8, 4)), RNG.normal(size=8))
    w, v = RNG.normal(size=4), RNG.normal(size=4)
    f_jax = lambda w: maml(w, batches, test, jax, jnp)  # noqa: E731
    with tiers.only(tier):
        g = ft.grad(maml)(w, batches, test, ft, np)
        hv = ft.hvp(lambda w: maml(w, batches, test, ft, np), (w,), (v,))
    assert_close(g, jax.grad(f_jax)(w))
    assert_close(hv, jax.jvp(jax.grad(f_jax), (w,), (v,))[1])


def saddle(start, T, xp, steps=4):
    """A min-max problem solved by inner gradient steps: the follower ascends in y, the leader's objective
    is read at the follower's answer, and its gradient flows through the follower's steps."""

    def f(x, y):
        return xp.sum(x**2) - xp.sum(y**2) + xp.sum(xp.sin(x) * y) + 0.1 * xp.sum(x * y**3)

    y = xp.zeros(2)
    for _ in range(steps):
        y = y + 0.3 * T.grad(f, argnums=1)(start, y)
    return f(start, y)


def test_saddle_point_gradient_through_the_inner_ascent_matches_jax():
    x = np.array([0.4, -0.3])
    assert_close(ft.grad(saddle)(x, ft, np), jax.grad(lambda x: saddle(x, jax, jnp))(x))
    assert_close(ft.hessian(lambda x: saddle(x, ft, np))(x), jax.hessian(lambda x: saddle(x, jax, jnp))(x))


def particle(w, T, xp, steps=20, dt=0.05):
    """A particle pushed by the gradient of a potential whose strength is ``w``; the miss distance of
    where it lands, differentiated with respect to w (GradBench's ``particle``, in miniature)."""

    upper = xp.stack([xp.asarray(10.0), 10.0 - w[1]])  # the charges' positions

    def potential(p):
        return w[0] / xp.sqrt(xp.sum((p - upper) ** 2)) + w[0] / xp.sqrt(xp.sum((p - xp.array([10.0, 0.0])) ** 2))

    p, velocity = xp.array([0.0, 8.0]), xp.array([0.75, 0.0])
    for _ in range(steps):
        velocity = velocity - dt * T.grad(potential)(p)
        p = p + dt * velocity
    return p[0] ** 2


def test_particle_pushed_by_a_gradient_matches_jax():
    w = np.array([0.5, 0.2])
    assert_close(ft.grad(particle)(w, ft, np), jax.grad(lambda w: particle(w, jax, jnp))(w))


def test_no_perturbation_confusion():
    """Siskind and Pearlmutter's examples: the inner derivative's variable is not the outer one, even when
    the inner function closes over the outer variable or is called at it."""
    # d/dx [x · d/dy (x + y)] = d/dx [x] = 1 (confusing the two perturbations gives 2)
    assert_close(ft.grad(lambda x: x * ft.grad(lambda y: x + y)(1.0))(1.0), 1.0)
    # d/dx [d/dy (x y) at y = x] = d/dx [x] = 1 (the inner variable is a copy, not x itself)
    assert_close(ft.grad(lambda x: ft.grad(lambda y: x * y)(x))(3.0), 1.0)
    # the same through forward mode and a vector: d/dx jvp(y ↦ x·y)(x; 1) = 1 per element
    assert_close(ft.jacfwd(lambda x: ft.jvp(lambda y: x * y, (x,), (np.ones(3),))[1])(np.ones(3)), np.eye(3))
    # a constant passed to the inner grad, the outer variable reached by closure only
    assert_close(ft.grad(lambda x: ft.grad(lambda y: np.sin(x * y))(2.0))(0.5),
                 jax.grad(lambda x: jax.grad(lambda y: jnp.sin(x * y))(2.0))(0.5))  # fmt: skip


def branchy_inner(x):
    def inner(y):
        return np.sum(y**3) if np.sum(y) > 0 else np.sum(np.sin(y))

    return np.sum(ft.grad(inner)(x) ** 2)


@pytest.mark.parametrize("tier", TIERS)
def test_guards_inside_the_inner_function_retrace_the_outer_tape(tier):
    g = ft.grad(branchy_inner)
    with tiers.only(tier):
        up, down = g(np.ones(3)), g(-np.ones(3))
        assert_close(up, 36.0 * np.ones(3))  # d/dx Σ (3x²)² = 36 x³
        assert_close(down, -2.0 * np.cos(-1.0) * np.sin(-1.0) * np.ones(3))  # d/dx Σ cos² x
        assert len(g.cache) == 2  # one tape per branch of the inner function
        assert_close(g(2.0 * np.ones(3)), 36.0 * 8.0 * np.ones(3))


def test_inner_vjp_function_called_after_the_inner_transformation_returned():
    def f(x):
        out, back = ft.vjp(lambda y: np.tanh(y) * y, x)
        first = back(np.ones(3))[0]
        return np.sum(out) + np.sum(back(x)[0] * first)

    def f_jax(x):
        out, back = jax.vjp(lambda y: jnp.tanh(y) * y, x)
        first = back(jnp.ones(3))[0]
        return jnp.sum(out) + jnp.sum(back(x)[0] * first)

    x = RNG.normal(size=3)
    assert_close(ft.grad(f)(x), jax.grad(f_jax)(x))


# one case per kind of primitive (and the tricky elementwise ones): its rules differentiated to third order
NESTED_CASES = ["tanh", "power", "hypot", "logaddexp", "maximum", "where-bcast", "sum-axis(2,0)-keepTrue",
                "prod-axis1-keepTrue", "max-axis0-keepFalse", "logsumexp-axis-1-keepFalse", "cumsum-axis1",
                "broadcast-implicit", "transpose-axes", "matmul-batch-bcast", "solve-batched",
                "solve-triangular-upper-t", "slogdet-sign", "cholesky-batched", "eigh-batched", "svd-wide-batched",
                "qr-tall", "qr-wide-batched", "qr-complete", "lu-solve-transposed", "take-two-keys", "take-axis-argmax",
                "scatter-add-min", "scatter-at-argmax"]  # fmt: skip


def _nested_case(name):
    found = [c for c in PRIMITIVE_CASES if c.name == name]
    return found[0] if found else None


@pytest.mark.parametrize("name", NESTED_CASES)
def test_third_order_through_each_kind_of_rule(name):
    case = _nested_case(name)
    if case is None:
        pytest.fail(f"no oracle case named {name!r}")
    rng = case.rng()
    args = case.inputs(rng)
    loss = scalar_loss(case, args, rng)
    report = check(loss, *args, namespace=True, kinds=("nested",), fd=case.smooth, name=name)
    assert report.passed, str(report)
    assert [r.kind for r in report.results] == ["nested"]


def test_nested_case_names_exist():
    missing = [n for n in NESTED_CASES if _nested_case(n) is None]
    assert not missing, f"NESTED_CASES names no oracle case: {missing}"


def test_every_differentiable_primitive_has_rules_in_primitives():
    from fasttape import rules
    from fasttape.primitives import PRIMITIVES

    missing = [p.name for p in PRIMITIVES if p.differentiable and not (p.kind in rules._VJP and p.kind in rules._JVP)]
    assert not missing, f"no JVP/VJP rule in fasttape/rules.py for {missing}"


def test_value_grad_and_hvp_inside_a_traced_function_matches_jax():
    y = np.array([0.5, -1.0])

    def outer(x, T, xp):
        f = lambda a, b: xp.sum(xp.sin(a) * b**2)  # noqa: E731
        if T is ft:
            value, (ga, _), (_, hb) = ft.value_grad_and_hvp(f, (x, y), (x, y))
        else:
            value, (ga, _) = jax.value_and_grad(f, argnums=(0, 1))(x, y)
            hb = jax.jvp(jax.grad(f, argnums=(0, 1)), (x, y), (x, y))[1][1]
        return value + xp.sum(ga * hb)

    x = np.array([0.3, 1.2])
    assert_close(ft.grad(outer)(x, ft, np), jax.grad(lambda x: outer(x, jax, jnp))(x))


def test_an_empty_gather_inside_a_nested_jvp_finds_its_empty_positions():
    """An empty gather's pool block starts where the next block does (the oracle's random programs found
    a nested JVP that could not record one)."""

    def f(x):
        empty = np.concatenate([x[:, :0], x[:, :0]], axis=1)  # a gather of no positions
        return np.sum(np.tanh(np.concatenate([x, x], axis=1))) + np.sum(empty)

    x = np.array([[0.3, -0.7, 1.1]])
    v = np.array([[1.0, 0.5, -2.0]])
    inner = lambda y: ft.jvp(f, (y,), (v,))[1]  # noqa: E731
    got = ft.grad(inner)(x)
    doubled = lambda z: jnp.sum(jnp.tanh(jnp.concatenate([z, z], axis=1)))  # noqa: E731
    expected = jax.grad(lambda y: jax.jvp(doubled, (y,), (v,))[1])(x)
    assert_close(got, expected)
