"""``ft.scipy_objective`` hands value, gradient and Hessian-vector products to SciPy."""

import numpy as np
import pytest

import fasttape as ft

optimize = pytest.importorskip("scipy.optimize")


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_newton_cg_on_rosenbrock_matches_scipys_own_derivatives():
    x0 = np.tile([-1.2, 1.0], 50)
    objective = ft.scipy_objective(rosenbrock)
    ours = optimize.minimize(x0=x0, method="Newton-CG", options={"xtol": 1e-10}, **objective)
    theirs = optimize.minimize(
        optimize.rosen,
        x0,
        jac=optimize.rosen_der,
        hessp=optimize.rosen_hess_prod,
        method="Newton-CG",
        options={"xtol": 1e-10},
    )
    assert ours.success and theirs.success
    np.testing.assert_allclose(ours.x, np.ones(100), atol=1e-8)
    assert abs(ours.nit - theirs.nit) <= max(3, theirs.nit // 10)  # same derivatives, same path


def test_objective_pieces_agree_with_scipys_rosenbrock():
    rng = np.random.default_rng(3)
    objective = ft.scipy_objective(rosenbrock)
    for _ in range(3):
        x, p = rng.normal(size=30), rng.normal(size=30)
        value, grad = objective["fun"](x)
        assert objective["jac"] is True
        np.testing.assert_allclose(value, optimize.rosen(x), rtol=1e-12)
        np.testing.assert_allclose(grad, optimize.rosen_der(x), rtol=1e-12, atol=1e-12)
        for _ in range(2):  # the operator at x is reused for the second product
            np.testing.assert_allclose(objective["hessp"](x, p), optimize.rosen_hess_prod(x, p), rtol=1e-12)
            p = rng.normal(size=30)


def test_extra_arguments_pass_through():
    def least_squares(w, A, b):
        r = A @ w - b
        return 0.5 * np.sum(r * r)

    rng = np.random.default_rng(4)
    A, b = rng.normal(size=(20, 5)), rng.normal(size=20)
    objective = ft.scipy_objective(least_squares)
    result = optimize.minimize(x0=np.zeros(5), args=(A, b), method="trust-ncg", options={"gtol": 1e-12}, **objective)
    np.testing.assert_allclose(result.x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-8, atol=1e-10)
