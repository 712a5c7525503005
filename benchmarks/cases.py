"""What every benchmark module shares: the workload cases (function, arguments, warm tape, HVP
directions, reference results), the timing call and the ``extra_info`` record read by ``report.py``."""

import functools

import numpy as np

import fasttape as ft

from .workloads import (
    LORENZ_STEPS,
    directions,
    lorenz,
    lorenz_input,
    make_lorenz_fori,
    make_mlp_loss,
    make_rosenbrock,
    mlp_input,
    mlp_loss,
    rosenbrock,
    rosenbrock_hvp,
    rosenbrock_input,
)

K = 4  # directions of the multi-direction HVP benchmarks
FD_STEP = 1e-6  # central differences of the gradient: the HVP reference where no closed form is written


def leaves(tree):
    """The arrays of an array, a JAX array or a (nested) tuple/list of them, as NumPy arrays."""
    if isinstance(tree, (tuple, list)):
        return [leaf for part in tree for leaf in leaves(part)]
    return [np.asarray(tree)]


def flat(tree):
    return np.concatenate([leaf.ravel() for leaf in leaves(tree)])


def direction(tree, j):
    """Direction ``j`` (a contiguous copy) out of a k-direction HVP input or output: a trailing axis of
    k on every leaf."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(direction(part, j) for part in tree)
    return np.ascontiguousarray(np.asarray(tree)[..., j])


def _shift(tree, v, h):
    if isinstance(tree, tuple):
        return tuple(a + h * b for a, b in zip(tree, v))
    return tree + h * v


class Case:
    """One workload at one size.

    ``args`` are the function's arguments (the first is differentiated), ``tape`` and ``api`` (the
    cached ``ft.value_and_grad`` transform) are recorded and warm, ``v`` is one HVP direction and
    ``V`` the same structure with a trailing axis of K directions.  ``rounds`` is None (let
    pytest-benchmark calibrate) or a fixed number of rounds for the expensive sizes.
    """

    def __init__(self, workload, size):
        self.workload, self.size = workload, size
        self.rounds = None
        if workload == "rosenbrock":
            self.f, self.args, self.label = rosenbrock, (rosenbrock_input(size),), f"n={size}"
            self.rounds = 30 if size >= 1_000_000 else None
        elif workload == "lorenz":
            self.f, self.args, self.label = lorenz, (lorenz_input(),), f"{LORENZ_STEPS} steps"
        elif workload == "mlp":
            params, X, Y = mlp_input(*size)
            self.f, self.args, self.label = mlp_loss, (params, X, Y), "x".join(map(str, size))
            self.rounds = 15 if size[0] * size[2] >= 100_000 else None
        else:
            raise ValueError(workload)
        self.group = f"{workload} {self.label}"
        self.n = sum(leaf.size for leaf in leaves(self.args[0]))  # differentiated inputs
        self.tape = ft.trace(self.f, *self.args)
        self.api = ft.value_and_grad(self.f)
        self.api(*self.args)
        self.v = directions(self.args[0])
        self.V = directions(self.args[0], K)
        self.v_separate = [direction(self.V, j) for j in range(K)]

    def plain(self):
        """(function, arguments) of the ``numpy`` column: Lorenz runs fastest on Python floats."""
        if self.workload == "lorenz":
            return self.f, (self.args[0].tolist(),)
        return self.f, self.args

    @functools.cached_property
    def value(self):
        fn, args = self.plain()
        return float(fn(*args))

    def hvp_reference(self, v):
        """H·v, flattened: exact for Rosenbrock, central differences of the tape's gradient otherwise."""
        if self.workload == "rosenbrock":
            return rosenbrock_hvp(self.args[0], v)
        x, rest = self.args[0], self.args[1:]
        plus = flat(self.tape.grad(_shift(x, v, FD_STEP), *rest))
        minus = flat(self.tape.grad(_shift(x, v, -FD_STEP), *rest))
        return (plus - minus) / (2 * FD_STEP)

    @property
    def hvp_rtol(self):
        return 1e-10 if self.workload == "rosenbrock" else 1e-4

    def check_hvp(self, result, v):
        reference = self.hvp_reference(v)
        error = np.linalg.norm(flat(result) - reference)
        assert error <= self.hvp_rtol * np.linalg.norm(reference), (self.group, error)

    def jax_function(self, jax):
        """The same workload written against ``jax.numpy`` (Lorenz's loop as a ``fori_loop``)."""
        if self.workload == "rosenbrock":
            return make_rosenbrock(jax.numpy)
        if self.workload == "lorenz":
            return make_lorenz_fori()
        return make_mlp_loss(jax.numpy)

    def jax_args(self, jax, *extra):
        return jax.tree_util.tree_map(jax.numpy.asarray, (*self.args, *extra))


@functools.cache
def case(workload, size):
    return Case(workload, size)


def run(benchmark, fn, args, rounds=None):
    """Warm ``fn`` once, then time ``fn(*args)``: calibrated rounds, or a fixed number of them."""
    fn(*args)
    if rounds:
        return benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=1)
    return benchmark(fn, *args)


def jax_timed(jax, compiled):
    return lambda *args: jax.block_until_ready(compiled(*args))


def jax_hvp(jax, f):
    """``jit(jvp(grad(f)))`` in the first argument: called as ``(*args, v)``."""

    def hvp(*args_and_v):
        *args, v = args_and_v
        return jax.jvp(lambda p: jax.grad(f)(p, *args[1:]), (args[0],), (v,))[1]

    return jax.jit(hvp)


def describe(benchmark, case, column, group=None, **extra):
    """Group and ``extra_info``: workload, size, column and the tape's exact, machine-independent
    counts (instructions, active instructions, float64 values in its buffer, differentiated inputs n)."""
    stats = case.tape.stats()
    benchmark.group = group or case.group
    benchmark.extra_info.update(
        workload=case.workload,
        n=case.n,
        size=case.label,
        column=column,
        instructions=stats["instructions"],
        active_instructions=stats["active_instructions"],
        values=stats["values"],
        **extra,
    )


def first_value(result):
    """The function value out of a plain, value_and_grad or JAX result."""
    if isinstance(result, tuple):
        result = result[0]
    return float(result)
