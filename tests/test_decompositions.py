"""Singular value, QR and LU decompositions (numpy.linalg's svd, svdvals, norm 2 / -2 / 'nuc', cond, pinv,
lstsq, matrix_rank and qr; scipy.linalg's svd, svdvals, qr, pinv, lstsq, lu_factor, lu_solve and lu): models
against JAX to second order in both tiers, values as NumPy's and SciPy's LAPACK calls give them, JAX's
conventions where singular values repeat or vanish, guards on the rank, pivots read during the sweep, and
errors that say what to do instead.  The oracle checks every case of these primitives in every derivative
kind."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.linalg

import fasttape as ft
from fasttape import duals, tiers
from fasttape import kernels as K
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

    jit = jax.jit  # compiled, JAX's references take a second; op by op, fifteen
    np.testing.assert_allclose(value, jit(jax_fit)(TALL), rtol=1e-12)
    np.testing.assert_allclose(grad, jit(jax.grad(jax_fit))(TALL), rtol=1e-10, atol=1e-12)
    hv_jax = jit(lambda A, v: jax.jvp(jax.grad(jax_fit), (A,), (v,))[1])(TALL, v)
    np.testing.assert_allclose(hv, hv_jax, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, jit(jax.hessian(jax_fit))(TALL), rtol=1e-10, atol=1e-12)


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


@pytest.mark.parametrize("tier", TIERS)
def test_a_complete_q_of_a_tall_matrix_has_numpys_value_and_jaxs_derivatives(tier):
    # Q's last n - m columns: the complement's basis that the Householder reflectors give (dorgqr on all n)
    A = np.stack([TALL[:5], RNG.normal(size=(5, 3))])
    W = RNG.normal(size=(5, 5))

    def f(A, xp=np):
        Q, R = xp.linalg.qr(A, mode="complete")
        return xp.sum(W * xp.sin(Q)) + xp.sum(Q[..., -1] ** 3) + xp.sum(R**2 * A)

    v = RNG.normal(size=A.shape)
    with tiers.only(tier):
        Q, R = ft.trace(lambda A: tuple(np.linalg.qr(A, mode="complete")), A)(A)
        (R_sp,) = ft.trace(lambda A: scipy.linalg.qr(A, mode="r"), TALL)(TALL)
        Q_sp, _ = ft.trace(lambda A: scipy.linalg.qr(A), TALL)(TALL)
        grad = ft.grad(f)(A)
        hv = ft.hvp(f, (A,), (v,))
    for ours, numpys in zip((Q, R), np.linalg.qr(A, mode="complete")):
        np.testing.assert_allclose(ours, numpys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Q_sp, scipy.linalg.qr(TALL)[0], rtol=1e-12, atol=1e-14)
    assert Q_sp.shape == (6, 6) and R_sp.shape == (6, 3)
    np.testing.assert_allclose(grad, jax.grad(lambda A: f(A, jnp))(A), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(lambda A: f(A, jnp)), (A,), (v,))[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transposed", [False, True])
def test_the_stack_solve_under_the_complete_q_rule_is_a_solve_and_its_tangent(transposed):
    # duals.solve (LU with pivoting of the value): slot 0 solves, slot d is its derivative along (dA_d, dB_d),
    # against central differences of NumPy's solve
    A, B = RNG.normal(size=(3, 4, 4)), RNG.normal(size=(3, 4, 2))
    A[0, 0, 0] = 1e-3  # row interchanges on the first column

    def solve(A0, B0):
        return np.linalg.solve(A0.T if transposed else A0, B0)

    X = duals.solve(A, B, transposed)
    np.testing.assert_allclose(X[0], solve(A[0], B[0]), rtol=1e-12)
    h = 1e-6
    for d in (1, 2):
        central = (solve(A[0] + h * A[d], B[0] + h * B[d]) - solve(A[0] - h * A[d], B[0] - h * B[d])) / (2 * h)
        np.testing.assert_allclose(X[d], central, rtol=1e-6, atol=1e-8)
    constant = duals.solve(A[:1], B, transposed)  # a constant matrix: every slot of B alike
    np.testing.assert_allclose(constant[2], solve(A[0], B[2]), rtol=1e-12)
    singular = A.copy()
    singular[0, :, 0] = [4.0, 2.0, 1.0, 0.5]
    singular[0, :, 1] = 2.0 * singular[0, :, 0]  # U gets an exact zero on its diagonal
    compiled = numba.njit(lambda A, B: duals.solve(A, B, transposed))
    for X in (duals.solve(singular, B, transposed), compiled(singular, B)):
        assert np.isnan(X).all()


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


# --------------------------------------------------------------------------
# LU with partial pivoting: scipy.linalg's lu_factor, lu_solve and lu
# --------------------------------------------------------------------------
def lu_model(A, b, la=scipy.linalg, xp=np):
    lu_piv = la.lu_factor(A)
    P, L, U = la.lu(A)
    x = la.lu_solve(lu_piv, b)
    y = la.lu_solve(lu_piv, xp.stack([b, b**2], axis=1), trans=1)
    return xp.sum(x**2) + xp.sum(y * xp.cos(y)) + xp.sum((P @ L)[:, 0] * U[0]) + xp.sum(xp.log(xp.abs(xp.diag(U))))


@pytest.mark.parametrize("tier", TIERS)
def test_lu_solves_follow_pivots_that_change_between_calls(tier):
    # the first matrix needs no row interchange, the others need different ones: one tape serves all
    first = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.3, 0.1, 2.0]])
    others = [first[[2, 0, 1]] * np.array([[1.0], [0.1], [0.2]]), RNG.normal(size=(3, 3)) + np.eye(3)]
    b = RNG.normal(size=3)
    value_and_grad = ft.value_and_grad(lu_model)
    tape = ft.trace(lambda A: lu_model(A, b), first)
    for A in [first, *others]:
        v = RNG.normal(size=A.shape)
        with tiers.only(tier):
            value, grad = value_and_grad(A, b)
            hv = tape.hvp(A, v)

        def jax_model(A):
            return lu_model(A, b, jsla, jnp)

        np.testing.assert_allclose(value, jax_model(A), rtol=1e-12)
        np.testing.assert_allclose(grad, jax.grad(jax_model)(A), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hv, jax.jvp(jax.grad(jax_model), (A,), (v,))[1], rtol=1e-10, atol=1e-12)
    assert len(value_and_grad.cache) == 1  # the pivots are data of the sweep: no guard, no second trace


def test_lu_values_are_scipys():
    A = RNG.normal(size=(2, 4, 4))
    lu, piv = ft.trace(lambda A: scipy.linalg.lu_factor(A), A)(A)
    for t in range(2):
        lu_sp, piv_sp = scipy.linalg.lu_factor(A[t])
        np.testing.assert_array_equal(lu[t], lu_sp)
        np.testing.assert_array_equal(piv[t], piv_sp)  # the same integers, held as floats
    for ours, scipys in zip(ft.trace(lambda A: scipy.linalg.lu(A), A[0])(A[0]), scipy.linalg.lu(A[0])):
        np.testing.assert_array_equal(ours, scipys)
    PL, U = ft.trace(lambda A: scipy.linalg.lu(A, permute_l=True), A[0])(A[0])
    np.testing.assert_allclose(PL, scipy.linalg.lu(A[0], permute_l=True)[0], rtol=1e-14)
    np.testing.assert_allclose(np.tril(A[0], -1), ft.trace(lambda A: np.tril(A, -1), A[0])(A[0]), rtol=0)
    np.testing.assert_allclose(np.triu(A, 1), ft.trace(lambda A: np.triu(A, 1), A)(A), rtol=0)


@pytest.mark.parametrize("tier", TIERS)
def test_pivots_that_are_not_row_indices_are_refused_from_the_sweep(tier):
    A = RNG.normal(size=(3, 3)) + 3 * np.eye(3)
    lu, piv = scipy.linalg.lu_factor(A)
    b = np.ones(3)
    tape = ft.trace(lambda lu, piv, b: scipy.linalg.lu_solve((lu, piv), b), lu, piv.astype(float), b, argnums=(0, 2))
    with tiers.only(tier):
        for bad in (np.array([0.0, 3.0, 2.0]), np.array([0.0, -1.0, 2.0]), np.array([0.5, 1.0, 2.0]),
                    np.array([np.nan, 1.0, 2.0])):  # fmt: skip
            with pytest.raises(ValueError, match=r"lu_solve: the pivots are not row indices of the 3x3 factors"):
                tape(lu, bad, b)
        np.testing.assert_allclose(tape(lu, piv.astype(float), b), np.linalg.solve(A, b), rtol=1e-12)  # still usable
    with pytest.raises(ValueError, match="pivots are not row indices"):  # the same check at trace time
        ft.grad(lambda lu: np.sum(scipy.linalg.lu_solve((lu, np.array([0, 7, 2])), b)))(lu)


@pytest.mark.parametrize("tier", TIERS)
def test_a_singular_matrix_at_call_time_names_lu_solve(tier):
    A = RNG.normal(size=(3, 3)) + 3 * np.eye(3)
    f = ft.grad(lambda A: np.sum(scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), np.ones(3))))
    f(A)
    singular = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]])  # rank 2: an exact zero in U
    assert scipy.linalg.lu_factor(singular)[0][2, 2] == 0.0
    with tiers.only(tier):
        with pytest.raises(np.linalg.LinAlgError, match=r"scipy\.linalg\.lu_solve: singular matrix.*batch element 0"):
            f(singular)
        assert np.all(np.isfinite(f(A)))


def test_lu_errors_name_the_problem_and_the_fix():
    with pytest.raises(NotImplementedError, match=r"lu_factor of a non-square 6x3 matrix.*qr"):
        ft.grad(lambda A: np.sum(scipy.linalg.lu_factor(A)[0]))(TALL)
    with pytest.raises(NotImplementedError, match=r"p_indices=True.*use the permutation matrix"):
        ft.grad(lambda A: np.sum(scipy.linalg.lu(A, p_indices=True)[1]))(TALL[:3])
    with pytest.raises(ValueError, match="trans must be 0, 1, 2"):
        ft.grad(lambda A: np.sum(scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), np.ones(3), trans=5)))(TALL[:3])
    with pytest.raises(ValueError, match=r"right-hand side of shape \(4,\) does not fit factors of shape \(3, 3\)"):
        ft.grad(lambda A: np.sum(scipy.linalg.lu_solve(scipy.linalg.lu_factor(A), np.ones(4))))(TALL[:3])
