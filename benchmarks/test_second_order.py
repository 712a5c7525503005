"""Second-order benchmarks beyond the single HVP of ``test_core.py``.

* ``hvp k=4 …``: ``tape.hvp(*args, V)`` with V carrying a trailing axis of 4 directions, one
  forward-over-reverse sweep (``tape_hvp_k4``), next to 4 separate single-direction calls on
  the same directions (``tape_hvp_4x1``);
* ``hessian rosenbrock n=100``: the dense Hessian, ``ft.hessian(f)(x)`` (cached transform,
  warm; HVPs along blocks of unit vectors) next to ``jax.jit(jax.hessian(f))`` and plain,
  un-jitted ``jax.hessian(f)``.
"""

import math

import numpy as np
import pytest

import fasttape as ft
from fasttape.derivatives import block_size

from .cases import K, case, describe, direction, jax_timed, run
from .workloads import MLP_SIZES

HVP_K_CASES = [("rosenbrock", 1_000), ("mlp", MLP_SIZES[0])]
HESSIAN_N = 100


@pytest.mark.parametrize("workload,size", HVP_K_CASES, ids=["rosenbrock-1000", "mlp-32x8x16"])
@pytest.mark.parametrize("column", ("tape_hvp_k4", "tape_hvp_4x1"))
def test_hvp_k(benchmark, column, workload, size):
    c = case(workload, size)
    describe(benchmark, c, column, group=f"hvp k={K} {c.group}", k=K, sweeps=1 if column == "tape_hvp_k4" else K)
    if column == "tape_hvp_k4":
        result = run(benchmark, c.tape.hvp, (*c.args, c.V), c.rounds)
        per_direction = [direction(result, j) for j in range(K)]
    else:

        def separate(*args):
            return [c.tape.hvp(*args, v) for v in c.v_separate]

        per_direction = run(benchmark, separate, c.args, c.rounds)
    for v, hv in zip(c.v_separate, per_direction):
        c.check_hvp(hv, v)


@pytest.mark.parametrize("column", ("ft_hessian", "jax_jit_hessian", "jax_hessian"))
def test_hessian(benchmark, request, column):
    c = case("rosenbrock", HESSIAN_N)
    block = block_size(c.tape, c.n)
    describe(benchmark, c, column, group=f"hessian {c.group}", k=block, sweeps=math.ceil(c.n / block))
    x = c.args[0]
    if column == "ft_hessian":
        fn, arg = ft.hessian(c.f), x
    else:
        jax = request.getfixturevalue("jax")
        hessian = jax.hessian(c.jax_function(jax))
        fn, arg = jax_timed(jax, jax.jit(hessian) if column == "jax_jit_hessian" else hessian), jax.numpy.asarray(x)
    H = np.asarray(run(benchmark, fn, (arg,), c.rounds))
    assert H.shape == (c.n, c.n)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-9)
    c.check_hvp(H @ c.v, c.v)
