"""Many directions in one sweep: a Jacobian by 28 tangent directions against one forward (issue:
derivatives of derivatives, scope 3), beside JAX's ``jit(jacfwd)`` in the same run.

Two programs with 28 inputs, the size of GradBench's hand-tracking pose:

* ``bones 7x2000``: seven rigid "bones" (a rotation angle, two offsets and a log-scale each) move
  2 000 points, blended by fixed weights, then squashed elementwise: elementwise work over
  arrays of 2 000-6 000 values, every intermediate depending on a few of the 28 inputs;
* ``layers 28-256-256-64 x50``: dense layers on 50 columns, the products' tangents a BLAS call
  over every direction at once (28 times the forward's multiply-adds: no method does fewer).

Columns: ``dir_ft_fwd`` (the tape's forward), ``dir_ft_jvp`` (``tape.jvp`` with 28 directions in
one sweep), ``dir_ft_jacfwd`` (``ft.jacfwd``), the same three on the tape's own kernels
(``dir_kern_*``, ``fasttape.tape_kernels``: a hot tape's tier), ``dir_jax_fwd`` and
``dir_jax_jacfwd`` (``jax.jit``, blocked).  The report divides each sweep by its own forward.
"""

import numpy as np
import pytest

import fasttape as ft

from .cases import jax_timed, run

K = 28
RNG = np.random.default_rng(28)
POINTS = RNG.normal(size=(3, 2000))
WEIGHTS = RNG.random(size=(2000, 7))
WEIGHTS /= WEIGHTS.sum(axis=1, keepdims=True)
W1, W2, W3 = RNG.normal(size=(256, K)) / 5, RNG.normal(size=(256, 256)) / 16, RNG.normal(size=(64, 256)) / 16
COLUMNS_IN = RNG.normal(size=(K, 50))


def bones(theta, xp):
    moved = 0.0
    for b in range(7):
        c, s = xp.cos(theta[b]), xp.sin(theta[b])
        x = c * POINTS[0] - s * POINTS[1] + theta[7 + b]
        y = s * POINTS[0] + c * POINTS[1] + theta[14 + b]
        z = POINTS[2] * xp.exp(0.1 * theta[21 + b])
        moved = moved + xp.stack([x, y, z]) * WEIGHTS[:, b]
    return xp.ravel(xp.tanh(moved) * xp.sqrt(1.0 + moved * moved) - POINTS)


def layers(x, xp):
    y = xp.tanh(W1 @ (x[:, None] * COLUMNS_IN) + 1.0)
    z = xp.sin(W2 @ y) * y
    return xp.sum(xp.exp(-((W3 @ z) ** 2)), axis=1)


PROGRAMS = {"bones 7x2000": bones, f"layers {K}-256-256-64 x50": layers}
THETA = RNG.normal(size=K) * 0.3


@pytest.mark.parametrize("row", list(PROGRAMS))
@pytest.mark.parametrize(
    "column", ("ft_fwd", "ft_jvp", "ft_jacfwd", "kern_fwd", "kern_jvp", "kern_jacfwd", "jax_fwd", "jax_jacfwd")
)
def test_directions(benchmark, request, column, row):
    program = PROGRAMS[row]
    benchmark.group = f"directions {row}"
    benchmark.extra_info.update(workload="directions", n=K, size=row, column=f"dir_{column}")
    if column.startswith("jax"):
        jax = request.getfixturevalue("jax")
        f = lambda x: program(x, jax.numpy)  # noqa: E731
        fn = jax_timed(jax, jax.jit(jax.jacfwd(f) if column == "jax_jacfwd" else f))
        result = run(benchmark, fn, (jax.numpy.asarray(THETA),))
        if column == "jax_jacfwd":  # the same Jacobian as fasttape's
            np.testing.assert_allclose(np.asarray(result), ft.jacfwd(lambda x: program(x, np))(THETA), rtol=1e-10,
                                       atol=1e-12)  # fmt: skip
        return
    tape = ft.trace(lambda x: program(x, np), THETA)
    jacfwd = ft.jacfwd(lambda x: program(x, np))
    if column.startswith("kern"):  # the tape's own kernels, built before the timing
        with ft.options(tape_kernels="always"):
            tape(THETA), tape.jvp((THETA,), np.eye(K)), jacfwd(THETA)
    fn = {
        "fwd": lambda x: tape(x),
        "jvp": lambda x: tape.jvp((x,), np.eye(K)),
        "jacfwd": jacfwd,
    }[column.split("_")[1]]
    result = run(benchmark, fn, (THETA,))
    if column.endswith("_jvp"):  # the 28 directions' tangents against central differences along each
        h = 1e-6
        for d in (0, 13, 27):
            e = np.eye(K)[d]
            along = (tape(THETA + h * e) - tape(THETA - h * e)) / (2 * h)
            np.testing.assert_allclose(result[1][:, d], along, rtol=1e-5, atol=1e-7)
