"""Peers and first use, next to the columns of ``test_core.py`` (same groups, same ``extra_info``).

* ``fused_vg``: a hand-written, fused Numba adjoint (``fused.py``) for every workload, the practical
  floor of a gradient on one core; checked against jax.grad.
* ``pytensor_f``, ``pytensor_vg``, ``pytensor_hvp``: PyTensor compiled in its Numba mode
  (``pytensor.function(..., mode="NUMBA")``, ``trust_input`` on), gradients by ``pytensor.grad`` and
  ``hessian_vector_product``, built from the very same workload source with ``xp=pytensor.tensor``;
  skipped when PyTensor is not installed.
* First use, one fresh object per round and a fixed, small number of rounds (the medians are what
  a user waits for once per function and input shape): ``first_ft_trace`` (``ft.trace``),
  ``first_ft_vg`` (a fresh ``ft.value_and_grad(f)``'s first call: trace plus first gradient, with
  the Numba kernels already compiled by ``conftest.py``), ``first_jax_vg`` (a fresh
  ``jit(value_and_grad(f))``'s first call: JAX's trace, lowering and XLA compile plus one call),
  ``first_jax_vg_pyloop`` (Lorenz only, opt-in with ``BENCH_JAX_PYLOOP=1``: JAX on the plain Python
  loop rather than the ``fori_loop``)
  and ``first_pytensor_vg`` (graph building, ``pytensor.function`` and the first call).
"""

import os

import pytest

import fasttape as ft

from .cases import all_cases, case_id, describe, first_value, jax_timed, run
from .fused import FUSED
from .test_core import verified
from .workloads import lorenz

FUSED_CASES = all_cases(FUSED)
PYTENSOR_CASES = all_cases(("rosenbrock", "logistic", "softmax"))  # a single differentiated array
CASES = all_cases()
FIRST_USE_ROUNDS = 5


def ids(cases):
    return [case_id(*c) for c in cases]


@pytest.mark.parametrize("workload,size", FUSED_CASES, ids=ids(FUSED_CASES))
def test_fused(benchmark, workload, size):
    c = verified(workload, size)
    describe(benchmark, c, "fused_vg")
    value, grad = run(benchmark, FUSED[workload], c.args, c.rounds)
    assert value == pytest.approx(c.value, rel=1e-12)
    c.check_gradient(grad)


# --------------------------------------------------------------------------
# PyTensor, Numba mode
# --------------------------------------------------------------------------
def pytensor_function(c, column):
    """(compiled function, arguments) of one PyTensor column: f, value-and-grad or one-direction HVP."""
    pytensor = pytest.importorskip("pytensor")
    import pytensor.tensor as pt
    from pytensor.gradient import hessian_vector_product

    inputs = [pt.tensor(f"arg{i}", dtype="float64", shape=a.shape) for i, a in enumerate(c.args)]
    cost, args = c.spec.make(pt)(*inputs), c.args
    if column == "pytensor_f":
        outputs = cost
    elif column == "pytensor_vg":
        outputs = [cost, pytensor.grad(cost, inputs[0])]
    else:
        v = pt.tensor("v", dtype="float64", shape=c.args[0].shape)
        inputs, outputs, args = inputs + [v], hessian_vector_product(cost, inputs[0], v), (*c.args, c.v)
    fn = pytensor.function(inputs, outputs, mode="NUMBA")
    fn.trust_input = True  # the arguments are already float64 arrays of the declared shapes
    return fn, args


@pytest.mark.parametrize("workload,size", PYTENSOR_CASES, ids=ids(PYTENSOR_CASES))
@pytest.mark.parametrize("column", ("pytensor_f", "pytensor_vg", "pytensor_hvp"))
def test_pytensor(benchmark, column, workload, size):
    c = verified(workload, size)
    fn, args = pytensor_function(c, column)
    describe(benchmark, c, column, **({"k": 1} if column == "pytensor_hvp" else {}))
    result = run(benchmark, fn, args, c.rounds)
    if column == "pytensor_hvp":
        c.check_hvp(result, c.v)
    else:
        assert first_value(result) == pytest.approx(c.value, rel=1e-12)
    if column == "pytensor_vg":
        c.check_gradient(result[1])  # PyTensor returns [value, gradient]


# --------------------------------------------------------------------------
# First use: what a user waits for once per function and input shape
# --------------------------------------------------------------------------
def first_use(benchmark, fresh, rounds=FIRST_USE_ROUNDS):
    """Time ``fresh()`` (which builds its own new objects) once per round, no warm-up."""
    return benchmark.pedantic(fresh, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("workload,size", CASES, ids=ids(CASES))
@pytest.mark.parametrize("column", ("first_ft_trace", "first_ft_vg"))
def test_first_use_fasttape(benchmark, column, workload, size):
    c = verified(workload, size)
    describe(benchmark, c, column, rounds=FIRST_USE_ROUNDS)
    if column == "first_ft_trace":
        tape = first_use(benchmark, lambda: ft.trace(c.f, *c.args))
        assert tape.stats()["instructions"] == c.tape.stats()["instructions"]
    else:
        value, grad = first_use(benchmark, lambda: ft.value_and_grad(c.f)(*c.args))
        assert value == pytest.approx(c.value, rel=1e-12)
        c.check_gradient(grad)


@pytest.mark.parametrize("workload,size", CASES, ids=ids(CASES))
def test_first_use_jax(benchmark, jax, workload, size):
    c = verified(workload, size)
    describe(benchmark, c, "first_jax_vg", rounds=FIRST_USE_ROUNDS)
    jax.block_until_ready(jax.jit(lambda x: x + 1.0)(1.0))  # JAX's own one-time start-up is not the workload's
    args = c.jax_args(jax)

    def fresh():  # a new function object: jit's caches are keyed on it, so this traces and compiles afresh
        return jax_timed(jax, jax.jit(jax.value_and_grad(c.spec.make(jax.numpy))))(*args)

    value, grad = first_use(benchmark, fresh)
    assert float(value) == pytest.approx(c.value, rel=1e-9)
    c.check_gradient(grad)


@pytest.mark.skipif(
    not os.environ.get("BENCH_JAX_PYLOOP"), reason="minutes of XLA compile on a 2-core machine: set BENCH_JAX_PYLOOP=1"
)
def test_first_use_jax_pyloop(benchmark, jax):
    """JAX on Lorenz's plain Python loop: 14 000 scalar operations traced and compiled (one round).
    XLA's compile time grows faster than linearly in the length of the unrolled loop (here 1.8 s at 100
    steps, 8 s at 300), so this one is opt-in."""
    c = verified("lorenz", ())
    describe(benchmark, c, "first_jax_vg_pyloop", rounds=1)
    args = c.jax_args(jax)

    def fresh():
        return jax_timed(jax, jax.jit(jax.value_and_grad(lambda u: lorenz(u))))(*args)

    value, grad = first_use(benchmark, fresh, rounds=1)
    assert float(value) == pytest.approx(c.value, rel=1e-9)
    c.check_gradient(grad)


@pytest.mark.parametrize("workload,size", PYTENSOR_CASES, ids=ids(PYTENSOR_CASES))
def test_first_use_pytensor(benchmark, workload, size):
    c = verified(workload, size)
    pytest.importorskip("pytensor")
    describe(benchmark, c, "first_pytensor_vg", rounds=1)

    def fresh():
        fn, args = pytensor_function(c, "pytensor_vg")
        return tuple(fn(*args))

    value, grad = first_use(benchmark, fresh, rounds=1)
    assert value == pytest.approx(c.value, rel=1e-12)
    c.check_gradient(grad)
