"""Core benchmarks: one group per workload and size, one benchmark per column.

Columns: ``numpy`` (the plain function), ``tape_fwd`` (``tape(x)``), ``tape_vg``
(``tape.value_and_grad(x)``), ``api_vg`` (``ft.value_and_grad(f)(x)`` with its
tape cache warm) and, when JAX is installed, ``jax_jit`` / ``jax_jit_vg``.
Everything is traced, compiled and called once before timing starts.  Each
benchmark's ``extra_info`` holds the workload, n, column and the tape's
instruction count, which ``python -m benchmarks.report`` reads back.

Run with ``python -m pytest benchmarks --benchmark-only --benchmark-autosave``.
"""

import functools

import pytest

import fasttape as ft

from .workloads import (
    LORENZ_STEPS,
    ROSENBROCK_SIZES,
    lorenz,
    lorenz_input,
    make_lorenz_fori,
    make_rosenbrock,
    rosenbrock,
    rosenbrock_input,
)

FASTTAPE_COLUMNS = ("numpy", "tape_fwd", "tape_vg", "api_vg")
JAX_COLUMNS = ("jax_jit", "jax_jit_vg")
LARGE = 1_000_000  # sizes from here on run a fixed, small number of rounds


@functools.cache
def _tape(workload, n):
    """The tape and the cached ``ft.value_and_grad`` transform for a workload, both warm."""
    f, x = (rosenbrock, rosenbrock_input(n)) if workload == "rosenbrock" else (lorenz, lorenz_input())
    tape = ft.trace(f, x)
    api = ft.value_and_grad(f)
    api(x)
    return tape, api


def _fasttape_callable(column, workload, n):
    tape, api = _tape(workload, n)
    return {"tape_fwd": tape, "tape_vg": tape.value_and_grad, "api_vg": api}[column]


def _run(benchmark, fn, arg, n):
    """Warm ``fn`` once, then time it (a bounded number of rounds for the largest sizes)."""
    fn(arg)
    if n >= LARGE:
        return benchmark.pedantic(fn, args=(arg,), rounds=30, warmup_rounds=1)
    return benchmark(fn, arg)


def _value(result):
    """The function value out of a plain, value_and_grad or JAX result."""
    if isinstance(result, tuple):
        result = result[0]
    return float(result)


def _describe(benchmark, workload, n, column):
    tape, _ = _tape(workload, n)
    benchmark.group = f"{workload} n={n}" if workload == "rosenbrock" else f"{workload} {LORENZ_STEPS} steps"
    benchmark.extra_info.update(workload=workload, n=n, column=column, instructions=tape.stats()["instructions"])


# --------------------------------------------------------------------------
# Rosenbrock: vectorised array code, n from 10 to 1e6
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", ROSENBROCK_SIZES)
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_rosenbrock(benchmark, column, n):
    _describe(benchmark, "rosenbrock", n, column)
    x = rosenbrock_input(n)
    fn = rosenbrock if column == "numpy" else _fasttape_callable(column, "rosenbrock", n)
    result = _run(benchmark, fn, x, n)
    assert _value(result) == pytest.approx(rosenbrock(x), rel=1e-12)


@pytest.mark.parametrize("n", ROSENBROCK_SIZES)
@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_rosenbrock_jax(benchmark, jax, column, n):
    _describe(benchmark, "rosenbrock", n, column)
    f = make_rosenbrock(jax.numpy)
    compiled = jax.jit(f if column == "jax_jit" else jax.value_and_grad(f))
    x = rosenbrock_input(n)
    xj = jax.numpy.asarray(x)
    result = _run(benchmark, lambda v: jax.block_until_ready(compiled(v)), xj, n)
    assert _value(result) == pytest.approx(rosenbrock(x), rel=1e-12)


# --------------------------------------------------------------------------
# Lorenz: 1000 Euler steps of scalar Python arithmetic (a long tape of tiny ops)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_lorenz(benchmark, column):
    _describe(benchmark, "lorenz", 3, column)
    u = lorenz_input()
    if column == "numpy":  # the plain function on Python floats, its fastest form
        fn, arg = lorenz, u.tolist()
    else:
        fn, arg = _fasttape_callable(column, "lorenz", 3), u
    result = _run(benchmark, fn, arg, 3)
    assert _value(result) == pytest.approx(lorenz(u.tolist()), rel=1e-12)


@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_lorenz_jax(benchmark, jax, column):
    _describe(benchmark, "lorenz", 3, column)
    f = make_lorenz_fori()
    compiled = jax.jit(f if column == "jax_jit" else jax.value_and_grad(f))
    u = lorenz_input()
    result = _run(benchmark, lambda v: jax.block_until_ready(compiled(v)), jax.numpy.asarray(u), 3)
    assert _value(result) == pytest.approx(lorenz(u.tolist()), rel=1e-9)
