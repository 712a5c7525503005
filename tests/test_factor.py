"""Cholesky factors and triangular solves (numpy.linalg.cholesky, scipy.linalg's cholesky, cho_factor,
cho_solve, solve_triangular, solve(assume_a='pos')): a Gaussian-process likelihood against JAX to second
order in both tiers, SciPy's functions recorded while tracing, errors that name the function and the
batch element and leave the tape usable.  The oracle checks every case of each primitive in every
derivative kind."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.linalg

import fasttape as ft
from fasttape import kernels as K
from fasttape import lapack, scipy_linalg, tiers
from tests.helpers import load_with_edited_row

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jsla = pytest.importorskip("jax.scipy.linalg")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(11)
TIERS = ("compiled", "executor")
G3 = RNG.normal(size=(3, 3))
SPD3 = G3 @ G3.T / 3 + np.eye(3)
NOT_PD = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
X = RNG.normal(size=(12, 2))
Y = np.sin(X[:, 0]) + 0.1 * RNG.normal(size=12)
P = np.array([0.1, 0.2, -1.0])


def gp_nll(log_params, X, y, xp=np, la=scipy.linalg):
    """The issue's Gaussian-process negative log marginal likelihood, as a user writes it."""
    ell, sf, sn = xp.exp(log_params)
    d2 = xp.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    K = sf**2 * xp.exp(-0.5 * d2 / ell**2) + (sn**2 + 1e-8) * xp.eye(len(y))
    L = xp.linalg.cholesky(K)
    alpha = la.cho_solve((L, True), y)
    return 0.5 * y @ alpha + xp.sum(xp.log(xp.diag(L))) + 0.5 * len(y) * xp.log(2 * xp.pi)


def gp_nll_jax(log_params, X, y):
    return gp_nll(log_params, X, y, jnp, jsla)


@pytest.mark.parametrize("tier", TIERS)
def test_a_gaussian_process_likelihood_has_jaxs_value_gradient_and_hessian(tier):
    with tiers.only(tier):
        value, grad = ft.value_and_grad(gp_nll)(P, X, Y)
        hessian = ft.hessian(gp_nll)(P, X, Y)
    np.testing.assert_allclose(value, gp_nll_jax(P, X, Y), rtol=1e-12)
    np.testing.assert_allclose(grad, jax.grad(gp_nll_jax)(P, X, Y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, jax.hessian(gp_nll_jax)(P, X, Y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_triangular_solves_in_every_mode_have_jaxs_derivatives(tier):
    T = np.tril(RNG.normal(size=(2, 3, 3))) + 2 * np.eye(3)
    B = RNG.normal(size=(2, 3, 2))
    V = RNG.normal(size=T.shape)
    for trans in (0, 1):
        for lower in (True, False):
            for unit in (False, True):

                def f(T, B, xp=np, la=scipy.linalg, trans=trans, lower=lower, unit=unit):
                    X = la.solve_triangular(T, B, trans=trans, lower=lower, unit_diagonal=unit)
                    return xp.sum(xp.sin(X)) + xp.sum(X * X)

                def f_jax(T, B, f=f):
                    return f(T, B, jnp, jsla)

                with tiers.only(tier):
                    grads = ft.grad(f, argnums=(0, 1))(T, B)
                    hv = ft.hvp(lambda T: f(T, B), (T,), (V,))
                expected = jax.grad(f_jax, argnums=(0, 1))(T, B)
                for got, want in zip(grads, expected):
                    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
                want_hv = jax.jvp(jax.grad(lambda T: f_jax(T, B)), (T,), (V,))[1]
                np.testing.assert_allclose(hv, want_hv, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_the_triangular_product_of_both_tiers_reads_one_triangle(lower, transposed):
    # BLAS's dtrmm on the row-major buffers (compiled) and SciPy's (executor): op(tri(T)) B, the other
    # triangle of T never read
    T, B = RNG.normal(size=(4, 4)), RNG.normal(size=(4, 3))
    expected = (np.tril(T) if lower else np.triu(T)).T @ B if transposed else (np.tril(T) if lower else np.triu(T)) @ B
    compiled = numba.njit(lambda T, B: lapack.triangular_times(T, B, lower, transposed))
    for product in (lapack.triangular_times(T, B, lower, transposed), compiled(T, B)):
        np.testing.assert_allclose(product, expected, rtol=1e-13, atol=1e-14)


def test_values_and_shapes_are_numpys_and_scipys():
    batch = np.stack([SPD3, 2 * SPD3])
    b = RNG.normal(size=3)
    checks = [
        (lambda A: np.linalg.cholesky(A), batch),
        (lambda A: np.linalg.cholesky(A, upper=True), SPD3),
        (lambda A: scipy.linalg.cholesky(A), SPD3),
        (lambda A: scipy.linalg.cholesky(A, lower=True), SPD3),
        (lambda A: scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), b), SPD3),
        (lambda A: scipy.linalg.solve(A, b, assume_a="pos"), SPD3),
        (lambda A: scipy.linalg.solve(A, b, assume_a="sym"), SPD3),
        (lambda A: scipy.linalg.solve(A, b, transposed=True), G3 + 3 * np.eye(3)),
        (lambda A: scipy.linalg.solve(A, b, assume_a="lower triangular"), SPD3),
        (lambda A: scipy.linalg.solve_triangular(A, b, trans="T"), SPD3),
        (lambda A: scipy.linalg.solve_triangular(A, np.stack([b, b], axis=1), lower=True), SPD3),
    ]
    for fn, A in checks:
        expected = fn(A)
        if isinstance(expected, tuple):
            expected = expected[0]
        traced = ft.trace(fn, A)(A)
        assert np.shape(traced) == np.shape(expected)
        np.testing.assert_allclose(traced, expected, rtol=1e-12, atol=1e-14)
    # SciPy leaves arbitrary values in the factor's other triangle (cho_solve never reads it); fasttape zeros
    factor = ft.trace(lambda A: scipy.linalg.cho_factor(A)[0], SPD3)(SPD3)
    np.testing.assert_allclose(factor, np.triu(scipy.linalg.cho_factor(SPD3)[0]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("tier", TIERS)
def test_a_matrix_not_positive_definite_at_call_time_names_cholesky_and_its_batch_element(tier):
    g = ft.grad(lambda A: np.sum(np.linalg.cholesky(A)))
    batch = np.stack([SPD3, SPD3])
    with tiers.only(tier):
        expected = g(batch)
        with pytest.raises(
            np.linalg.LinAlgError, match=r"cholesky: matrix is not positive definite \(batch element 1\)"
        ):
            g(np.stack([SPD3, NOT_PD]))
        np.testing.assert_array_equal(g(batch), expected)  # the tape and its workspace still serve


@pytest.mark.parametrize("tier", TIERS)
def test_a_zero_on_the_diagonal_at_call_time_names_solve_triangular_and_its_batch_element(tier):
    T = np.tril(SPD3)
    g = ft.grad(lambda T: np.sum(scipy.linalg.solve_triangular(T, np.ones(3), lower=True)))
    singular = T.copy()
    singular[1, 1] = 0.0
    with tiers.only(tier):
        expected = g(np.stack([T, T]))
        with pytest.raises(np.linalg.LinAlgError, match=r"solve_triangular: singular matrix.*\(batch element 0\)"):
            g(np.stack([singular, T]))
        np.testing.assert_array_equal(g(np.stack([T, T])), expected)


@pytest.mark.parametrize("tier", TIERS)
def test_nan_or_inf_in_the_matrix_gives_jaxs_factor(tier):
    f = ft.trace(lambda A: np.linalg.cholesky(A), SPD3)
    from jax.lax import linalg

    for i, j, value in ((2, 0, np.nan), (1, 1, np.inf), (0, 0, np.nan), (2, 1, -np.inf)):
        A = SPD3.copy()
        A[i, j] = A[j, i] = value
        with tiers.only(tier):
            L = f(A)
        expected = np.asarray(linalg.cholesky(A, symmetrize_input=False))  # where LAPACK stops: NaN
        np.testing.assert_array_equal(L, expected)


def test_errors_at_trace_time_name_the_problem():
    with pytest.raises(np.linalg.LinAlgError, match=r"not positive definite \(batch element 0\)"):
        ft.grad(lambda A: np.sum(np.linalg.cholesky(A)))(NOT_PD)
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        ft.grad(lambda A: np.sum(np.linalg.cholesky(A)))(np.ones((2, 3)))
    with pytest.raises(
        ValueError, match=r"solve_triangular: expected a square matrix \(\.\.\., n, n\), got shape \(2, 3\)"
    ):
        ft.grad(lambda A: np.sum(scipy.linalg.solve_triangular(A, np.ones(2))))(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"right-hand side of shape \(4,\) does not fit the matrix of shape \(3, 3\)"):
        ft.grad(lambda A: np.sum(scipy.linalg.solve_triangular(A, np.ones(4))))(SPD3)
    with pytest.raises(NotImplementedError, match="assume_a='banded'.*assume_a='gen'"):
        ft.grad(lambda A: np.sum(scipy.linalg.solve(A, np.ones(3), assume_a="banded")))(SPD3)


def test_scipy_is_itself_outside_the_trace_and_a_name_imported_early_gets_a_fix():
    from scipy.linalg import cho_solve  # bound before the trace: SciPy's own function

    original = scipy.linalg.cho_solve
    ft.grad(lambda A: np.sum(scipy.linalg.cho_solve((np.linalg.cholesky(A), True), np.ones(3))))(SPD3)
    assert scipy.linalg.cho_solve is original  # restored after the trace
    with pytest.raises(ft.UnsupportedFunctionError, match=r"call fasttape\.scipy_linalg\.cho_solve there"):
        ft.grad(lambda A: np.sum(cho_solve((np.linalg.cholesky(A), True), np.ones(3))))(SPD3)
    A = SPD3
    direct = ft.grad(lambda A: np.sum(scipy_linalg.cho_solve((np.linalg.cholesky(A), True), np.ones(3))))(A)
    expected = jax.grad(lambda A: jnp.sum(jsla.cho_solve((jnp.linalg.cholesky(A), True), jnp.ones(3))))(A)
    np.testing.assert_allclose(direct, expected, rtol=1e-10)


def test_the_factor_rows_are_listed_with_their_extents_and_mode():
    tape = ft.trace(lambda A, B: scipy.linalg.solve_triangular(np.linalg.cholesky(A), B, lower=True), SPD3, G3)
    listing = str(tape)
    assert "cholesky[1x3x3]" in listing and "trisolve[1x3x3 \\ 3x3 lower]" in listing


@pytest.mark.parametrize(
    ("op", "column", "value", "message"),
    [
        ("OP_CHOLESKY", K.C_P1, 0, r"\(cholesky\): empty matrices"),
        ("OP_CHOLESKY", K.C_P1, 4, r"\(cholesky\): operand of size 9 is not 1 matrices of 4x4"),
        ("OP_TRISOLVE", K.C_P3, 32, r"\(trisolve\): mode 32 is not a combination"),
        ("OP_TRISOLVE", K.C_P2, 5, r"\(trisolve\): sizes 3 -> 3 do not match 1 right-hand sides of 3x5"),
    ],
)
def test_a_crafted_factor_row_is_refused_when_loaded(op, column, value, message):
    tape = ft.trace(lambda A, b: np.sum(scipy.linalg.cho_solve((np.linalg.cholesky(A), True), b)), SPD3, np.ones(3))
    with pytest.raises(ValueError, match=message):
        load_with_edited_row(tape, getattr(K, op), column, value)


def covariance_score(A, xp=np):
    """Eigenvalues and eigenvectors of a symmetric matrix, as PCA or a spectral penalty uses them."""
    S = A @ A.T + xp.eye(A.shape[-1])
    w, V = xp.linalg.eigh(S)
    return xp.sum(xp.log(w)) + xp.sum((V[:, -1] * xp.arange(1.0, 4.0)) ** 2) + xp.sum(xp.linalg.eigvalsh(S) ** 2)


@pytest.mark.parametrize("tier", TIERS)
def test_eigh_and_eigvalsh_have_jaxs_derivatives_to_second_order(tier):
    v = RNG.normal(size=G3.shape)
    with tiers.only(tier):
        grad = ft.grad(covariance_score)(G3)
        hv = ft.hvp(covariance_score, (G3,), (v,))
        hessian = ft.hessian(covariance_score)(G3)

    def score_jax(A):
        return covariance_score(A, jnp)

    np.testing.assert_allclose(grad, jax.grad(score_jax)(G3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(score_jax), (G3,), (v,))[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, jax.hessian(score_jax)(G3), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_eigenvalues_alone_stay_differentiable_where_eigenvalues_repeat(tier):
    # at the identity every eigenvalue is 1: eigenvectors have no derivative, eigenvalues do (as in JAX)
    f = ft.grad(lambda A: np.sum(np.linalg.eigvalsh(A) ** 2))
    with tiers.only(tier):
        grad = f(np.eye(3))
    np.testing.assert_allclose(grad, jax.grad(lambda A: jnp.sum(jnp.linalg.eigvalsh(A) ** 2))(np.eye(3)), rtol=1e-12)
    np.testing.assert_allclose(grad, 2 * np.eye(3), rtol=1e-12)


def test_eigh_values_are_lapacks_dsyevd_as_numpy_and_jax_give_them():
    batch = np.stack([SPD3, G3 + G3.T])
    w, V = ft.trace(lambda A: tuple(np.linalg.eigh(A)), batch)(batch)
    w_np, V_np = np.linalg.eigh(batch)
    np.testing.assert_allclose(w, w_np, rtol=1e-12)
    np.testing.assert_allclose(np.abs(V), np.abs(V_np), rtol=1e-10, atol=1e-12)  # signs: LAPACK builds may differ
    w_jax, V_jax = jnp.linalg.eigh(batch)
    np.testing.assert_allclose(V, V_jax, rtol=1e-10, atol=1e-12)  # the same routine as JAX: the same signs
    w_sp = ft.trace(lambda A: scipy.linalg.eigh(A, lower=False, eigvals_only=True), SPD3)(SPD3)
    np.testing.assert_allclose(w_sp, scipy.linalg.eigh(SPD3, eigvals_only=True), rtol=1e-12)
    with pytest.raises(NotImplementedError, match=r"generalized problem \(b\)"):
        ft.grad(lambda A: np.sum(scipy.linalg.eigh(A, np.eye(3))[0]))(SPD3)


def test_the_interception_restores_whatever_scipy_linalg_held_before_the_trace(monkeypatch):
    scipys = scipy.linalg.cho_solve

    def users_own(c_and_lower, b, **kwargs):  # a user's (or a library's) patch of SciPy's function
        return scipys(c_and_lower, b, **kwargs)

    monkeypatch.setattr(scipy.linalg, "cho_solve", users_own)
    ft.grad(lambda A: np.sum(scipy.linalg.cho_solve((np.linalg.cholesky(A), True), np.ones(3))))(SPD3)
    assert scipy.linalg.cho_solve is users_own


def test_output_parts_are_the_packed_layout_the_kernels_size():
    """``factor.output_parts`` (how nested derivatives unpack a factorisation's output) adds up to the
    kernels' own size of one batch element's output, for every primitive and shape."""
    from fasttape.families import factor

    for op in (factor.OP_CHOLESKY, factor.OP_TRISOLVE, factor.OP_EIGH, factor.OP_SVD, factor.OP_QR, factor.OP_LU,
               factor.OP_PERMUTE):  # fmt: skip
        for n, m in ((3, 3), (4, 2), (2, 5)):
            for mode in (0, factor.COMPLETE):
                parts = factor.output_parts(op, n, m, mode)
                assert sum(r * c for r, c in parts) == factor._out_size(op, n, m, mode), (op, n, m, mode)
