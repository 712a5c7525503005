"""Scalar code -- loops over Python floats: the tracer's fast path for ``+ - * /`` and unary functions on
0-d tracers and Python numbers, and the compact scalar code the sweeps stream for one-element add/subtract/multiply."""

from __future__ import annotations

import functools
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fasttape as ft
from benchmarks.workloads import laplace_det
from fasttape import adjoint_plan, row_log, scalar_recording
from fasttape import kernels as K
from fasttape.recorder import Recorder, recording
from fasttape.scalar_recording import _python_value
from oracle.programs import programs

from .helpers import assert_close, both


def euler_loop(xp, u, steps=40):
    """Lorenz-like Euler steps on scalars, with a division and a sine breaking the add/sub/mul runs."""
    x, y, z = u[0], u[1], u[2]
    for step in range(steps):
        dx = 10.0 * (y - x)
        dy = x * (28.0 - z) - y
        dz = x * y - (8.0 / 3.0) * z
        x, y, z = x + 0.01 * dx, y + 0.01 * dy, z + 0.01 * dz
        if step % 7 == 3:
            z = z / (1.0 + 0.001 * x * x) + 0.01 * xp.sin(y)
    return x * x + 2 * y * y - z * 3 + x * y * z * 1e-3


U = np.array([1.0, 0.5, 2.0])
V = np.array([0.3, -1.2, 0.7])
ft_loop, jax_loop = both(euler_loop)


def _ufunc_arithmetic(xp, u):
    """The same arithmetic as ``_operator_arithmetic``, through NumPy's functions (the general path)."""
    a, b = u[0], u[1]
    t = np.multiply(a, 2.5)
    t = np.add(t, b)
    t = np.subtract(3, t)
    t = np.multiply(np.float64(-0.0), t)
    t = np.add(t, np.multiply(a, b))
    return np.subtract(np.multiply(t, a), np.add(1, b))


def _operator_arithmetic(xp, u):
    a, b = u[0], u[1]
    t = a * 2.5
    t = t + b
    t = 3 - t
    t = np.float64(-0.0) * t
    t = t + a * b
    return t * a - (1 + b)


def _scalar_functions(u):
    """Division (by a tracer, by an int, by zero), unary functions (in and outside their domain), overflow."""
    a, b = u[0], u[1]
    t = np.sin(a) / b + 3 / a - a / 4
    t = t + np.exp(np.tanh(b)) * np.sqrt(np.abs(a)) - np.log(b - 10.0)  # log of a negative: NaN, silently
    t = t + (a * 1e300) * (b * 1e300) + a / 0.0 + (a * 1e-300) / 1e300  # inf, ±inf, 0: silently
    return np.arctan(t) + np.cos(b) / (1.0 + a * a)


def test_scalar_division_and_unary_fast_paths_record_the_general_paths_tape(monkeypatch):
    import warnings

    from fasttape import scalar_recording

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's warnings stay silent, as in the general path
        fast = ft.trace(_scalar_functions, U)
        for name in ("arithmetic", "unary", "element"):
            monkeypatch.setattr(scalar_recording, name, lambda *args: None)
        general = ft.trace(_scalar_functions, U)
    np.testing.assert_array_equal(fast.ins, general.ins)
    assert list(fast._row_operands) == list(general._row_operands)
    np.testing.assert_array_equal(fast._template, general._template)
    assert [(s.offset, s.shape, s.active) for s in fast._slots] == [
        (s.offset, s.shape, s.active) for s in general._slots
    ]
    np.testing.assert_array_equal(fast(U), general(U))


def test_operator_fast_path_records_the_same_tape_as_the_general_path():
    fast = ft.trace(lambda u: _operator_arithmetic(np, u), U)
    general = ft.trace(lambda u: _ufunc_arithmetic(np, u), U)
    np.testing.assert_array_equal(fast.ins, general.ins)
    assert list(fast._row_operands) == list(general._row_operands)
    np.testing.assert_array_equal(fast.aux, general.aux)
    np.testing.assert_array_equal(fast._template, general._template)
    assert [(s.offset, s.shape, s.active, s.is_bool) for s in fast._slots] == [
        (s.offset, s.shape, s.active, s.is_bool) for s in general._slots
    ]
    assert fast(U) == general(U) == _operator_arithmetic(np, U)


def test_fast_path_declines_what_it_does_not_cover():
    def mixed(u):
        flag = u[0] > 0.0  # a boolean 0-d tracer: general path
        vec = u[:2] * 2.0  # an array tracer: general path
        big = u[0] * (2**60 + 1)  # an integer beyond float precision: general path
        return np.sum(vec) + flag * 1.0 + big * 1e-18

    tape = ft.trace(mixed, U)
    expected = jax.value_and_grad(
        lambda u: jnp.sum(u[:2] * 2.0) + (u[0] > 0.0) * 1.0 + u[0] * float(2**60 + 1) * 1e-18
    )(U)
    value, grad = tape.value_and_grad(U)
    assert_close(value, expected[0])
    assert_close(grad, expected[1])


def test_fast_path_takes_python_and_numpy_numbers(monkeypatch):
    """Ints, floats (signed zeros included) and NumPy float64 constants: no row of this function reaches
    the general path."""
    from fasttape import numpy as fnp

    for name in ("add", "subtract", "multiply", "divide"):
        monkeypatch.setattr(fnp, name, lambda *args: pytest.fail("took the general path"))

    def f(u):
        a = u[0]
        return 2 * a + 1 - a / 4 - 3 * a * np.float64(0.5) + (-0.0) * a + 0.0 - a * 2.5

    value, grad = ft.value_and_grad(f)(U)
    expected = jax.value_and_grad(f)(U)
    assert_close(value, expected[0])
    assert_close(grad, expected[1])


@pytest.mark.parametrize("kind", ["value_and_grad", "jvp", "hvp", "vjp"])
def test_scalar_loops_match_jax(kind):
    if kind == "value_and_grad":
        value, grad = ft.value_and_grad(ft_loop)(U)
        expected = jax.value_and_grad(jax_loop)(U)
        assert_close(value, expected[0])
        assert_close(grad, expected[1])
    elif kind == "jvp":
        _, tangent = ft.jvp(ft_loop, (U,), (V,))
        assert_close(tangent, jax.jvp(jax_loop, (U,), (V,))[1])
    elif kind == "hvp":
        expected = jax.jvp(jax.grad(jax_loop), (U,), (V,))[1]
        assert_close(ft.hvp(ft_loop, (U,), (V,)), expected)
    else:
        _, pull = ft.vjp(lambda u: ft_loop(u) * np.ones(2), U)
        _, jax_pull = jax.vjp(lambda u: jax_loop(u) * jnp.ones(2), U)
        assert_close(pull(np.array([0.5, 2.0]))[0], jax_pull(jnp.array([0.5, 2.0]))[0])


def test_scalar_code_and_general_path_agree_bitwise():
    """With the scalar code cleared, every instruction takes the general path: same bits."""
    tape = ft.trace(ft_loop, U)
    assert np.count_nonzero(tape.code[0::4] & K.S_SCALAR) > 0.8 * tape.ins.shape[0]
    compact = tape.value_and_grad(U), tape.hvp(U, V), tape.jacobian(U)
    tape.code = np.zeros_like(tape.code)
    general = tape.value_and_grad(U), tape.hvp(U, V), tape.jacobian(U)
    for a, b in zip(jax.tree_util.tree_leaves(compact), jax.tree_util.tree_leaves(general)):
        np.testing.assert_array_equal(a, b)


def test_scalar_code_marks_only_one_element_arithmetic_with_int32_slots():
    ins = np.zeros((5, K.ROW), dtype=np.int64)
    ins[:, K.C_N] = 1
    ins[:, K.C_OP] = [K.OP_ADD, K.OP_MULTIPLY, K.OP_DIVIDE, K.OP_SUBTRACT, K.OP_MULTIPLY]
    ins[1, K.C_N] = 7  # a run of seven elements
    ins[3, K.C_B] = 2**31  # a slot beyond uint32-safe range
    ins[:, K.C_FLAGS] = K.F_ACTIVE | K.F_GRAD_A
    ins[4, K.C_OUT], ins[4, K.C_A], ins[4, K.C_B] = 11, 12, 13
    rows = K.scalar_code(ins).reshape(-1, 4)
    assert [bool(w & K.S_SCALAR) for w in rows[:, 0]] == [True, False, False, False, True]
    assert rows[4].tolist() == [K.OP_MULTIPLY | (K.F_ACTIVE | K.F_GRAD_A) << K.S_FLAGS_SHIFT | K.S_SCALAR, 11, 12, 13]
    assert not rows[1:4].any()


def test_tracing_pauses_the_collector_and_restores_it():
    assert gc.isenabled()
    seen = []

    def probe(u):
        seen.append(gc.isenabled())
        return u[0] * u[1]

    ft.trace(probe, U)
    assert seen == [False] and gc.isenabled()

    def failing(u):
        raise RuntimeError("inside the traced function")

    with pytest.raises(RuntimeError):
        ft.trace(failing, U)
    assert gc.isenabled()
    gc.disable()
    try:
        ft.trace(probe, U)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


# -- the scalar path's own values and element reads ----------------------------------------------------
_PYTHON_VALUED = [p for p in K.PRIMITIVES if p.elementwise and p.kind == "unary" and _python_value(p) is not None]


def _numpy_function(prim):
    if prim.numpy:
        return getattr(np, prim.numpy[0])
    import scipy.special

    return getattr(scipy.special, prim.scipy[0])


@pytest.mark.parametrize("prim", _PYTHON_VALUED, ids=lambda p: p.name)
def test_unary_values_from_python_math_agree_with_numpy(prim):
    """Inside the domain Python's math gives NumPy's value (to rounding); outside it (log of a negative,
    exp's overflow, a pole) the scalar path falls back to NumPy's NaN or inf, silently."""
    import warnings

    fn = _numpy_function(prim)
    points = [-1000.0, -3.0, -1.0, -0.5, -1e-300, -0.0, 0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 50.0, 1000.0, np.inf, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = [float(scalar_recording._unary_value(prim.opcode, fn, np.asarray(x))) for x in points]
    with np.errstate(all="ignore"):
        expected = [float(fn(np.float64(x))) for x in points]
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=0, equal_nan=True)


def test_element_reads_share_one_view_per_element():
    A = np.arange(1.0, 10.0).reshape(3, 3)
    seen = {}

    def reads(a):
        first, again, negative = a[1, 2], a[1, 2], a[-2, -1]
        seen["ids"] = (first._sid, again._sid, negative._sid, a[2, 1]._sid)
        seen["one tracer"] = first is again is negative
        with pytest.raises(IndexError):
            a[3, 0]  # NumPy's error, from the general path
        return first * again + negative + a[0][0]

    tape = ft.trace(reads, A)
    first, again, negative, other = seen["ids"]
    assert first == again == negative != other and seen["one tracer"]
    assert tape.ins.shape[0] == 3  # no row for an element read: a view
    value, grad = tape.value_and_grad(A)
    expected = jax.value_and_grad(lambda a: a[1, 2] * a[1, 2] + a[-2, -1] + a[0][0])(A)
    assert_close(value, expected[0])
    assert_close(grad, expected[1])


def test_an_element_read_rebound_by_an_assignment_leaves_the_element_as_it_was():
    """Element reads hand out one tracer per element: ``e[()] = v`` makes ``e`` name v (as an item
    assignment into a 0-d array does), and the next read of the element still reads the element."""
    A = np.arange(1.0, 10.0).reshape(3, 3)

    def rebinds(a):
        e = a[0, 1]
        e[()] = 10.0 * a[1, 1]
        return e * a[2, 2] + a[0, 1] * a[0, 1]

    def expected(a):
        return 10.0 * a[1, 1] * a[2, 2] + a[0, 1] * a[0, 1]

    value, grad = ft.value_and_grad(rebinds)(A)
    assert_close(value, expected(A))
    assert_close(grad, jax.grad(expected)(A))


def test_laplace_determinant_matches_jax():
    A = np.random.default_rng(3).standard_normal((5, 5))
    value, grad = ft.value_and_grad(laplace_det)(A)
    expected = jax.value_and_grad(laplace_det)(jnp.asarray(A))
    assert_close(value, expected[0], rtol=1e-12)
    assert_close(grad, expected[1], rtol=1e-10)
    assert_close(value, np.linalg.det(A), rtol=1e-10)


def test_element_reads_of_integer_and_boolean_arrays_keep_their_kind():
    def f(x, n, mask):
        return x[0] * n[1] + x[1] * mask[0]

    n, mask = np.array([3, 4]), np.array([True, False])
    value, grad = ft.value_and_grad(f)(np.array([0.5, 2.0]), n, mask)
    assert value == 0.5 * 4 + 2.0 * 1.0
    np.testing.assert_array_equal(grad, [4.0, 1.0])


# -- the adjoint plan's walks, compiled and as Python --------------------------------------------------
@settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs(min_steps=2, max_steps=10))
def test_adjoint_plan_walks_compiled_and_as_python_agree(program):
    f = functools.partial(program.callable, np)
    argnums = tuple(range(len(program.inputs)))
    with np.errstate(all="ignore"):
        try:
            tapes = []
            for threshold in (0, 10**9):  # every walk compiled, then every walk as Python
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(adjoint_plan, "COMPILED_FROM", threshold)
                    tapes.append(ft.trace(f, *program.inputs, argnums=argnums))
        except np.linalg.LinAlgError:
            return
    compiled, python = tapes
    np.testing.assert_array_equal(compiled.ins, python.ins)
    np.testing.assert_array_equal(compiled.aux, python.aux)


# -- the row log, and the graph the adjoint plan reads from it -------------------------------------------
def _recorded(program):
    """A program recorded on a bare Recorder (None when its linear algebra fails at these inputs)."""
    rec = Recorder()
    tracers = [rec.input(np.asarray(v, dtype=np.float64), True, f"x{k}") for k, v in enumerate(program.inputs)]
    with np.errstate(all="ignore"), recording(rec):
        try:
            program.callable(np, *tracers)
        except np.linalg.LinAlgError:
            return None
    return rec


@settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs(min_steps=2, max_steps=10))
def test_the_row_log_reads_back_what_it_freezes_and_the_graph_what_the_slots_say(program):
    """Each row as written (its integers, operands and output slot), read back while recording and from
    the frozen arrays; the adjoint plan's graph of a recording (output slots' extents and activity from
    the rows) equal to the one read from every slot (a loaded tape's)."""
    rec = _recorded(program)
    if rec is None:
        return
    log = rec.log
    ins, operands, row_out, _ = log.frozen()
    assert ins.shape == (len(log), K.ROW) and len(operands) == row_out.size == len(log)
    for i in range(len(log)):
        assert log.row(i) == tuple(ins[i].tolist())
        assert log.operands(i) == operands[i]
        assert log.out(i) == row_out[i] and rec.slots[row_out[i]].origin == ("op", i)
    assert list(operands) == [operands[i] for i in range(len(operands))]
    recorded = adjoint_plan.graph(rec.slots, operands, ins, row_out)
    read = adjoint_plan.graph(rec.slots, operands, ins)
    for name in adjoint_plan.Graph._fields:
        np.testing.assert_array_equal(getattr(recorded, name), getattr(read, name), err_msg=name)


def test_the_scalar_paths_rows_make_their_slots_only_when_read():
    """While recording, the scalar path's rows make no slot object; one made from its row when first read
    (from the log while recording, from the frozen columns afterwards) has the row's offset, activity
    and value."""
    rec = Recorder()
    u = rec.input(U.copy(), True, "u")
    with recording(rec):
        out = euler_loop(np, u, steps=6)
    made = set(dict.keys(rec.slots))
    assert all(rec.slots[sid].origin[0] != "op" for sid in made)  # inputs, constants, element views
    ins, _, row_out, frozen = rec.log.frozen()
    for i, sid in enumerate(row_out.tolist()):
        if sid in made:
            continue
        row, offset, active, value = rec.log.scalar_output(sid)
        assert (row, offset, active) == (i, ins[i, K.C_OUT], ins[i, K.C_FLAGS] != 0)
        assert frozen.scalar_output(sid) == (row, offset, active, value)
        slot = rec.slots[sid]
        assert (slot.origin, slot.offset, slot.active, slot.kept) == (("op", i), offset, active, value)
    assert rec.slots[out._sid].kept == out._kept == float(out._value) == euler_loop(np, U, steps=6)
    assert rec.slots[-1] is rec.slots[len(rec.slots) - 1]
    with pytest.raises(IndexError):
        rec.slots[len(rec.slots)]
    with pytest.raises(KeyError):
        rec.log.scalar_output(u._sid)  # an input: no row writes it


def test_a_row_of_many_operands_keeps_them_beside_the_log():
    rec = Recorder()
    x = rec.input(np.linspace(0.1, 1.0, 5), True, "x")
    with recording(rec):
        stacked = np.stack([x, x * 2.0, x + 1.0, np.sin(x), x])  # one row of five operands
        np.sum(stacked) + x[0] * x[1]
    ins, operands, *_ = rec.log.frozen()
    wide = [i for i in range(len(operands)) if len(operands[i]) > row_log.INLINE]
    assert len(wide) == 1
    five = operands[wide[0]]
    assert five == rec.log.operands(wide[0]) and len(five) == 5 and five[0] == five[4] == x._sid
    with pytest.raises(IndexError):
        rec.log.row(len(rec.log))
    with pytest.raises(IndexError):
        operands[len(operands)]
