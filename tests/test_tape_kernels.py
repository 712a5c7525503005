"""A tape's own kernels (fasttape.tape_kernels): the same values, gradients and errors as the interpreter.

Each program is recorded once and replayed in both tiers on the same tape: the interpreter (itself held
to JAX by the oracle) and the tape's generated kernels, which must agree to 1e-12 relative.  The programs
cover what the code generator distinguishes: every elementwise primitive written out in a loop and in
straight-line code, scalar operands summed over a loop, one adjoint written through overlapping views,
one-element values kept in locals across family calls, guards, non-differentiated inputs, and several
outputs.  Hand-written programs are also checked against JAX directly.
"""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import fasttape as ft
from benchmarks.workloads import make_ode, ode_input
from fasttape import tape_kernels, tape_periods, tape_plan, tiers
from fasttape.errors import BranchChangedError, InputSignatureError
from fasttape.layout import C_OP, C_OUT
from fasttape.primitives import PRIMITIVE_BY_OPCODE, PRIMITIVES
from oracle.cases import sample

from .helpers import assert_close, assert_tree_close

RTOL = 1e-12
ELEMENTWISE = [p for p in PRIMITIVES if p.kind in ("unary", "binary", "comparison") and not p.static]


def user_function(prim):
    """The NumPy or scipy.special function a user calls for ``prim``."""
    return getattr(np, prim.numpy[0]) if prim.numpy else getattr(scipy.special, prim.scipy[0])


def jvp_directions(differentiated):
    """Three tangent directions per differentiated leaf (a trailing axis): a pattern over every element,
    the first element of the first leaf alone (what that input does not reach is skipped), and zero."""
    first = []

    def three(a):
        pattern = np.cos(np.arange(np.size(a)) + 1.0)
        unit = np.zeros(np.size(a))
        if not first:
            unit[:1] = 1.0
            first.append(a)
        return np.stack([pattern, unit, np.zeros(np.size(a))], axis=-1).reshape(np.shape(a) + (3,))

    return jax.tree_util.tree_map(three, differentiated)


def both_tiers(f, *args, **trace_options):
    """``f``'s tape replayed by the interpreter and by its own kernels: (tape, interpreted, generated), each
    ``(value_and_grad, forward, hvp, jvp, value_grad_and_hvp)`` (those of the gradient None for a non-scalar
    output; the HVP's direction a fixed pattern over the differentiated arguments, the JVP's three
    directions those of ``jvp_directions``)."""
    tape = ft.trace(f, *args, **trace_options)
    argnums = trace_options.get("argnums", 0)
    differentiated = [args[a] for a in argnums] if isinstance(argnums, tuple) else args[argnums]
    direction = jax.tree_util.tree_map(
        lambda a: np.cos(np.arange(np.size(a)) + 1.0).reshape(np.shape(a)), differentiated
    )
    directions = jvp_directions(tuple(differentiated) if isinstance(argnums, tuple) else differentiated)

    def replay():
        vg = tape.value_and_grad(*args) if tape._grad_ok else None
        hvp = tape.hvp(*args, direction) if tape._grad_ok else None
        # (the HVP kernel computes H v alone: the value and the gradient come from the vg kernel after it)
        all_three = tape.value_grad_and_hvp(*args, direction) if tape._grad_ok else None
        return vg, tape(*args), hvp, tape.jvp(args, directions), all_three

    with ft.options(tape_kernels="never"):
        interpreted = replay()
    assert tape._kernels.forward is None
    with ft.options(tape_kernels="always"):
        generated = replay()
    assert tape._kernels.state == "ready", tape._kernels.error
    assert_compiled_and_cacheable(tape, ["forward", "jvp", *(["value_and_grad", "hvp"] if tape._grad_ok else [])])
    return tape, interpreted, generated


def assert_compiled_and_cacheable(tape, entries):
    """Each entry point ran as the tape's own kernel (a failed build leaves the interpreter answering,
    with the same results) and can be saved to the disk cache (Numba refuses code with dynamic globals,
    such as a function passed as an argument)."""
    for entry in entries:
        kernel = getattr(tape._kernels, entry)
        assert kernel is not None, f"the {entry} kernel was not built"
        for compiled in kernel.overloads.values():
            assert not compiled.library.has_dynamic_globals, f"the {entry} kernel cannot be cached"


def function_source(source: str, name: str) -> str:
    """The text of the generated function ``name`` in a kernel source (to its end: the next decorator)."""
    start = source.index(f"def {name}(")
    end = source.find("\n@jit", start)
    return source[start : end if end >= 0 else len(source)]


def assert_same(interpreted, generated, rtol=RTOL, atol=1e-300):
    assert_tree_close(generated, interpreted, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


def _elementwise_program(primitives, n):
    """One term per primitive: sum(c_k * prim(x_k, y_k)) over arrays of ``n`` elements (a loop block), or
    over Python-float-like 0-d elements when n == 1 (straight-line code)."""

    def f(xs, ys):
        total = 0.0
        for k, prim in enumerate(primitives):
            fn = user_function(prim)
            z = fn(xs[k]) if prim.kind == "unary" else fn(xs[k], ys[k])
            total = total + (0.1 * k + 0.3) * z
        return np.sum(total)

    return f


def _elementwise_inputs(primitives, shape, rng):
    xs = [sample(p.domains[0], shape, rng) for p in primitives]
    ys = [sample(p.domains[1], shape, rng) if len(p.domains) > 1 else np.zeros(shape) for p in primitives]
    return xs, ys


@pytest.mark.parametrize("shape", [(6,), (1,)], ids=["loop", "straight-line"])
@pytest.mark.parametrize("kinds", [("unary",), ("binary", "comparison")])
def test_every_elementwise_formula_matches_the_interpreter(kinds, shape, rng):
    primitives = [p for p in ELEMENTWISE if p.kind in kinds]
    xs, ys = _elementwise_inputs(primitives, shape, rng)
    tape, interpreted, generated = both_tiers(_elementwise_program(primitives, shape[0]), xs, ys, argnums=(0, 1))
    assert_same(interpreted, generated)


@pytest.mark.parametrize("side", ["scalar-array", "array-scalar"])
def test_binary_formulas_with_a_scalar_operand_sum_its_adjoint_over_the_loop(side, rng):
    primitives = [p for p in ELEMENTWISE if p.kind == "binary"]
    xs, ys = _elementwise_inputs(primitives, (5,), rng)
    if side == "scalar-array":
        xs = [x[:1].reshape(()) for x in xs]
    else:
        ys = [y[:1].reshape(()) for y in ys]
    tape, interpreted, generated = both_tiers(_elementwise_program(primitives, 5), xs, ys, argnums=(0, 1))
    assert_same(interpreted, generated)


def rosenbrock(xp, x):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def mlp(xp, w, x):
    h = xp.tanh(x @ w[:8].reshape(2, 4) + w[8:12])
    return xp.sum(h**2) + xp.sum(xp.sin(w)) * w[3]


def scalar_loop(xp, x):
    s = 0.0
    for k in range(5):
        s = s + x[k] * x[k + 1] - xp.sin(x[k]) / (1.0 + x[k] ** 2)
    return s * s


def mixed(xp, x):
    """One-element values feeding vector loops as scalars, a family row (stack) between them, and a
    vector reduced to a scalar that flows back into straight-line code."""
    a = x[0] * x[1]
    v = xp.exp(x[2:] * a) - a  # a: a scalar operand of the loop (its adjoint summed over it)
    m = xp.sum(v * v)  # a family row reads the loop
    b = xp.stack([a, m, a * m])  # a family row reads the locals a and m
    c = xp.sin(b) * x[:3]
    return xp.sum(c) + m * a


def lorenz(xp, p, steps=200):
    """A Python loop over floats: one period of 14 rows, recorded 200 times."""
    x, y, z = 1.0, 1.0, 1.0
    s, r, b = p[0], p[1], p[2]
    for _ in range(steps):
        x, y, z = x + 0.01 * s * (y - x), y + 0.01 * (x * (r - z) - y), z + 0.01 * (x * y - b * z)
    return x * x + y * y + z * z


def recurrent(xp, w, h0):
    """A period whose body holds family rows (matmul, sum) and a loop block: h = tanh(W h + b)."""
    W, b = w[:16].reshape(4, 4), w[16:20]
    h, total = h0, 0.0
    for _ in range(12):
        h = xp.tanh(W @ h + b)
        total = total + xp.sum(h * h) * w[0]
    return total


def guarded_pendulum(xp, theta):
    """A guard in every iteration (a comparison row and a recorded branch)."""
    a, w = theta[0], theta[1]
    for _ in range(60):
        w = w - 0.05 * 9.81 * xp.sin(a)
        if w > -10.0:
            a = a + 0.05 * w
        else:
            a = a - 0.05 * w
    return a * a + w


def concat_blocks(xp, x):
    """A concatenation copying two blocks' outputs that lie side by side: one run of positions, two flags (in
    the direction of x[0], the first block is skipped and the second is not)."""
    u = x[1:3] * x[3]
    w = x[:3] * x[1]
    return xp.sum(xp.sin(xp.concatenate([u, w])) * x[0])


def stencil(xp, x, more=True):
    """An adjoint written through three shifted views in one loop (x[2:], x[1:-1], x[:-2]).  ``more``: a
    scalar operand inside their range (x[0]) and another term write x's adjoint first in the reverse, so
    the loop adds to it; else the loop writes it first (assigns), then a one-element value adds to x[0]."""
    scale = x[0] if more else x[0] * 2.0
    lap = x[2:] - 2.0 * x[1:-1] + x[:-2]
    energy = xp.sum(lap * lap * scale)
    return energy + xp.sum(xp.sin(x) * x) if more else energy


def runge_kutta(xp, x, steps=12):
    """GradBench's ode (classical Runge-Kutta on y' = x * (1, y_0, ..., y_{n-2})): a period whose body
    evaluates one right-hand side four times (its rows recur inside it), with a family row (the
    concatenation) reading a constant made afresh in every iteration."""
    h, y = 2.0 / steps, xp.zeros(x.shape[0])
    rhs = lambda y: x * xp.concatenate([xp.ones(1), y[:-1]])  # noqa: E731
    for _ in range(steps):
        k1 = rhs(y)
        k2 = rhs(y + h / 2 * k1)
        k3 = rhs(y + h / 2 * k2)
        k4 = rhs(y + h * k3)
        y = y + h / 6 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y[-1] + xp.sum(y * y)


PROGRAMS = {
    "rosenbrock-10": (rosenbrock, (np.linspace(-1.2, 1.0, 10),)),
    "rosenbrock-20000": (rosenbrock, (np.linspace(-1.2, 1.0, 20000),)),
    "mlp": (mlp, (np.linspace(-1.0, 1.0, 12), np.linspace(-2.0, 2.0, 6).reshape(3, 2))),
    "scalar-loop": (scalar_loop, (np.linspace(0.1, 1.0, 6),)),
    "mixed": (mixed, (np.linspace(0.2, 0.9, 7),)),
    "lorenz": (lorenz, (np.array([10.0, 28.0, 8.0 / 3.0]),)),
    "recurrent": (recurrent, (np.linspace(-0.5, 0.5, 20), np.linspace(0.1, 0.4, 4))),
    "guarded-pendulum": (guarded_pendulum, (np.array([0.4, 0.1]),)),
    "stencil": (stencil, (np.linspace(-1.0, 1.3, 40),)),
    "runge-kutta": (runge_kutta, (np.linspace(0.2, 0.9, 8),)),
    "stencil-alone": (lambda xp, x: stencil(xp, x, more=False), (np.linspace(-1.0, 1.3, 40),)),
    "concat-blocks": (concat_blocks, (np.linspace(0.3, 1.1, 4),)),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_programs_match_the_interpreter_and_jax(name):
    f, args = PROGRAMS[name]
    argnums = tuple(range(len(args)))
    tape, interpreted, generated = both_tiers(lambda *a: f(np, *a), *args, argnums=argnums)
    assert_same(interpreted, generated)
    value, grads = generated[0]
    jax_value, jax_grads = jax.value_and_grad(lambda *a: f(jnp, *a), argnums=argnums)(*args)
    assert_close(value, jax_value, rtol=1e-10)
    assert_tree_close(grads, jax_grads, rtol=1e-10, atol=1e-10)
    direction = tuple(np.cos(np.arange(a.size) + 1.0).reshape(a.shape) for a in args)
    jax_hvp = jax.jvp(jax.grad(lambda *a: f(jnp, *a), argnums=argnums), args, direction)[1]
    assert_tree_close(generated[2], jax_hvp, rtol=1e-10, atol=1e-10)


def test_a_gradient_whose_output_is_the_last_loops_sum_makes_one_pass():
    """Rosenbrock's value_and_grad: no forward loop before the seed; the reverse loop computes the values
    and adds up the sum (the programs' tests check its results against the interpreter and JAX)."""
    f, args = PROGRAMS["rosenbrock-20000"]
    source = tape_kernels.kernel_source(ft.trace(lambda x: f(np, x), *args))
    body = function_source(source, "value_and_grad_body")
    seeded = body.index("] = 1.0")
    assert "for j" not in body[:seeded]
    assert body.count("for j") == 1 and re.search(r"(acc\d+) = sum_add\(\1, ", body[seeded:])


def test_an_hvp_computes_long_vectorised_values_again_and_matches_jax(monkeypatch):
    """An HVP's kernels compute a long run of exp, log, tanh... again in the reverse instead of storing it and
    its tangent in the forward (``tape_plan.RECOMPUTED_FROM``, lowered here to reach it with small arrays):
    the same results as the interpreter's and JAX's."""

    def f(xp, x):
        return xp.sum(xp.log1p(xp.exp(xp.tanh(x) * x))) + xp.log(xp.sum(xp.exp(x - xp.max(x))))

    x = np.linspace(-2.0, 2.0, 64)
    kept = tape_kernels.kernel_source(ft.trace(lambda x: f(np, x), x))
    monkeypatch.setattr(tape_plan, "RECOMPUTED_FROM", 16)
    tape, interpreted, generated = both_tiers(lambda x: f(np, x), x)
    recomputed = tape_kernels.kernel_source(tape)

    def hvp_part(source):
        return function_source(source, "hvp")

    assert hvp_part(recomputed).count("exp(") > hvp_part(kept).count("exp(")
    assert hvp_part(recomputed).count("tanh(") > hvp_part(kept).count("tanh(")
    gradient = function_source(kept, "value_and_grad")
    assert gradient == function_source(recomputed, "value_and_grad")  # (a gradient keeps them)
    assert_same(interpreted, generated)
    direction = np.cos(np.arange(x.size) + 1.0)
    jax_hvp = jax.jvp(jax.grad(lambda x: f(jnp, x)), (x,), (direction,))[1]
    assert_close(generated[2], jax_hvp, rtol=1e-10, atol=1e-12)


def test_a_gather_of_a_value_the_differentiated_inputs_do_not_reach():
    """The JVP's copy of such a run writes zeros (its source's block has no tangent pass, hence no flag)."""

    def f(x, y):
        return np.sum(np.sin(np.concatenate([x * 2.0, np.cos(y) * 2.0, x * x])))

    tape, interpreted, generated = both_tiers(f, np.linspace(0.1, 0.5, 4), np.linspace(0.0, 1.0, 3), argnums=0)
    assert_same(interpreted, generated)


def test_a_tape_with_hundreds_of_adjoint_runs_to_zero_compiles_every_kernel():
    """GradBench's ode at 100 steps zeroes ~300 adjoint runs per plane before its reverse: written out one
    loop each (600 loops in the HVP kernel), Numba 0.65's control-flow analysis, which recurses once per
    basic block, exceeded Python's recursion limit and the HVP stayed interpreted (0.68 builds it); from
    ZERO_TABLE_MIN runs on they are one loop over a table."""
    tape, interpreted, generated = both_tiers(make_ode(np), *ode_input(100, 100))
    assert "zero_runs_0" in tape_kernels.kernel_source(tape)
    assert_same(interpreted, generated)


@pytest.mark.parametrize("name", ["lorenz", "recurrent", "guarded-pendulum", "runge-kutta"])
def test_a_loop_recorded_many_times_is_written_once(name):
    f, args = PROGRAMS[name]
    tape = ft.trace(lambda *a: f(np, *a), *args)
    periods = tape_periods.find_periods(tape.ins)
    assert len(periods) == 1 and periods[0].count >= 10
    covered = periods[0].count * periods[0].length
    assert covered >= 0.8 * tape.ins.shape[0]
    source = tape_kernels.kernel_source(tape)
    # the period: forward, jvp (its forward and its tangent pass), value_and_grad (two), hvp (two)
    assert source.count("for it in range(") == 7


@pytest.mark.parametrize("name", ["stencil", "stencil-alone"])
def test_shifted_views_of_one_adjoint_are_written_once_per_element(name):
    """The reverse loop writes x's adjoint element by element, from delay lines (no zeroing pass, no
    element written twice), assigning it when the loop writes it first and adding to it otherwise."""
    f, args = PROGRAMS[name]
    source = tape_kernels.kernel_source(ft.trace(lambda x: f(np, x), *args))
    reverse = source[source.index("def value_and_grad") :]
    assert "gs0_2_0_2 = gs0_2_0_1" in reverse  # (view x[2:]'s contributions, two iterations late)
    assigned = ("] = gs0_0_0 + " in reverse, "] += gs0_0_0 + " in reverse)
    assert assigned == ((False, True) if name == "stencil" else (True, False))


def test_the_code_of_a_period_does_not_grow_with_its_iterations():
    x = np.array([10.0, 28.0, 8.0 / 3.0])
    sources = [tape_kernels.kernel_source(ft.trace(lambda p, n=n: lorenz(np, p, n), x)) for n in (50, 400)]
    assert len(sources[0].splitlines()) == len(sources[1].splitlines())
    assert "range(398)" in sources[1]  # (the first iteration reads the initial values: written out)


def test_rows_that_do_not_repeat_make_no_period():
    f, args = PROGRAMS["mixed"]
    assert tape_periods.find_periods(ft.trace(lambda x: f(np, x), *args).ins) == []


def test_an_input_not_differentiated_and_a_guard_taking_the_other_branch():
    def f(x, y):
        s = np.sum(x * y)
        if s > 0:  # a guard
            return np.sum(np.sin(x) * y) + s
        return np.sum(np.cos(x))

    x, y = np.linspace(0.1, 1.0, 4), np.linspace(1.0, 2.0, 4)
    tape, interpreted, generated = both_tiers(f, x, y, argnums=0)
    assert_same(interpreted, generated)
    with pytest.raises(BranchChangedError):
        tape.value_and_grad(x, -y)
    with pytest.raises(BranchChangedError):
        tape(x, -y)
    with pytest.raises(InputSignatureError):
        tape.value_and_grad(np.ones(5), y)


def test_several_outputs_and_aux_through_the_generated_forward():
    def f(x):
        y = np.tanh(x) * 2.0
        return np.sum(y * y), {"y": y, "first": y[0] * x[1]}

    x = np.linspace(-1.0, 1.0, 5)
    tape, interpreted, generated = both_tiers(f, x, has_aux=True)
    assert_same(interpreted, generated)


def test_the_kernels_source_is_readable_and_names_its_rows():
    f, args = PROGRAMS["mlp"]
    tape = ft.trace(lambda *a: f(np, *a), *args)
    source = tape_kernels.kernel_source(tape)
    assert "def forward(ins, aux, buf, fns):" in source
    assert re.search(r"def value_and_grad\(ins, aux, buf, fns(, in\d+)*\):", source)
    assert "# matmul" in source  # a family row: a call of its kernel, named
    compile(source, "<kernels>", "exec")


def test_a_gather_of_a_few_runs_is_written_as_copies():
    """The stack of three one-element values in "mixed" calls no gather kernel: copies forward, adds in the
    reverse (the gather family's own semantics; the programs' tests check the results)."""
    f, args = PROGRAMS["mixed"]
    tape = ft.trace(lambda x: f(np, x), *args)
    source = tape_kernels.kernel_source(tape)
    assert "call_" not in source
    gather = next(i for i in range(tape.ins.shape[0]) if PRIMITIVE_BY_OPCODE[tape.ins[i, C_OP]].name == "gather")
    out = int(tape.ins[gather, C_OUT])
    forward = function_source(source, "forward")
    # (m and a * m lie side by side: one run of two)
    assert f"buf[{out}] = buf[" in forward and f"buf[unsigned({out + 1} + j)] = buf[" in forward


def test_a_tape_hot_for_its_gradient_compiles_its_jvp_and_hvp_when_first_asked_for():
    """Only forward and value_and_grad are compiled when a tape gets hot; jvp and hvp in the background on
    their first call, which the interpreter answers meanwhile (with the same results)."""
    x = np.linspace(-1.0, 1.0, 8)
    tape = ft.trace(lambda x: rosenbrock(np, x), x)
    with ft.options(tape_kernels="never"):
        expected = tape.hvp(x, x), tape.jvp((x,), np.eye(8))
    with ft.options(tape_kernels="always"):
        tape.value_and_grad(x)
    kernels = tape._kernels
    assert kernels.state == "ready" and kernels.hvp is None and kernels.jvp is None
    with ft.options(tape_kernels="auto"):
        first = tape.hvp(x, x), tape.jvp((x,), np.eye(8))  # (asks for them: compiled in the background)
        assert kernels.asked == {"hvp", "jvp"}
        deadline = time.monotonic() + 120
        while (kernels.hvp is None or kernels.jvp is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kernels.hvp is not None and kernels.jvp is not None
        assert_same(expected, first)
        assert_same(expected, (tape.hvp(x, x), tape.jvp((x,), np.eye(8))))


def test_a_hot_tape_switches_in_the_background_and_keeps_its_results():
    x = np.linspace(-1.0, 1.0, 8)
    g = ft.grad(lambda x: rosenbrock(np, x))
    previous = tiers.set_mode("compiled")  # (a tape gets hot only once the interpreter's kernels are compiled)
    try:
        with ft.options(tape_kernels="auto"):
            first = g(x)
            tape = g.tape(x)
            for _ in range(tape_kernels.HOT_CALLS + 1):
                g(x)
            assert tape._kernels.state != "cold"
            assert tape._kernels.done.wait(120)
            assert tape._kernels.state == "ready", tape._kernels.error
            assert_close(g(x), first, rtol=RTOL, atol=0)
    finally:
        tiers.set_mode(previous)


def compiles_of(tape, monkeypatch) -> list:
    """The (entry point, build state) of every compilation of ``tape``'s kernels from now on, in order."""
    compiled = []
    real_compile = tape_kernels._compile

    def recording(module, entry, single):
        compiled.append((entry, tape._kernels.state))
        real_compile(module, entry, single)

    monkeypatch.setattr(tape_kernels, "_compile", recording)
    return compiled


def test_a_tape_hot_in_a_callers_loop_races_on_the_hot_calls_inputs_and_builds_its_gradient_first(monkeypatch):
    """A caller calling in a loop holds the tape's one spare workspace all but between its calls: the race
    times a copy of the buffer of the call that made the tape hot.  That call's entry point (here the
    gradient) is compiled, raced and switched to before the other one (the forward)."""
    x = np.linspace(-1.0, 1.0, 8)
    tape = ft.trace(lambda x: rosenbrock(np, x) * 1.25, x)
    with ft.options(tape_kernels="never"):
        expected = tape.value_and_grad(x), tape.forward(x)
    compiled = compiles_of(tape, monkeypatch)
    previous = tiers.set_mode("compiled")  # (a tape gets hot only once the interpreter's kernels are compiled)
    try:
        with ft.options(tape_kernels="auto"):
            held = tape._take_workspace()  # the caller's, mid-call: no spare workspace to race on
            tape._bind((x,), held)
            kernels = tape._kernels
            kernels.calls = tape_kernels.HOT_CALLS - 1
            kernels.called(tape, "value_and_grad", held.buf)
            assert kernels.done.wait(120) and kernels.state == "ready", kernels.error
            assert kernels.race is not None and min(kernels.race) > 0
            assert compiled == [("value_and_grad", "queued"), ("forward", "ready")]
            assert_same(expected, (tape.value_and_grad(x), tape.forward(x)))
    finally:
        tiers.set_mode(previous)


def test_a_tape_made_hot_by_its_hvps_compiles_the_hvp_before_the_forward(monkeypatch):
    """HVP calls that make a tape hot: the gradient is compiled and raced (it decides the tier), then the
    HVP, then the forward; the next HVP call runs the tape's own kernel."""
    x = np.linspace(-1.0, 1.0, 8)
    v = np.cos(np.arange(8.0))
    tape = ft.trace(lambda x: rosenbrock(np, x) * 0.75, x)
    with ft.options(tape_kernels="never"):
        expected = tape.hvp(x, v)
    compiled = compiles_of(tape, monkeypatch)
    previous = tiers.set_mode("compiled")
    try:
        with ft.options(tape_kernels="auto"):
            kernels = tape._kernels
            kernels.calls = tape_kernels.HOT_CALLS - 1
            tape.hvp(x, v)
            assert kernels.done.wait(120) and kernels.state == "ready", kernels.error
            assert compiled == [("value_and_grad", "queued"), ("hvp", "ready"), ("forward", "ready")]
            assert kernels.hvp is not None and kernels.hvp_io is not None
            assert_same(expected, tape.hvp(x, v))
    finally:
        tiers.set_mode(previous)


def test_kernels_slower_than_the_interpreter_are_declined(monkeypatch):
    """A build races the kernels' value_and_grad against the interpreter's on the tape's last inputs and
    keeps the faster tier; "always" keeps the kernels without a race."""
    x = np.linspace(-1.0, 1.0, 8)
    forced = ft.trace(lambda x: rosenbrock(np, x), x)
    with ft.options(tape_kernels="never"):
        expected = forced.value_and_grad(x)
        assert tape_kernels._race(forced, None) is None  # (no kernels to time)
    with ft.options(tape_kernels="always"):
        forced.value_and_grad(x)
    assert forced._kernels.state == "ready" and forced._kernels.race is None
    interpreted, compiled = tape_kernels._race(forced, forced._kernels.module)  # the real race, timed
    assert 0 < interpreted < 1 and 0 < compiled < 1
    never_called = ft.trace(lambda x: rosenbrock(np, x), x)
    assert tape_kernels._race(never_called, forced._kernels.module) is None  # no inputs to time it on

    for race, state in (((1e-6, 2e-6), "declined"), ((2e-6, 1e-6), "ready")):
        monkeypatch.setattr(tape_kernels, "_race", lambda tape, module, race=race: race)
        tape = ft.trace(lambda x: rosenbrock(np, x), x)
        with ft.options(tape_kernels="never"):
            tape.value_and_grad(x)
        tape_kernels._build(tape)
        kernels = tape._kernels
        assert (kernels.state, kernels.race) == (state, race)
        assert (kernels.value_and_grad is None) == (state == "declined")
        with ft.options(tape_kernels="auto"):
            assert_same(expected, tape.value_and_grad(x))


def test_a_tape_recorded_again_loads_its_kernels_from_the_disk_cache():
    from fasttape import cache

    if not cache.ENABLED:
        pytest.skip("the disk cache is off")
    f, args = PROGRAMS["scalar-loop"]
    tapes = [ft.trace(lambda x: f(np, x), *args) for _ in range(3)]
    with ft.options(tape_kernels="always"):
        tapes[0].value_and_grad(*args)
        tape_kernels._MODULES.clear()  # as in a new process: only the disk cache holds the kernels
        tapes[1].value_and_grad(*args)
        tapes[2].value_and_grad(*args)  # the same structure again in this process: the same module
    first, second, third = (t._kernels.value_and_grad for t in tapes)
    assert first is not second  # two modules, one source
    assert second.stats.cache_hits, "the second tape compiled its kernels again"
    assert third is second


def test_a_wrong_choice_of_tier_names_the_choices():
    with pytest.raises(ValueError, match=r"tape_kernels must be one of \('auto', 'always', 'never'\)"):
        ft.set_options(tape_kernels="sometimes")
    assert ft.get_options()["tape_kernels"] in ("auto", "always", "never")


def test_one_array_in_and_its_gradient_out_through_the_kernel():
    """A tape of one array argument copies it in and its gradient out inside its kernel; any other layout,
    shape or branch takes the general path, with the same results and errors."""

    def f(x):
        s = np.sum(np.sin(x))
        return s * np.sum(x * x) if s > 0 else -s

    x = np.linspace(0.1, 1.0, 12).reshape(3, 4)
    v = np.cos(np.arange(12.0)).reshape(3, 4)
    with ft.options(tape_kernels="never"):
        expected = ft.value_and_grad(f)(x)
        expected_negative = ft.value_and_grad(f)(-x)
        expected_strided = ft.value_and_grad(f)(np.asfortranarray(x))
        expected_hvp = ft.trace(f, x).hvp(x, v)
    g = ft.value_and_grad(f)
    with ft.options(tape_kernels="always"):
        g(x)
    tape = g.tape(x)
    assert tape._kernels.value_and_grad_io is not None
    assert tape._kernels.short_io  # (no family kernel in its gradient: the io kernel takes buf, x and g)
    assert_same(expected, g(x))
    assert_same(expected, g(x.copy()))
    assert_same(expected_strided, g(np.asfortranarray(x)))  # (not C-contiguous: the general path)
    assert_same(expected_negative, g(-x))  # the other branch: a second tape
    assert_same(expected, g(x))
    with pytest.raises(InputSignatureError):
        tape.value_and_grad(np.ones(5))
    assert tape._kernels.hvp_io is None  # (compiled when an HVP is first asked for)
    with ft.options(tape_kernels="always"):
        assert_same(expected_hvp, tape.hvp(x, v))
    assert tape._kernels.hvp_io is not None
    assert_same(expected_hvp, tape.hvp(x, v))
    assert_same(expected_hvp, tape.hvp(np.asfortranarray(x), np.asfortranarray(v)))  # (the general path)
    with pytest.raises(BranchChangedError):
        tape.hvp(-x, v)


def test_a_tape_of_several_arrays_copies_them_in_and_the_gradient_out_in_its_kernel():
    """A tape of float arrays, one of them differentiated (here the second), gets the io kernel too: every
    argument copied in, the gradient out; another layout, shape or branch takes the general path."""

    def loss(w, X, y):
        z = X @ w
        return np.mean(np.logaddexp(0.0, -y * z)) if np.sum(z) > 0 else np.sum(z * z)

    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 30))  # (past the matmul family's BLAS size: its rows call a family kernel)
    w = np.abs(rng.standard_normal(30))
    X = np.abs(X)
    y = np.sign(rng.standard_normal(40))
    with ft.options(tape_kernels="never"):
        reference = ft.value_and_grad(loss, argnums=1)
        expected = reference(w, X, y)
        expected_other = reference(-w, X, y)
    vg = ft.value_and_grad(loss, argnums=1)
    with ft.options(tape_kernels="always"):
        vg(w, X, y)
    tape = vg.tape(w, X, y)
    assert tape._kernels.value_and_grad_io is not None and not tape._kernels.short_io
    for _ in range(2):
        assert_same(expected, vg(w, X, y))
    assert_same(expected, vg(w.copy(), np.asfortranarray(X), y))  # (not C-contiguous: the general path)
    assert_same(expected, tape.value_and_grad(w, X, y))
    assert_same(expected_other, vg(-w, X, y))  # the other branch: a second tape
    assert_same(expected, vg(w, X, y))
    with pytest.raises(InputSignatureError):
        tape.value_and_grad(w, X[:5], y)
    assert_same(expected[1], ft.grad(loss, argnums=1)(w, X, y))


def test_grad_goes_straight_to_the_kernel_and_still_names_an_index_out_of_range():
    """ft.grad and ft.value_and_grad of one array argument call the tape's kernel directly (the repeated
    call's short path); an index computed out of range is named by where it came from, as elsewhere."""

    def f(x):
        i = (x > 0).astype(np.int64) * 10  # index 10 (out of range) wherever x > 0
        return np.sum(x[i] * x)

    x = -np.linspace(1.0, 2.0, 5)
    with ft.options(tape_kernels="never"):
        expected = ft.value_and_grad(f)(x)
    g, vg = ft.grad(f), ft.value_and_grad(f)
    with ft.options(tape_kernels="always"):
        g(x), vg(x)
    assert g.tape(x)._kernels.value_and_grad_io is not None and vg.tape(x)._kernels.value_and_grad_io is not None
    assert not g.tape(x)._kernels.short_io  # (the gather's kernel reads ins and aux: the io kernel takes them)
    assert_same(expected[1], g(x))
    assert_same(expected, vg(x))
    named = r"out of bounds .*\.f': the indices come from indices computed from the inputs"
    for transformed in (g, vg):
        with pytest.raises(IndexError, match=named):
            transformed(-x)


def bones(xp, theta, points, weights):
    """Rigid pieces moving points (issue 15's many-direction program, small): each intermediate depends on a
    few of the inputs, a family row (stack) joins them, a long run of a library function (tanh) ends it."""
    moved = 0.0
    for b in range(3):
        c, s = xp.cos(theta[b]), xp.sin(theta[b])
        x = c * points[0] - s * points[1] + theta[3 + b]
        y = s * points[0] + c * points[1]
        z = points[2] * xp.exp(0.1 * theta[6 + b])
        moved = moved + xp.stack([x, y, z]) * weights[:, b]
    return xp.ravel(xp.tanh(moved) * xp.sqrt(1.0 + moved * moved) + xp.sin(moved) - points)


def test_a_jvp_runs_each_direction_through_what_it_reaches_and_matches_jax():
    """k directions, one after another: blocks a direction does not reach are skipped (a family row reading
    one gets zeros, a result of one reads zeros), a library row's costly partial (sin's cos, over 4 500
    values) is computed once for every direction."""
    rng = np.random.default_rng(3)
    points, weights = rng.normal(size=(3, 1500)), rng.random(size=(1500, 3))
    theta = rng.normal(size=9) * 0.3
    f = lambda t: bones(np, t, points, weights)  # noqa: E731
    tape = ft.trace(f, theta)
    source = tape_kernels.kernel_source(tape)
    assert "part[" in source and "if not l" in source  # (kept partials; zeros for a skipped block's reader)
    eye = np.eye(9)
    with ft.options(tape_kernels="never"):
        interpreted = tape.jvp((theta,), eye), ft.jacfwd(f)(theta)
    with ft.options(tape_kernels="always"):
        generated = tape.jvp((theta,), eye), ft.jacfwd(f)(theta)
    assert tape._kernels.jvp is not None
    # the kernels' tanh and exp are within 3 units in the last place of libm's: 1 - tanh² near tanh = ±1
    # (an entry of 5e-4 among entries of order 1) then differs by a few 1e-16, beyond 1e-12 of itself
    assert_same(interpreted, generated, atol=1e-15 * np.max(np.abs(interpreted[1])))
    expected = jax.jacfwd(lambda t: bones(jnp, t, points, weights))(theta)
    assert_close(generated[0][1], expected, rtol=1e-10, atol=1e-12)
    assert_close(generated[1], expected, rtol=1e-10, atol=1e-12)
    # after a call whose directions wrote every tangent (the buffer is kept between calls), a direction that
    # reaches nothing but one piece's offset, and one that reaches nothing at all: no stale tangent is read
    v = np.zeros((9, 2))
    v[4, 0] = 2.0
    with ft.options(tape_kernels="always"):
        tape.jvp((theta,), np.ones((9, 2)))
        sparse = tape.jvp((theta,), v)[1]
    assert_close(sparse, 2.0 * np.asarray(expected)[:, 4:5] * np.array([1.0, 0.0]), rtol=1e-10, atol=1e-12)
