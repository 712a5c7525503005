"""What every benchmark module shares: the workloads and their sizes, the cases (function, arguments,
warm tape, HVP directions, reference results, the one-time cross-check against JAX), the timing call
and the ``extra_info`` record read by ``report.py``."""

import functools
from dataclasses import dataclass

import numpy as np

import fasttape as ft
from fasttape import tape_kernels

from . import opcount
from .workloads import (
    GMM_N,
    GMM_SIZES,
    GP_SIZES,
    KMEANS_SIZES,
    LOGISTIC_SIZES,
    LORENZ_STEPS,
    LSE_SIZES,
    MLP_SIZES,
    ODE_SIZES,
    ROSENBROCK_SIZES,
    SOFTMAX_SIZES,
    XENT_SIZES,
    directions,
    gmm_input,
    gp_input,
    kmeans_input,
    logistic_input,
    lorenz,
    lorenz_input,
    lse_input,
    make_gmm_objective,
    make_gp_nll,
    make_kmeans,
    make_logistic_loss,
    make_lorenz_fori,
    make_lse,
    make_mlp_loss,
    make_ode,
    make_ode_scan,
    make_rosenbrock,
    make_softmax_loss,
    make_xent_loss,
    mlp_input,
    ode_input,
    rosenbrock_hvp,
    rosenbrock_input,
    softmax_input,
    xent_input,
)

K = 4  # directions of the multi-direction HVP benchmarks
FD_STEP = 1e-6  # central differences of the gradient: the HVP reference where no closed form is written
JAX_RTOL = 1e-9  # normwise: every fasttape gradient against jax.grad, once, before anything is timed


def _make_lorenz(xp=np):
    """The Python loop for NumPy and fasttape; for JAX the same steps in a ``fori_loop`` (tracing the
    Python loop takes JAX seconds, a cost the first-use benchmark measures separately)."""
    return lorenz if xp is np else make_lorenz_fori()


def _make_ode(xp=np):
    """The Python loop for NumPy and fasttape, a ``fori_loop`` for JAX (as ``_make_lorenz``)."""
    return make_ode(xp) if xp is np else make_ode_scan()


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: ``make(xp)`` builds its function on the array namespace ``xp``,
    ``inputs(*size)`` its arguments (the first is differentiated), ``label`` formats a size, and
    ``rounds(*size)`` is None (pytest-benchmark calibrates) or a fixed number of rounds for the
    expensive sizes, which keeps a full run within minutes."""

    make: object
    inputs: object
    sizes: tuple
    label: str
    rounds: object = None

    def size_tuple(self, size):
        return size if isinstance(size, tuple) else (size,)


WORKLOADS = {
    "rosenbrock": Workload(
        make_rosenbrock,
        lambda n: (rosenbrock_input(n),),
        ROSENBROCK_SIZES,
        "n={}",
        lambda n: 30 if n >= 1_000_000 else None,
    ),
    "lorenz": Workload(_make_lorenz, lambda: (lorenz_input(),), ((),), f"{LORENZ_STEPS} steps"),
    "logistic": Workload(
        make_logistic_loss,
        logistic_input,
        LOGISTIC_SIZES,
        "{}x{}",
        lambda m, d: 40 if m * d >= 1_000_000 else None,
    ),
    "mlp": Workload(
        make_mlp_loss,
        mlp_input,
        MLP_SIZES,
        "{}x{}x{}",
        lambda batch, n_in, hidden: 15 if batch * hidden >= 100_000 else None,
    ),
    "softmax": Workload(
        make_softmax_loss,
        softmax_input,
        SOFTMAX_SIZES,
        "{}x{}x{}",
        lambda batch, features, classes: 15 if batch * features * classes >= 1_000_000 else None,
    ),
    "gmm": Workload(
        make_gmm_objective,
        gmm_input,
        GMM_SIZES,
        f"n={GMM_N} d={{}} K={{}}",
        lambda d, k: 15 if d * k >= 100 else None,
    ),
    "gp": Workload(make_gp_nll, gp_input, GP_SIZES, "n={}", lambda n: 15 if n >= 1000 else None),
    "xent": Workload(
        make_xent_loss,
        xent_input,
        XENT_SIZES,
        "{}x{}x{} int labels",
        lambda batch, features, classes: 15 if batch * features * classes >= 1_000_000 else None,
    ),
    "kmeans": Workload(
        make_kmeans, kmeans_input, KMEANS_SIZES, "n={} d={} k={}", lambda n, d, k: 15 if n >= 10_000 else None
    ),
    "lse": Workload(make_lse, lse_input, LSE_SIZES, "n={}", lambda n: 30 if n >= 1_000_000 else None),
    "ode": Workload(_make_ode, ode_input, ODE_SIZES, "n={} s={}", lambda n, s: 15 if n * s >= 100_000 else None),
}


def all_cases(workloads=None):
    """``[(workload, size)]`` for every size of every workload (or of the named ones)."""
    names = workloads or WORKLOADS
    return [(name, size) for name in names for size in WORKLOADS[name].sizes]


def case_id(workload, size):
    """A pytest id: ``rosenbrock-1000``, ``mlp-32x8x16``, ``lorenz``."""
    parts = WORKLOADS[workload].size_tuple(size)
    return "-".join([workload, "x".join(map(str, parts))]) if parts else workload


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


def relative_error(got, reference):
    """Normwise relative error of two gradients (arrays or tuples of arrays); the absolute error against a
    gradient that is exactly zero (GradBench's ode at its sizes)."""
    reference = flat(reference)
    scale = np.linalg.norm(reference)
    return float(np.linalg.norm(flat(got) - reference) / (scale if scale > 0 else 1.0))


def made_hot(tape, call):
    """Call ``call`` (a call of ``tape``) until the tape is hot and wait for its build, as a program that
    runs it many times would: its own kernels, or the interpreter where the cost model declines them."""
    with ft.options(tape_kernels="auto"):
        for _ in range(tape_kernels.HOT_CALLS):
            call()
        if tape._kernels.state == "cold":
            raise RuntimeError("the tape did not get hot: are the interpreter's kernels compiled (fasttape warm)?")
        if not tape._kernels.done.wait(900):
            raise RuntimeError(f"the kernels of {tape.name!r} took more than 15 minutes to build")


class Case:
    """One workload at one size.

    ``args`` are the function's arguments (the first is differentiated), ``tape`` and ``api`` (the
    cached ``ft.value_and_grad`` transform) are recorded and warm and stay in the interpreter (the
    benchmarks run with ``tape_kernels="never"``); ``kernel_tape`` and ``kernel_api`` are the same
    with their tape's own kernels built (``fasttape.tape_kernels``), what a hot tape runs by default;
    ``v`` is one HVP direction and
    ``V`` the same structure with a trailing axis of K directions.  ``rounds`` is None (let
    pytest-benchmark calibrate) or a fixed number of rounds for the expensive sizes.  ``ops`` holds
    the tape's exact operation counts (see ``opcount``).
    """

    def __init__(self, workload, size):
        spec = WORKLOADS[workload]
        parts = spec.size_tuple(size)
        self.workload, self.size, self.spec = workload, size, spec
        self.f, self.args, self.label = spec.make(np), spec.inputs(*parts), spec.label.format(*parts)
        self.rounds = spec.rounds(*parts) if spec.rounds else None
        self.group = f"{workload} {self.label}"
        self.n = sum(leaf.size for leaf in leaves(self.args[0]))  # differentiated inputs
        self.tape = ft.trace(self.f, *self.args)
        self.api = ft.value_and_grad(self.f)
        self.api(*self.args)
        self.ops = opcount.count(self.tape)
        self.v = directions(self.args[0])
        self.V = directions(self.args[0], K)
        self.v_separate = [direction(self.V, j) for j in range(K)]
        self.jax_reference = None  # jax.grad's gradient, once verify_against_jax has run

    @functools.cached_property
    def kernel_tape(self):
        """A tape of its own, hot: its kernels built, or declined by the cost model (then interpreted)."""
        tape = ft.trace(self.f, *self.args)
        made_hot(tape, lambda: tape.value_and_grad(*self.args))
        with ft.options(tape_kernels="always"):  # (the HVP's kernel, compiled now if the tape has kernels)
            tape.hvp(*self.args, self.v)
        return tape

    @functools.cached_property
    def kernel_api(self):
        api = ft.value_and_grad(self.f)
        api(*self.args)
        made_hot(api.tape(*self.args), lambda: api(*self.args))
        return api

    def plain(self):
        """(function, arguments) of the ``numpy`` column: Lorenz runs fastest on Python floats."""
        if self.workload == "lorenz":
            return self.f, (self.args[0].tolist(),)
        return self.f, self.args

    @functools.cached_property
    def value(self):
        fn, args = self.plain()
        return float(fn(*args))

    @functools.cached_property
    def gradient(self):
        return self.tape.grad(*self.args)

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

    def check_gradient(self, grad, rtol=JAX_RTOL):
        """A gradient (the fused adjoint's, PyTensor's, JAX's, the tape's) against jax.grad's when
        ``verify_against_jax`` has run, else against the tape's; normwise within rtol."""
        error = relative_error(grad, self.jax_reference if self.jax_reference is not None else self.gradient)
        assert error <= rtol, (self.group, error)

    def jax_function(self, jax):
        """The same workload written against ``jax.numpy`` (Lorenz's loop as a ``fori_loop``)."""
        return self.spec.make(jax.numpy)

    def jax_args(self, jax, *extra):
        return jax.tree_util.tree_map(jax.numpy.asarray, (*self.args, *extra))

    def verify_against_jax(self, jax):
        """Once per case: the tape's gradient against ``jax.grad`` (float64, un-jitted), normwise
        within JAX_RTOL, so that no benchmark times a wrong gradient; keeps JAX's as the reference."""
        if self.jax_reference is None:
            reference = leaves(jax.grad(self.jax_function(jax))(*self.jax_args(jax)))
            error = relative_error(self.gradient, reference)
            assert error <= JAX_RTOL, f"{self.group}: fasttape's gradient differs from jax.grad by {error:.2e}"
            self.jax_reference = reference
        return self


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
    """Group and ``extra_info``: workload, size, column, the tape's instruction counts and its exact,
    machine-independent element-operation counts (``opcount``: ops_f, ops_grad, ops_hvp)."""
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
        ops_f=case.ops["f"],
        ops_grad=case.ops["grad"],
        ops_hvp=case.ops["hvp"],
        **extra,
    )


def first_value(result):
    """The function value out of a plain, value_and_grad or JAX result."""
    if isinstance(result, (tuple, list)):
        result = result[0]
    return float(result)
