"""Singular value and QR decompositions (numpy.linalg's svd, svdvals, norm 2 / -2 / 'nuc', cond, pinv, lstsq,
matrix_rank and qr; scipy.linalg's svd, svdvals, qr, pinv and lstsq): a least-squares model against JAX to
second order in both tiers, values as NumPy's and SciPy's LAPACK calls give them, JAX's conventions where
singular values repeat or vanish, guards on the rank, and errors that say what to do instead.  The oracle
checks every case of both primitives in every derivative kind."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import fasttape as ft
from fasttape import kernels as K
from fasttape import tiers
from tests.helpers import load_with_edited_row

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jsla = pytest.importorskip("jax.scipy.linalg")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(23)
TIERS = ("compiled", "executor")
TALL = RNG.normal(size=(6, 3))
WIDE = RNG.normal(size=(3, 5))
B6 = RNG.normal(size=6)


def low_rank_fit(A, b, xp=np):
    """What a regression or a low-rank model does with a matrix: solve, regularise by its spectrum, and
    read its orthogonal factors."""
    x = xp.linalg.lstsq(A, b)[0]
    U, s, Vt = xp.linalg.svd(A, full_matrices=False)
    Q, R = xp.linalg.qr(A)
    return (xp.sum(x**2) + xp.linalg.norm(A, "nuc") + xp.linalg.norm(A, 2) ** 2 + xp.linalg.cond(A)
            + xp.sum(xp.linalg.pinv(A) ** 2) + xp.sum(U[:, 0] * b) + xp.sum(Vt[-1] ** 3) + xp.sum(xp.sin(Q) * R[0, 0])
            + xp.sum(xp.diagonal(R) ** 2))  # fmt: skip


@pytest.mark.parametrize("tier", TIERS)
def test_a_least_squares_model_has_jaxs_value_gradient_hvp_and_hessian(tier):
    v = RNG.normal(size=TALL.shape)
    with tiers.only(tier):
        value, grad = ft.value_and_grad(low_rank_fit)(TALL, B6)
        hv = ft.hvp(lambda A: low_rank_fit(A, B6), (TALL,), (v,))
        hessian = ft.hessian(low_rank_fit)(TALL, B6)

    def jax_fit(A):
        return low_rank_fit(A, B6, jnp)

    np.testing.assert_allclose(value, jax_fit(TALL), rtol=1e-12)
    np.testing.assert_allclose(grad, jax.grad(jax_fit)(TALL), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(jax_fit), (TALL,), (v,))[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, jax.hessian(jax_fit)(TALL), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_wide_matrices_and_batches_have_jaxs_derivatives(tier):
    A = RNG.normal(size=(2, 3, 5))

    def f(A, xp=np):
        U, s, Vt = xp.linalg.svd(A, full_matrices=False)
        Q, R = xp.linalg.qr(A)
        return xp.sum(U * U[..., ::-1]) + xp.sum(s**3) + xp.sum(Vt[..., 0, :] ** 2) + xp.sum(Q[..., 0] * R[..., -1])

    v = RNG.normal(size=A.shape)
    with tiers.only(tier):
        grad = ft.grad(f)(A)
        hv = ft.hvp(f, (A,), (v,))
    np.testing.assert_allclose(grad, jax.grad(lambda A: f(A, jnp))(A), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(lambda A: f(A, jnp)), (A,), (v,))[1], rtol=1e-10, atol=1e-12)


def test_values_are_lapacks_as_numpy_scipy_and_jax_give_them():
    batch = RNG.normal(size=(2, 4, 3))
    U, s, Vt = ft.trace(lambda A: tuple(np.linalg.svd(A, full_matrices=False)), batch)(batch)
    for ours, numpys, jaxs in zip((U, s, Vt), np.linalg.svd(batch, full_matrices=False),
                                  jnp.linalg.svd(batch, full_matrices=False)):  # fmt: skip
        np.testing.assert_allclose(ours, numpys, rtol=1e-12, atol=1e-14)  # signs included: the same dgesdd call
        np.testing.assert_allclose(ours, jaxs, rtol=1e-12, atol=1e-14)
    Q, R = ft.trace(lambda A: tuple(np.linalg.qr(A)), WIDE)(WIDE)
    Q_np, R_np = np.linalg.qr(WIDE)
    np.testing.assert_allclose(Q, Q_np, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R, R_np, rtol=1e-12, atol=1e-14)
    assert ft.trace(lambda A: np.linalg.qr(A, mode="r"), TALL)(TALL).shape == (3, 3)
    # SciPy's shapes and conventions: full Q of a wide matrix, R of mode 'r' padded with zero rows, a tuple
    (R_sp,) = ft.trace(lambda A: scipy.linalg.qr(A, mode="r"), TALL)(TALL)
    np.testing.assert_allclose(R_sp, scipy.linalg.qr(TALL, mode="r")[0], rtol=1e-12, atol=1e-14)
    for ours, scipys in zip(ft.trace(lambda A: scipy.linalg.svd(A), WIDE[:, :3])(WIDE[:, :3]),
                            scipy.linalg.svd(WIDE[:, :3])):  # fmt: skip
        np.testing.assert_allclose(ours, scipys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ft.trace(lambda A: scipy.linalg.pinv(A), TALL)(TALL), scipy.linalg.pinv(TALL),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    np.testing.assert_allclose(ft.trace(lambda A: scipy.linalg.svdvals(A), batch)(batch), scipy.linalg.svdvals(batch),
                               rtol=1e-12)  # fmt: skip
    x, residues, rank, s = ft.trace(lambda A, b: scipy.linalg.lstsq(A, b), TALL, B6)(TALL, B6)
    x_sp, residues_sp, rank_sp, s_sp = scipy.linalg.lstsq(TALL, B6)
    np.testing.assert_allclose(x, x_sp, rtol=1e-10)
    assert np.shape(residues) == np.shape(residues_sp) and rank == rank_sp == 3
    np.testing.assert_allclose(residues, residues_sp, rtol=1e-10)
    np.testing.assert_allclose(s, s_sp, rtol=1e-12)
    x, residuals, rank, s = ft.trace(lambda A, b: np.linalg.lstsq(A, b), WIDE, B6[:3])(WIDE, B6[:3])
    x_np, residuals_np, rank_np, _ = np.linalg.lstsq(WIDE, B6[:3])
    np.testing.assert_allclose(x, x_np, rtol=1e-10)
    assert residuals.shape == residuals_np.shape == (0,) and rank == rank_np == 3


@pytest.mark.parametrize("tier", TIERS)
def test_singular_values_alone_stay_differentiable_where_they_repeat_or_vanish(tier):
    # the identity: every singular value is 1; a tall matrix with a zero column: one singular value is 0.
    # The singular vectors have no derivative there; the values do (as in JAX, whose zeros are symbolic)
    deficient = TALL.copy()
    deficient[:, 1] = 0.0
    for A in (np.eye(3), deficient):
        with tiers.only(tier):
            grad = ft.grad(lambda A: np.linalg.norm(A, "nuc") + np.sum(np.linalg.svd(A, compute_uv=False) ** 2))(A)
        expected = jax.grad(lambda A: jnp.linalg.norm(A, "nuc") + jnp.sum(jnp.linalg.svd(A, compute_uv=False) ** 2))(A)
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_nan_or_inf_in_the_matrix_gives_nan_decompositions(tier):
    svd = ft.trace(lambda A: tuple(np.linalg.svd(A, full_matrices=False)), TALL)
    A = TALL.copy()
    A[2, 1] = np.inf
    with tiers.only(tier):
        assert all(np.isnan(part).all() for part in svd(A))
        assert np.isnan(ft.grad(lambda A: np.linalg.norm(A, 2))(A)).all()
        assert np.isfinite(svd(TALL)[1]).all()  # the tape still works


@pytest.mark.parametrize("tier", TIERS)
def test_a_rank_that_changes_traces_again(tier):
    deficient = TALL.copy()
    deficient[:, 2] = deficient[:, 0]

    def fit(A, b):
        x, _, rank, _ = np.linalg.lstsq(A, b)
        return np.sum(x**2) + rank + np.linalg.matrix_rank(A), rank

    f = ft.value_and_grad(fit, has_aux=True)
    with tiers.only(tier):
        for A in (TALL, deficient, TALL):
            (value, rank), grad = f(A, B6)
            x = np.linalg.lstsq(A, B6)[0]
            assert rank == np.linalg.matrix_rank(A)
            np.testing.assert_allclose(value, np.sum(x**2) + 2 * rank, rtol=1e-10)
            np.testing.assert_allclose(grad, jax.grad(lambda A: jnp.sum(jnp.linalg.lstsq(A, B6)[0] ** 2))(A),
                                       rtol=1e-8, atol=1e-10)  # fmt: skip
    assert len(f.cache) == 2


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(NotImplementedError, match=r"full_matrices=True of a 6x3 matrix.*Pass full_matrices=False"):
        ft.grad(lambda A: np.sum(np.linalg.svd(A)[0]))(TALL)
    square = TALL[:3]  # full_matrices=True is the thin decomposition here
    np.testing.assert_allclose(ft.grad(lambda A: np.sum(np.linalg.svd(A)[0] ** 3))(square),
                               jax.grad(lambda A: jnp.sum(jnp.linalg.svd(A)[0] ** 3))(square), rtol=1e-10)  # fmt: skip
    with pytest.raises(NotImplementedError, match="mode='raw'.*Use mode='reduced'"):
        ft.grad(lambda A: np.sum(np.linalg.qr(A, mode="raw")[0]))(TALL)
    with pytest.raises(NotImplementedError, match="mode='complete'.*6x3.*Use mode='reduced'"):
        ft.grad(lambda A: np.sum(np.linalg.qr(A, mode="complete")[0]))(TALL)
    with pytest.raises(NotImplementedError, match=r"pivoting=True.*use pivoting=False"):
        ft.grad(lambda A: np.sum(scipy.linalg.qr(A, pivoting=True)[1]))(TALL)
    with pytest.raises(np.linalg.LinAlgError, match="at least two-dimensional"):
        ft.grad(lambda x: np.sum(np.linalg.svd(x, compute_uv=False)))(B6)
    with pytest.raises(NotImplementedError, match=r"lstsq on a batch of matrices.*pinv\(a\) @ b"):
        ft.grad(lambda A: np.sum(scipy.linalg.lstsq(A, np.ones((2, 6)))[0]))(np.stack([TALL, TALL]))
    with pytest.raises(ValueError, match="Invalid norm order"):
        ft.grad(lambda A: np.linalg.norm(A, 3))(TALL)


def test_the_decomposition_rows_are_listed_with_their_extents():
    listing = str(ft.trace(lambda A: np.linalg.norm(A, 2) + np.sum(np.linalg.qr(A)[1]), TALL))
    assert "svd[1x6x3]" in listing and "qr[1x6x3]" in listing


@pytest.mark.parametrize(
    ("op", "column", "value", "message"),
    [
        ("OP_SVD", K.C_P2, 0, r"\(svd\): empty matrices"),
        ("OP_SVD", K.C_P2, 4, r"\(svd\): sizes 18 -> 30 do not match 1 svd decompositions of 6x4"),
        ("OP_QR", K.C_P1, 5, r"\(qr\): sizes 18 -> 27 do not match 1 qr decompositions of 5x3"),
        ("OP_QR", K.C_P3, 1, r"\(qr\): sizes"),
    ],
)
def test_a_crafted_decomposition_row_is_refused_when_loaded(op, column, value, message):
    tape = ft.trace(lambda A: np.linalg.norm(A, 2) + np.sum(np.linalg.qr(A)[1]), TALL)
    with pytest.raises(ValueError, match=message):
        load_with_edited_row(tape, getattr(K, op), column, value)
