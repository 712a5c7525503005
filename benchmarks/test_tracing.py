"""Tracing: what recording a tape costs per recorded row, on scalar code (issue 16, scope 3: at most
2 µs per recorded scalar operation), beside JAX's own tracing (``jax.make_jaxpr``) of the same Python.

* ``pendulum 5000 steps``: a Python loop of scalar Euler steps (``sin``, four arithmetic rows each);
* ``det l=7 (Laplace)``: GradBench's ``det`` as a NumPy user writes it -- expansion by minors along the
  first row, a deep recursion of element reads, products and sums (17 318 rows).

Columns: ``trace_ft`` (``ft.trace``, the tape frozen and its adjoint plan made; the cyclic collector's
deferred pass included) and ``trace_jax`` (``jax.make_jaxpr`` of a new function each round, the jaxpr
only: no compilation; its equations outnumber the rows, an element read being one of its own).  The
report divides each by the tape's rows.
"""

import gc

import numpy as np
import pytest

import fasttape as ft

from .cases import run
from .workloads import laplace_det, pendulum

PROGRAMS = {
    "pendulum 5000 steps": (pendulum, np.array([0.4, 0.1])),
    "det l=7 (Laplace)": (laplace_det, np.random.default_rng(7).standard_normal((7, 7))),
}


@pytest.mark.parametrize("row", list(PROGRAMS))
@pytest.mark.parametrize("column", ("trace_ft", "trace_jax"))
def test_tracing(benchmark, request, column, row):
    program, x = PROGRAMS[row]
    rows = ft.trace(lambda v: program(v, np), x).ins.shape[0]
    benchmark.group = f"tracing {row}"
    benchmark.extra_info.update(workload="tracing", n=rows, size=row, column=column, instructions=rows)
    if column == "trace_jax":
        jax = request.getfixturevalue("jax")
        # a new function each round: make_jaxpr caches the trace of one it has seen
        run(benchmark, lambda v: jax.make_jaxpr(lambda u: program(u, jax.numpy))(v), (x,), rounds=3)
        return

    def collected():  # the previous rounds' garbage (the recursion's closure holds a cycle): not this round's cost
        gc.collect()
        return (x,), {}

    tape = benchmark.pedantic(lambda v: ft.trace(lambda u: program(u, np), v), setup=collected, rounds=5)
    value, grad = tape.value_and_grad(x)  # the tape it timed differentiates the program
    h = 1e-6
    e = np.zeros_like(x)
    e.flat[0] = 1.0
    along = (program(x + h * e, np) - program(x - h * e, np)) / (2 * h)
    np.testing.assert_allclose(grad.flat[0], along, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(value, program(x, np), rtol=1e-12)
