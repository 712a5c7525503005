"""Core benchmarks: one group per workload and size, one benchmark per column.

Columns: ``numpy`` (the plain function), ``tape_fwd`` (``tape(*args)``), ``tape_vg``
(``tape.value_and_grad(*args)``), ``tape_hvp`` (``tape.hvp(*args, v)``, one direction,
forward-over-reverse), ``api_vg`` (``ft.value_and_grad(f)(*args)`` with its tape cache warm)
and, when JAX is installed, ``jax_jit`` / ``jax_jit_vg`` / ``jax_jit_hvp``
(``jit(jvp(grad(f)))``).  Everything is traced, compiled and called once before timing
starts, and every result is checked.  Each benchmark's ``extra_info`` holds the workload,
n, column and the tape's exact counts, which ``python -m benchmarks.report`` reads back.

Run with ``python -m pytest benchmarks --benchmark-only --benchmark-autosave``.
"""

import pytest

from .cases import case, describe, first_value, jax_hvp, jax_timed, run
from .workloads import MLP_SIZES, ROSENBROCK_SIZES

FASTTAPE_COLUMNS = ("numpy", "tape_fwd", "tape_vg", "tape_hvp", "api_vg")
JAX_COLUMNS = ("jax_jit", "jax_jit_vg", "jax_jit_hvp")


def bench_fasttape(benchmark, c, column):
    extra = {"k": 1} if column == "tape_hvp" else {}
    describe(benchmark, c, column, **extra)
    if column == "numpy":
        fn, args = c.plain()
    elif column == "tape_hvp":
        fn, args = c.tape.hvp, (*c.args, c.v)
    else:
        fn, args = {"tape_fwd": c.tape, "tape_vg": c.tape.value_and_grad, "api_vg": c.api}[column], c.args
    result = run(benchmark, fn, args, c.rounds)
    if column == "tape_hvp":
        c.check_hvp(result, c.v)
    else:
        assert first_value(result) == pytest.approx(c.value, rel=1e-12)


def bench_jax(benchmark, jax, c, column):
    extra = {"k": 1} if column == "jax_jit_hvp" else {}
    describe(benchmark, c, column, **extra)
    f = c.jax_function(jax)
    if column == "jax_jit_hvp":
        compiled, args = jax_hvp(jax, f), c.jax_args(jax, c.v)
    else:
        compiled, args = jax.jit(f if column == "jax_jit" else jax.value_and_grad(f)), c.jax_args(jax)
    result = run(benchmark, jax_timed(jax, compiled), args, c.rounds)
    if column == "jax_jit_hvp":
        c.check_hvp(result, c.v)
    else:  # Lorenz's fori_loop rounds differently from the Python loop
        assert first_value(result) == pytest.approx(c.value, rel=1e-9 if c.workload == "lorenz" else 1e-12)


# --------------------------------------------------------------------------
# Rosenbrock: vectorised array code, n from 10 to 1e6
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", ROSENBROCK_SIZES)
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_rosenbrock(benchmark, column, n):
    bench_fasttape(benchmark, case("rosenbrock", n), column)


@pytest.mark.parametrize("n", ROSENBROCK_SIZES)
@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_rosenbrock_jax(benchmark, jax, column, n):
    bench_jax(benchmark, jax, case("rosenbrock", n), column)


# --------------------------------------------------------------------------
# Lorenz: 1000 Euler steps of scalar Python arithmetic (a long tape of tiny ops)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_lorenz(benchmark, column):
    bench_fasttape(benchmark, case("lorenz", None), column)


@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_lorenz_jax(benchmark, jax, column):
    bench_jax(benchmark, jax, case("lorenz", None), column)


# --------------------------------------------------------------------------
# tanh MLP: matmul-dominated, parameters in a tuple (W1, b1, W2, b2), data as arguments
# --------------------------------------------------------------------------
MLP_IDS = ["x".join(map(str, size)) for size in MLP_SIZES]


@pytest.mark.parametrize("size", MLP_SIZES, ids=MLP_IDS)
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_mlp(benchmark, column, size):
    bench_fasttape(benchmark, case("mlp", size), column)


@pytest.mark.parametrize("size", MLP_SIZES, ids=MLP_IDS)
@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_mlp_jax(benchmark, jax, column, size):
    bench_jax(benchmark, jax, case("mlp", size), column)
