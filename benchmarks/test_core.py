"""Core benchmarks: one group per workload and size, one benchmark per column.

Workloads (``cases.WORKLOADS``): Rosenbrock (n = 10 to 10⁶), Lorenz (1 000 scalar Euler steps),
logistic regression, a tanh MLP, softmax cross-entropy and the ADBench GMM objective, each at two or
more sizes.  Columns: ``numpy`` (the plain function), ``tape_fwd`` (``tape(*args)``), ``tape_vg``
(``tape.value_and_grad(*args)``), ``tape_hvp`` (``tape.hvp(*args, v)``, one direction,
forward-over-reverse), ``api_vg`` (``ft.value_and_grad(f)(*args)`` with its tape cache warm), all in
the interpreter; ``kern_fwd``, ``kern_vg``, ``kern_hvp`` and ``kern_api_vg`` the same with the tape's own kernels
(``fasttape.tape_kernels``: what a hot tape runs)
and, when JAX is installed, ``jax_jit`` / ``jax_jit_vg`` / ``jax_jit_hvp``
(``jit(jvp(grad(f)))``), float64, each call ending in ``block_until_ready``.  Everything is traced,
compiled and called once before timing starts, every fasttape gradient has been checked against
``jax.grad`` (normwise, 1e-9) and every timed result is checked.  Each benchmark's ``extra_info``
holds the workload, n, column and the tape's exact counts, which ``python -m benchmarks.report``
reads back.  ``test_peers.py`` adds the fused Numba adjoints, PyTensor and the first-use times.

Run with ``python -m pytest benchmarks --benchmark-only --benchmark-autosave``.
"""

import pytest

from .cases import all_cases, case, case_id, describe, first_value, jax_hvp, jax_timed, relative_error, run

FASTTAPE_COLUMNS = (
    "numpy",
    "tape_fwd",
    "tape_vg",
    "tape_hvp",
    "api_vg",
    "kern_fwd",
    "kern_vg",
    "kern_hvp",
    "kern_api_vg",
)
JAX_COLUMNS = ("jax_jit", "jax_jit_vg", "jax_jit_hvp")
CASES = all_cases()
IDS = [case_id(*c) for c in CASES]


def verified(workload, size):
    """The case, its gradient checked against jax.grad once (when JAX is installed)."""
    c = case(workload, size)
    try:
        import jax
    except ImportError:
        return c
    jax.config.update("jax_enable_x64", True)
    return c.verify_against_jax(jax)


def bench_fasttape(benchmark, c, column):
    extra = {"k": 1} if column in ("tape_hvp", "kern_hvp") else {}
    describe(benchmark, c, column, **extra)
    if column == "numpy":
        fn, args = c.plain()
    elif column == "tape_hvp":
        fn, args = c.tape.hvp, (*c.args, c.v)
    elif column.startswith("kern"):  # the tape's own kernels
        tape = c.kernel_tape
        fn = {"kern_fwd": tape, "kern_vg": tape.value_and_grad, "kern_hvp": tape.hvp, "kern_api_vg": c.kernel_api}[
            column
        ]
        args = (*c.args, c.v) if column == "kern_hvp" else c.args
        benchmark.extra_info["tier"] = tape._kernels.state  # "ready", or "declined" (then interpreted)
    else:
        fn, args = {"tape_fwd": c.tape, "tape_vg": c.tape.value_and_grad, "api_vg": c.api}[column], c.args
    result = run(benchmark, fn, args, c.rounds)
    if column in ("tape_hvp", "kern_hvp"):
        c.check_hvp(result, c.v)
    else:
        assert first_value(result) == pytest.approx(c.value, rel=1e-12)
    if column in ("tape_vg", "api_vg", "kern_vg", "kern_api_vg"):  # the gradient checked against JAX at setup
        # the tape's own kernels add a sum's terms in another order (in chunks, where the interpreter adds
        # a scalar operand's adjoint one term after another): exact AD against exact AD, 1e-10
        assert relative_error(result[1], c.gradient) <= (1e-10 if column.startswith("kern") else 1e-12)


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
    if column == "jax_jit_vg":
        c.check_gradient(result[1])


@pytest.mark.parametrize("workload,size", CASES, ids=IDS)
@pytest.mark.parametrize("column", FASTTAPE_COLUMNS)
def test_fasttape(benchmark, column, workload, size):
    bench_fasttape(benchmark, verified(workload, size), column)


@pytest.mark.parametrize("workload,size", CASES, ids=IDS)
@pytest.mark.parametrize("column", JAX_COLUMNS)
def test_jax(benchmark, jax, column, workload, size):
    bench_jax(benchmark, jax, verified(workload, size), column)
