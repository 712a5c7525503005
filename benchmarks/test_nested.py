"""Nested transformations against JAX (issue: derivatives of derivatives).

Each row is a program that calls a transformation inside the function another one differentiates,
timed warm through fasttape's cached transform (``ft``: the recorded derivative program replayed by
the compiled sweeps) and through ``jax.jit`` of JAX's same composition (``jax_jit``, blocked):

* ``grad(grad) scalar``: the second derivative of a scalar function;
* ``maml 5 steps``: ``value_and_grad`` of a loss read after five inner gradient steps;
* ``saddle 4 steps``: the gradient of a leader's objective through a follower's four ascent steps;
* ``jacfwd(grad) rosenbrock``: the dense Hessian as the forward Jacobian of the recorded gradient, next
  to ``ft.hessian`` (HVPs along blocks of unit vectors, ``ft_hessian``).

``extra_info`` holds the exact element-operation counts (``opcount``) of the function itself
(``ops_f``) and of one call of the nested program (``ops_nested``): their ratio is the nested program's
cost in units of the function, the OPS column of the report.
"""

import numpy as np
import pytest

import fasttape as ft

from . import opcount
from .cases import jax_timed, run

RNG = np.random.default_rng(20)
MAML_BATCH, MAML_FEATURES, MAML_STEPS = 32, 16, 5
MAML_DATA = (RNG.normal(size=(MAML_STEPS, MAML_BATCH, MAML_FEATURES)), RNG.normal(size=(MAML_STEPS, MAML_BATCH)),
             RNG.normal(size=(MAML_BATCH, MAML_FEATURES)), RNG.normal(size=MAML_BATCH))  # fmt: skip
ROSENBROCK_N = 30


def wavy(x, xp):
    return xp.sin(x) * x**3 + xp.exp(-x * x)


def maml_loss(w, xp):
    def loss(w, X, y):
        return xp.mean((xp.tanh(X @ w) - y) ** 2)

    return loss


def maml(w, T, xp):
    loss = maml_loss(w, xp)
    Xs, Ys, Xt, yt = MAML_DATA
    for i in range(MAML_STEPS):
        w = w - 0.1 * T.grad(loss)(w, Xs[i], Ys[i])
    return loss(w, Xt, yt)


def saddle(x, T, xp, steps=4):
    def f(x, y):
        return xp.sum(x**2) - xp.sum(y**2) + xp.sum(xp.sin(x) * y) + 0.1 * xp.sum(x * y**3)

    y = xp.zeros(x.shape)
    for _ in range(steps):
        y = y + 0.3 * T.grad(f, argnums=1)(x, y)
    return f(x, y)


def rosenbrock(x, xp):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _programs(T, xp):
    """{row: (outer transformation, the body it differentiates (which calls T's transformations inside),
    its argument, the plain function whose OPS are the unit)}."""
    return {
        "grad(grad) scalar": (T.grad, T.grad(lambda x: wavy(x, xp)), 1.3, lambda x: wavy(x, np)),
        f"maml {MAML_STEPS} steps {MAML_BATCH}x{MAML_FEATURES}": (
            T.value_and_grad, lambda w: maml(w, T, xp), RNG.normal(size=MAML_FEATURES),
            lambda w: maml_loss(w, np)(w, *MAML_DATA[2:])),
        "saddle 4 steps n=8": (T.grad, lambda x: saddle(x, T, xp), RNG.normal(size=8),
                               lambda x: np.sum(x**2) + np.sum(np.sin(x))),
        f"jacfwd(grad) rosenbrock n={ROSENBROCK_N}": (T.jacfwd, T.grad(lambda x: rosenbrock(x, xp)),
                                                       np.linspace(-1.0, 1.0, ROSENBROCK_N),
                                                       lambda x: rosenbrock(x, np)),
    }  # fmt: skip


ROWS = list(_programs(ft, np))


def _ops(row):
    """(ops of the unit function, ops of one call of the nested program: the outer transformation's
    sweeps over the tape of its body, which holds the inner derivative programs as primitives)."""
    outer, body, x, unit = _programs(ft, np)[row]
    ops_f = opcount.count(ft.trace(unit, x))["f"]
    counts = opcount.count(ft.trace(body, x))
    if outer is ft.jacfwd:  # one forward, then a tangent sweep per input element
        return ops_f, counts["forward"] + int(np.size(x)) * counts["tangent"]
    return ops_f, counts["grad"]


def _flat(tree):
    if isinstance(tree, (tuple, list)):
        return np.concatenate([np.ravel(_flat(t)) for t in tree])
    return np.ravel(np.asarray(tree))


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("column", ("ft", "jax_jit"))
def test_nested(benchmark, request, column, row):
    outer, body, x, _ = _programs(ft, np)[row]
    if column == "jax_jit":
        jax = request.getfixturevalue("jax")
        jax_outer, jax_body, _, _ = _programs(jax, jax.numpy)[row]
        fn, arg = jax_timed(jax, jax.jit(jax_outer(jax_body))), jax.numpy.asarray(x)
    else:
        fn, arg = outer(body), x
    ops_f, ops_nested = _ops(row)
    benchmark.group = f"nested {row}"
    benchmark.extra_info.update(workload="nested", n=int(np.size(x)), size=row, column=f"nested_{column}",
                                ops_f=ops_f, ops_nested=ops_nested)  # fmt: skip
    result = run(benchmark, fn, (arg,))
    if column == "jax_jit":  # the same numbers as fasttape's
        np.testing.assert_allclose(_flat(result), _flat(outer(body)(x)), rtol=1e-9, atol=1e-9)
    else:  # fasttape's derivative against central differences of the body along a random direction
        _check_by_differences(outer, body, x, result)


def _check_by_differences(outer, body, x, result):
    v = np.random.default_rng(0).normal(size=np.shape(x))
    h = 1e-6
    along = (np.asarray(_flat(body(x + h * v))) - np.asarray(_flat(body(x - h * v)))) / (2 * h)
    if outer is ft.value_and_grad:
        result = result[1]
    derivative = np.asarray(result)
    predicted = derivative @ np.ravel(v) if outer is ft.jacfwd else np.sum(derivative * v)
    np.testing.assert_allclose(np.ravel(predicted), np.ravel(along), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("column", ("ft_hessian",))
def test_hessian_beside_jacfwd_of_grad(benchmark, column):
    x = np.linspace(-1.0, 1.0, ROSENBROCK_N)
    hess = ft.hessian(lambda x: rosenbrock(x, np))
    row = f"jacfwd(grad) rosenbrock n={ROSENBROCK_N}"
    benchmark.group = f"nested {row}"
    benchmark.extra_info.update(workload="nested", n=ROSENBROCK_N, size=row, column="nested_ft_hessian")
    H = run(benchmark, hess, (x,))
    outer, body, _, _ = _programs(ft, np)[row]
    np.testing.assert_allclose(H, outer(body)(x), rtol=1e-10, atol=1e-10)
