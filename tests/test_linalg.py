"""numpy.linalg on traced arrays (solve, inv, slogdet, det, matrix_power, multi_dot): NumPy's shapes and errors at trace
time, LinAlgError naming the function and the batch element when a later input is singular (in
both tiers, the tape still usable afterwards), and the derivatives of composite uses against JAX.
The oracle checks every case of each primitive in every derivative kind."""

from __future__ import annotations

import numpy as np
import pytest

import fasttape as ft
from fasttape import kernels as K
from fasttape import tiers
from tests.helpers import load_with_edited_row

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(7)
A3 = 1.5 * np.eye(3) + 0.3 * RNG.normal(size=(3, 3))
B3 = RNG.normal(size=(3, 2))
SINGULAR = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])
TIERS = ("compiled", "executor")


def gaussian_nll(A, x):
    """A Gaussian negative log-density with covariance A Aᵀ + I, written with solve and slogdet."""
    S = A @ A.T + np.eye(A.shape[0])
    return 0.5 * x @ np.linalg.solve(S, x) + 0.5 * np.linalg.slogdet(S)[1]


def gaussian_nll_jax(A, x):
    S = A @ A.T + jnp.eye(A.shape[0])
    return 0.5 * x @ jnp.linalg.solve(S, x) + 0.5 * jnp.linalg.slogdet(S)[1]


@pytest.mark.parametrize("tier", TIERS)
def test_a_gaussian_log_density_has_jaxs_gradient_and_hessian(tier):
    x = RNG.normal(size=3)
    with tiers.only(tier):
        value, grad = ft.value_and_grad(gaussian_nll)(A3, x)
        hessian = ft.hessian(gaussian_nll)(A3, x)
    np.testing.assert_allclose(value, gaussian_nll_jax(A3, x), rtol=1e-12)
    np.testing.assert_allclose(grad, jax.grad(gaussian_nll_jax)(A3, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian, jax.hessian(gaussian_nll_jax)(A3, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_inv_and_det_have_jaxs_derivatives(tier):
    def f(A):
        return np.sum(np.linalg.inv(A) * A.T) + np.linalg.det(A) ** 2

    def f_jax(A):
        return jnp.sum(jnp.linalg.inv(A) * A.T) + jnp.linalg.det(A) ** 2

    v = RNG.normal(size=(3, 3))
    with tiers.only(tier):
        grad = ft.grad(f)(A3)
        hv = ft.hvp(f, (A3,), (v,))
    np.testing.assert_allclose(grad, jax.grad(f_jax)(A3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, jax.jvp(jax.grad(f_jax), (A3,), (v,))[1], rtol=1e-10, atol=1e-12)


def test_shapes_follow_numpy_2():
    a = np.stack([A3, A3.T])
    cases = [(A3, B3[:, 0]), (A3, B3), (a, B3), (a, np.stack([B3, 2 * B3])), (A3, np.stack([B3, B3]))]
    for A, B in cases:
        traced = ft.trace(lambda A, B: np.linalg.solve(A, B), A, B)(A, B)
        np.testing.assert_allclose(traced, np.linalg.solve(A, B), rtol=1e-12)
    sign, logabs = ft.trace(lambda A: np.linalg.slogdet(A), a)(a)
    assert sign.shape == logabs.shape == (2,)
    np.testing.assert_allclose(logabs, np.linalg.slogdet(a)[1], rtol=1e-12)


def test_a_wrong_shape_or_a_singular_matrix_fails_at_trace_time_with_numpys_error():
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        ft.grad(lambda A: np.sum(np.linalg.inv(A)))(np.ones((2, 3)))
    with pytest.raises(ValueError, match="solve"):
        ft.grad(lambda A, b: np.sum(np.linalg.solve(A, b)))(A3, np.ones(4))
    with pytest.raises(np.linalg.LinAlgError, match="Singular"):
        ft.grad(lambda A: np.sum(np.linalg.inv(A)))(SINGULAR)


@pytest.mark.parametrize("tier", TIERS)
def test_a_singular_matrix_at_call_time_names_the_function_and_batch_element_and_loses_nothing(tier):
    g = ft.grad(lambda A: np.sum(np.linalg.solve(A, np.ones(3))))
    h = ft.grad(lambda A: np.sum(np.linalg.slogdet(A)[1]))
    batch = np.stack([A3, A3])
    with tiers.only(tier):
        expected = g(batch)
        expected_h = h(batch)
        for fn, name in ((g, "solve"), (h, "slogdet")):
            message = rf"numpy\.linalg\.{name}: singular matrix \(batch element 1\)"
            with pytest.raises(np.linalg.LinAlgError, match=message):
                fn(np.stack([A3, SINGULAR]))
        np.testing.assert_array_equal(g(batch), expected)  # the tape and its workspace still serve
        np.testing.assert_array_equal(h(batch), expected_h)
    sign, logabs = ft.trace(lambda A: np.linalg.slogdet(A), batch)(np.stack([A3, SINGULAR]))
    assert sign[1] == 0.0 and logabs[1] == -np.inf  # the value is NumPy's, as np.linalg.slogdet gives it


def test_solve_is_listed_with_its_extents():
    tape = ft.trace(lambda A, B: np.linalg.solve(A, B), A3, B3)
    assert "solve[1x3x3 \\ 3x2]" in str(tape)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (K.C_P1, 0, r"\(solve\): empty matrices"),  # LAPACK would refuse n = 0
        (K.C_P1, 4, r"\(solve\): operand of size 9 is not 1 matrices of 4x4"),
        (K.C_P3, 10**9, r"\(solve\): side store .* outside"),
    ],
)
def test_a_crafted_linalg_row_is_refused_when_loaded(column, value, message):
    tape = ft.trace(lambda A, B: np.sum(np.linalg.solve(A, B)), A3, B3)
    with pytest.raises(ValueError, match=message):
        load_with_edited_row(tape, K.OP_SOLVE, column, value)


def test_matrix_power_and_multi_dot_give_numpys_values_and_jaxs_gradients():
    x, y = RNG.normal(size=3), RNG.normal(size=2)
    for n in (0, 1, 2, 5, -1, -3):
        np.testing.assert_allclose(ft.trace(lambda A, n=n: np.linalg.matrix_power(A, n), A3)(A3),
                                   np.linalg.matrix_power(A3, n), rtol=1e-12)  # fmt: skip
    chains = [[A3, B3], [x, A3, B3], [A3, B3, y], [x, A3, A3.T, B3, y]]
    for chain in chains:
        got = ft.trace(lambda *c: np.linalg.multi_dot(c), *chain)(*chain)
        np.testing.assert_allclose(got, np.linalg.multi_dot(chain), rtol=1e-12)
    grad = ft.grad(lambda A: np.sum(np.linalg.matrix_power(A, -3)) + np.linalg.multi_dot([x, A, A, x]))(A3)
    expected = jax.grad(lambda A: jnp.sum(jnp.linalg.matrix_power(A, -3)) + jnp.linalg.multi_dot([x, A, A, x]))(A3)
    np.testing.assert_allclose(grad, expected, rtol=1e-10)
    with pytest.raises(TypeError):
        ft.grad(lambda A: np.sum(np.linalg.matrix_power(A, 1.5)))(A3)
    with pytest.raises(ValueError):
        ft.grad(lambda A: np.sum(np.linalg.multi_dot([A, B3, A])))(A3)
