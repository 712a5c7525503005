"""The matrix exponential (scipy.linalg.expm, expm_frechet): SciPy's values, the gradient that the
block-matrix Fréchet derivative gives, JAX's second order in both tiers, guards that follow the Padé degree
and the number of squarings, NaN for non-finite input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import fasttape as ft
from fasttape import tiers

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jsla = pytest.importorskip("jax.scipy.linalg")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(31)
TIERS = ("compiled", "executor")
W = RNG.normal(size=(4, 4))
# 1-norms from 0.01 (Padé degree 3) through 0.6, 1.5 (degrees 7, 9) to about 12 (degree 13, two squarings)
MATRICES = [s * RNG.normal(size=(4, 4)) for s in (0.003, 0.15, 0.4, 3.0)]


def weighted_exp(A, la=scipy.linalg, xp=np):
    return xp.sum(W * la.expm(A))


def block_frechet(A, E):
    """L(A, E): the upper-right block of exp([[A, E], [0, A]]), by SciPy."""
    n = len(A)
    return scipy.linalg.expm(np.block([[A, E], [np.zeros((n, n)), A]]))[:n, n:]


@pytest.mark.parametrize("tier", TIERS)
def test_the_gradient_is_the_block_matrix_frechet_derivative_and_second_order_is_jaxs(tier):
    value_and_grad = ft.value_and_grad(weighted_exp)
    hessian = ft.hessian(weighted_exp)
    for A in MATRICES:
        with tiers.only(tier):
            value, grad = value_and_grad(A)
            H = hessian(A)
        np.testing.assert_allclose(value, np.sum(W * scipy.linalg.expm(A)), rtol=1e-13)
        # d/dA sum(W * exp(A)) = L(Aᵀ, W), the adjoint of the Fréchet derivative
        np.testing.assert_allclose(grad, block_frechet(A.T, W), rtol=1e-11, atol=1e-13 * np.abs(grad).max())
        expected = jax.hessian(lambda A: weighted_exp(A, jsla, jnp))(A)
        np.testing.assert_allclose(H, expected, rtol=1e-10, atol=1e-11 * np.abs(expected).max())
    assert len(value_and_grad.cache) == len(MATRICES)  # each norm regime is a branch of its own, held by guards


@pytest.mark.parametrize("tier", TIERS)
def test_values_follow_scipy_in_batches_and_for_the_frechet_derivative(tier):
    batch = np.stack(MATRICES[1:3])
    E = RNG.normal(size=(4, 4))
    expm_tape = ft.trace(lambda A: scipy.linalg.expm(A), batch)
    frechet_tape = ft.trace(lambda A, E: scipy.linalg.expm_frechet(A, E), MATRICES[2], E)
    with tiers.only(tier):
        np.testing.assert_allclose(expm_tape(batch), scipy.linalg.expm(batch), rtol=1e-13)
        expm_A, L = frechet_tape(MATRICES[2], E)
    expected_expm, expected_L = scipy.linalg.expm_frechet(MATRICES[2], E)
    np.testing.assert_allclose(expm_A, expected_expm, rtol=1e-13)
    np.testing.assert_allclose(L, expected_L, rtol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_nan_or_inf_in_the_matrix_gives_nan_and_a_finite_one_traces_again(tier):
    f = ft.value_and_grad(weighted_exp)
    A = MATRICES[1].copy()
    A[1, 2] = np.inf
    with tiers.only(tier):
        value, grad = f(A)
        assert np.isnan(value) and np.isnan(grad).all()
        value, grad = f(MATRICES[1])
    np.testing.assert_allclose(value, np.sum(W * scipy.linalg.expm(MATRICES[1])), rtol=1e-13)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"expm: expected a square matrix \(\.\.\., n, n\), got shape \(2, 3\)"):
        ft.grad(lambda A: np.sum(scipy.linalg.expm(A)))(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"E of shape \(3, 3\) must have A's shape \(4, 4\)"):
        ft.grad(lambda A: np.sum(scipy.linalg.expm_frechet(A, np.ones((3, 3)))[1]))(W)
