"""Rules users add themselves (ft.custom_vjp, ft.custom_jvp, ft.stop_gradient), with JAX's decorator API: the
issue's safe_norm, rules that differ from the body's derivative (so the rule is provably the one used),
vector outputs, nondiff_argnums, pytrees and keywords, second order against JAX's reverse over reverse,
rules traced once and replayed compiled (no Python call per gradient), oracle.check against the user's
JAX version, and errors that say what to fix."""

from __future__ import annotations

import numpy as np
import pytest

import fasttape as ft
import oracle
from fasttape import tiers

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

TIERS = ("compiled", "executor")
RNG = np.random.default_rng(41)
X = np.array([1.0, 2.0, -0.5])
CALLS = {"fwd": 0, "bwd": 0, "jvp": 0}


def safe_norms(xp, custom_vjp):
    """The issue's safe_norm, in NumPy with fasttape or in JAX: a rule whose gradient at 0 is 0."""

    @custom_vjp
    def safe_norm(x):
        return xp.sqrt(xp.sum(x * x))

    def fwd(x):
        CALLS["fwd"] += 1
        n = safe_norm(x)
        return n, (x, n)

    def bwd(res, g):
        CALLS["bwd"] += 1
        x, n = res
        return (g * x / xp.maximum(n, 1e-12),)

    safe_norm.defvjp(fwd, bwd)
    return safe_norm


safe_norm = safe_norms(np, ft.custom_vjp)
jax_safe_norm = safe_norms(jnp, jax.custom_vjp)


def energy(x, xp=np, norm=safe_norm):
    return norm(x) ** 2 + xp.sum(xp.sin(x)) * norm(2.0 * x) + xp.sum(x**3)


def jax_energy(x):
    return energy(x, jnp, jax_safe_norm)


def jax_hessian(f):  # reverse over reverse: JAX has no forward mode through a custom_vjp
    return jax.jacrev(jax.jacrev(f))


@pytest.mark.parametrize("tier", TIERS)
def test_the_issues_safe_norm_has_jaxs_derivatives_to_second_order(tier):
    v = RNG.normal(size=3)
    with tiers.only(tier):
        value, grad = ft.value_and_grad(energy)(X)
        hessian = ft.hessian(energy)(X)
        hv = ft.hvp(energy, (X,), (v,))
        zero_grad = ft.grad(safe_norm)(np.zeros(3))
        zero_hessian = ft.hessian(safe_norm)(np.zeros(3))
    np.testing.assert_allclose(value, jax_energy(X), rtol=1e-14)
    np.testing.assert_allclose(grad, jax.grad(jax_energy)(X), rtol=1e-12)
    np.testing.assert_allclose(hessian, jax_hessian(jax_energy)(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hv, jax_hessian(jax_energy)(X) @ v, rtol=1e-12)
    # at 0 the body's own gradient is NaN (0/0); the rule's is 0, and its derivative 1/1e-12 on the diagonal
    np.testing.assert_array_equal(zero_grad, np.zeros(3))
    np.testing.assert_allclose(zero_hessian, jax_hessian(jax_safe_norm)(np.zeros(3)), rtol=1e-14)
    assert np.isnan(ft.grad(lambda x: np.sqrt(np.sum(x * x)))(np.zeros(3))).all()


def test_the_rules_are_traced_once_and_replayed_compiled():
    g = ft.grad(energy)
    g(X)
    before = dict(CALLS)
    for k in range(5):
        g(X * (k + 2.0))
    assert CALLS == before  # no Python call of fwd or bwd per gradient: the rule is on the tape


def straight_through(xp, custom_jvp):
    """round(x) with the identity's derivative (a straight-through estimator): the rule, not the body's
    zero derivative."""

    @custom_jvp
    def ste_round(x):
        return xp.round(x)

    @ste_round.defjvp
    def _(primals, tangents):
        CALLS["jvp"] += 1
        (x,), (t,) = primals, tangents
        return ste_round(x), t

    return ste_round


def softplus_rules(xp, custom_jvp):
    """log(1 + e^x) with the stable rule d = sigmoid(x), written with defjvps."""

    @custom_jvp
    def softplus(x):
        return xp.logaddexp(0.0, x)

    softplus.defjvps(lambda t, ans, x: t / (1.0 + xp.exp(-x)))
    return softplus


def quantized_model(x, xp=np, rules=None):
    ste_round, softplus = rules
    return xp.sum(softplus(3.0 * x) * ste_round(4.0 * x) ** 2) + xp.sum(softplus(x) ** 3)


NP_RULES = (straight_through(np, ft.custom_jvp), softplus_rules(np, ft.custom_jvp))
JAX_RULES = (straight_through(jnp, jax.custom_jvp), softplus_rules(jnp, jax.custom_jvp))


@pytest.mark.parametrize("tier", TIERS)
def test_custom_jvp_rules_serve_every_transformation(tier):
    x = np.array([0.3, -1.2, 2.05, 0.61])
    v = RNG.normal(size=4)

    def f(x):
        return quantized_model(x, np, NP_RULES)

    def f_jax(x):
        return quantized_model(x, jnp, JAX_RULES)

    with tiers.only(tier):
        value, grad = ft.value_and_grad(f)(x)
        out, tangent = ft.jvp(f, (x,), (v,))
        hv = ft.hvp(f, (x,), (v,))
        hessian = ft.hessian(f)(x)
    np.testing.assert_allclose(value, f_jax(x), rtol=1e-14)
    np.testing.assert_allclose(grad, jax.grad(f_jax)(x), rtol=1e-12)
    np.testing.assert_allclose(tangent, jax.jvp(f_jax, (x,), (v,))[1], rtol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(f_jax), (x,), (v,))[1], rtol=1e-12)
    np.testing.assert_allclose(hessian, jax.hessian(f_jax)(x), rtol=1e-12, atol=1e-14)
    assert np.all(grad != 0.0)  # the straight-through rule, not round's zero derivative


def implicit_solvers(xp, custom_vjp):
    """x = A⁻¹ b by a fixed number of Jacobi sweeps, with the implicit function theorem as its rule
    (b̄ = A⁻ᵀ x̄, Ā = -b̄ xᵀ) instead of the derivative of the sweeps: a vector output; the sweep count is a
    nondiff argument."""

    def jacobi(sweeps, A, b):
        x = b / xp.diag(A)
        for _ in range(sweeps):
            x = (b - (A @ x - xp.diag(A) * x)) / xp.diag(A)
        return x

    solve = custom_vjp(jacobi, nondiff_argnums=(0,))

    def fwd(sweeps, A, b):
        x = solve(sweeps, A, b)
        return x, (A, x)

    def bwd(sweeps, res, g):
        A, x = res
        b_bar = xp.linalg.solve(A.T, g)
        return -xp.outer(b_bar, x), b_bar

    solve.defvjp(fwd, bwd)
    return solve


@pytest.mark.parametrize("tier", TIERS)
def test_a_vector_output_rule_with_nondiff_argnums_has_jaxs_derivatives(tier):
    A = 4.0 * np.eye(3) + 0.3 * RNG.normal(size=(3, 3))
    b = RNG.normal(size=3)
    solve, jax_solve = implicit_solvers(np, ft.custom_vjp), implicit_solvers(jnp, jax.custom_vjp)

    def loss(A, b, xp=np, solve=solve):
        x = solve(60, A, b)
        return xp.sum(x**2 * xp.arange(1.0, 4.0)) + xp.sum(xp.sin(x))

    def jax_loss(A, b):
        return loss(A, b, jnp, jax_solve)

    with tiers.only(tier):
        grads = ft.grad(loss, argnums=(0, 1))(A, b)
        hessian = ft.hessian(lambda b: loss(A, b))(b)
    for ours, theirs in zip(grads, jax.grad(jax_loss, argnums=(0, 1))(A, b)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(hessian, jax_hessian(lambda b: jax_loss(A, b))(b), rtol=1e-10, atol=1e-12)

    def exact(b):  # the rule is the exact solution's derivative
        x = jnp.linalg.solve(A, b)
        return jnp.sum(x**2 * jnp.arange(1.0, 4.0)) + jnp.sum(jnp.sin(x))

    np.testing.assert_allclose(grads[1], jax.grad(exact)(b), rtol=1e-10)


def test_pytrees_keywords_and_constants():
    @ft.custom_jvp
    def scaled(params, x, *, scale=None):
        return params["w"] * x + params["b"]

    @ft.custom_jvp
    def affine(params, x):
        return params["w"] * x + params["b"]

    @affine.defjvp
    def _(primals, tangents):
        (p, x), (tp, tx) = primals, tangents
        return affine(p, x), tp["w"] * x + p["w"] * tx + tp["b"]

    params = {"w": np.array([1.0, -2.0]), "b": np.array([0.5, 0.25])}
    x = np.array([3.0, 4.0])
    grads = ft.grad(lambda p, x: np.sum(affine(p, x=x) ** 2), argnums=(0, 1))(params, x)
    expected = jax.grad(lambda p, x: jnp.sum((p["w"] * x + p["b"]) ** 2), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(grads[0]["w"], expected[0]["w"], rtol=1e-14)
    np.testing.assert_allclose(grads[0]["b"], expected[0]["b"], rtol=1e-14)
    np.testing.assert_allclose(grads[1], expected[1], rtol=1e-14)
    np.testing.assert_allclose(affine(params, x), params["w"] * x + params["b"])  # outside a trace: the body
    # constants only inside a trace: the body, no rule needed (scaled has none)
    assert ft.grad(lambda x: np.sum(x) + np.sum(scaled(params, np.ones(2))))(x).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="keyword-only arguments"):
        ft.grad(lambda x: np.sum(scaled(params, x, scale=2.0)))(x)


def test_stop_gradient_is_jaxs():
    def f(x, xp=np, stop=ft.stop_gradient):
        return xp.sum(x**2 * stop(xp.sin(x)) + stop({"a": x})["a"])

    x = np.array([0.4, -1.0])
    np.testing.assert_allclose(ft.grad(f)(x), jax.grad(lambda x: f(x, jnp, jax.lax.stop_gradient))(x), rtol=1e-14)
    np.testing.assert_allclose(ft.hessian(f)(x), jax.hessian(lambda x: f(x, jnp, jax.lax.stop_gradient))(x))
    assert ft.stop_gradient(x) is x


def test_oracle_check_holds_a_rule_to_jax_and_to_finite_differences():
    report = oracle.check(energy, X, jax_fn=jax_energy)
    assert report.passed, report
    wrong = ft.custom_vjp(lambda x: np.sum(np.sin(x)))
    wrong.defvjp(lambda x: (wrong(x), x), lambda x, g: (g * np.sin(x),))  # should be cos
    report = oracle.check(lambda x: wrong(x), X)
    assert not report.passed  # the replayed rule agrees with itself, but not with finite differences
    assert "finite differences" in str(report)


def test_errors_say_what_to_fix():
    undefined = ft.custom_vjp(lambda x: np.sum(x))
    with pytest.raises(TypeError, match=r"no VJP rule was defined.*defvjp\(fwd, bwd\)"):
        ft.grad(undefined)(X)
    no_jvp = ft.custom_jvp(lambda x: np.sum(x))
    with pytest.raises(TypeError, match=r"no JVP rule was defined.*defjvp"):
        ft.grad(no_jvp)(X)
    bad = ft.custom_vjp(lambda x: np.sum(x))
    bad.defvjp(lambda x: np.sum(x), lambda res, g: (g,))
    with pytest.raises(TypeError, match=r"fwd rule .* must return a pair \(output, residuals\)"):
        ft.grad(bad)(X)
    bad.defvjp(lambda x: (np.sum(x), x), lambda res, g: (g, g))
    with pytest.raises(TypeError, match=r"one cotangent per differentiated argument \(1\)"):
        ft.grad(bad)(X)
    bad.defvjp(lambda x: (np.sum(x), x), lambda res, g: (np.ones(2),))
    with pytest.raises(TypeError, match=r"cotangent of shape \(2,\) for an argument of shape \(3,\)"):
        ft.grad(bad)(X)
    shapes = ft.custom_jvp(lambda x: x * 2.0)
    shapes.defjvp(lambda p, t: (p[0] * 2.0, np.sum(t[0])))
    with pytest.raises(TypeError, match=r"a tangent output of shape \(\) for a primal output of shape \(3,\)"):
        ft.grad(lambda x: np.sum(shapes(x)))(X)
    with pytest.raises(NotImplementedError, match="symbolic_zeros"):
        bad.defvjp(lambda x: (x, x), lambda r, g: (g,), symbolic_zeros=True)
    with pytest.raises(ValueError, match="nondiff_argnums"):
        ft.grad(lambda x: ft.custom_jvp(lambda x: x, nondiff_argnums=(3,))(x).sum())(X)
