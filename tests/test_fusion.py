"""Fused regions (fasttape.fusion): long elementwise chains replayed a tile at a time.

Regions form only for runs of ``kernels.FUSE_MIN`` elements or more; these tests lower the threshold
so that small programs fuse, then check the fused first-order sweeps against the plain ones and
against JAX, across several tiles, with every way a region's values can escape it.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fasttape as ft
from fasttape import fusion
from fasttape import kernels as K
from oracle.programs import check_program, programs, well_defined

from .helpers import assert_close, assert_tree_close

N_ELEMENTS = 2 * K.FUSE_TILE + 37  # three tiles, the last one partial
RNG = np.random.default_rng(7)
X = RNG.uniform(0.5, 1.5, N_ELEMENTS)
Y = RNG.uniform(-1.0, 1.0, N_ELEMENTS)
W = np.float64(0.75)


@pytest.fixture
def fuse_small(monkeypatch):
    monkeypatch.setattr(K, "FUSE_MIN", 2)


def rosenbrock(xp, x):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def scalar_weight(xp, x, w):
    """An active scalar broadcast into the region (its adjoint sums over every tile)."""
    t = w * x + x * x
    return xp.sum(xp.sqrt(t * w + 2.0))


def escaping(xp, x, y):
    """Intermediates read after their region: by a transcendental, a gather, a shifted view and the
    output; shared operands (t * t, x / x) and max/min/hypot/abs in the generic loops."""
    t = x * y - 0.5
    u = t * t + x / x
    v = xp.maximum(u, 0.3) - xp.minimum(t, 0.1) + xp.hypot(t, y) + xp.abs(y)
    head = xp.exp(t)  # ends the region: t is read outside it
    shifted = v[1:] - v[:-1]  # a shifted view of a region output
    picked = u[::3]  # a gather
    return xp.sum(head * 0.1) + xp.sum(shifted * shifted) + xp.sum(picked) + xp.sum(v)


def element_of_intermediate(xp, x):
    """One element of an intermediate (from the last tile) broadcast against the intermediate."""
    t = x * x + 1.0
    return xp.sum(t * t[-1] - t)


def with_aux(xp, x):
    t = 2.0 * x - 1.0
    s = t * t
    return xp.sum(s + x), s  # the intermediate s is returned: written by the fused forward


def guarded(xp, x):
    t = x * x - 1.0
    if t[0] > 0:  # a guard reads an intermediate
        return xp.sum(t * 3.0)
    return xp.sum(t * -3.0)


def truth_of_a_sum(xp, x):
    s = xp.sum(x * x - 1.0)
    return s if s else 2.0 * s


def partial_activity(xp, x, y):
    """argnums=0: y's chain is inactive; its values still feed the active chain."""
    c = y * y + 1.0
    return xp.sum(x * c - c * 0.5)


PROGRAMS = {
    "rosenbrock": (rosenbrock, (X,), 0),
    "scalar_weight": (scalar_weight, (X, W), (0, 1)),
    "escaping": (escaping, (X, Y), (0, 1)),
    "guarded": (guarded, (X,), 0),
    "element_of_intermediate": (element_of_intermediate, (X,), 0),
    "partial_activity": (partial_activity, (X, Y), 0),
}


def _fused_rows(tape):
    return int(np.count_nonzero(tape.code[0::4] & K.S_FUSED))


def _plain(tape):
    """The same tape with its regions removed: every instruction replays on its own."""
    tape.code = K.scalar_code(tape.ins)
    return tape


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fused_value_and_grad_matches_plain_sweeps_and_jax(fuse_small, name):
    fn, args, argnums = PROGRAMS[name]
    tape = ft.trace(lambda *a: fn(np, *a), *args, argnums=argnums)
    assert _fused_rows(tape) >= 2, "the program should form a region"
    fused = tape.value_and_grad(*args)
    fused_out = tape(*args)
    plain = _plain(ft.trace(lambda *a: fn(np, *a), *args, argnums=argnums))
    reference = plain.value_and_grad(*args)
    assert_tree_close(fused, reference, rtol=1e-13, atol=1e-12)
    assert_close(fused_out, plain(*args), rtol=1e-13, atol=1e-12)
    expected = jax.value_and_grad(lambda *a: fn(jnp, *a), argnums=argnums)(*args)
    assert_close(fused[0], expected[0])
    assert_tree_close(fused[1], expected[1])
    # the k-direction sweeps over several tiles: one and two directions, against the plain sweeps
    diff = (argnums,) if isinstance(argnums, int) else argnums
    for k in (None, 2):
        tail = () if k is None else (k,)
        directions = tuple(RNG.normal(size=np.shape(args[j]) + tail) for j in diff)
        v = directions[0] if isinstance(argnums, int) else directions
        assert_tree_close(tape.hvp(*args, v), plain.hvp(*args, v), rtol=1e-12, atol=1e-12)
        assert_tree_close(tape.jvp(args, v), plain.jvp(args, v), rtol=1e-12, atol=1e-12)


def test_fused_arithmetic_chains_keep_the_plain_bits(fuse_small):
    """Values come from the same loops; Rosenbrock's gradient adds in the same order."""
    tape = ft.trace(lambda x: rosenbrock(np, x), X)
    plain = _plain(ft.trace(lambda x: rosenbrock(np, x), X))
    np.testing.assert_array_equal(tape.grad(X), plain.grad(X))


def test_region_outputs_read_later_are_stored(fuse_small):
    tape = ft.trace(lambda x, y: escaping(np, x, y), X, Y, argnums=(0, 1))
    words = tape.code[0::4]
    fused = words & K.S_FUSED != 0
    assert (words[fused] & K.S_STORE != 0).any() and (words[fused] & K.S_STORE == 0).any()
    (value, aux), grad = ft.value_and_grad(lambda x: with_aux(np, x), has_aux=True)(X)
    assert_close(aux, (2.0 * X - 1.0) ** 2, rtol=0, atol=0)
    assert_close(grad, jax.grad(lambda x: with_aux(jnp, x)[0])(X))


def test_reverse_sweeps_recompute_only_what_their_partials_read(fuse_small):
    """Rosenbrock's region is read by no later instruction (S_LOCAL: the HVP skips its tangent pass).
    Its partials read the squares' operands only: x1 - x0² (with x0², which it is computed from) and
    1 - x0 -- the multiply by 100 reads the constant -- so only those values (S_RECOMPUTE) and
    tangents (S_TANGENT) are recomputed; the squares, 100 (...)², the add and the sum are not."""
    tape = ft.trace(lambda x: rosenbrock(np, x), X)
    words, ops = tape.code[0::4], tape.ins[:, K.C_OP]
    region = (words & K.S_FUSED) != 0
    assert region.all() and words[0] & K.S_LOCAL
    for bit in (K.S_RECOMPUTE, K.S_TANGENT):
        read = (words & bit) != 0
        assert ops[read].tolist() == [K.OP_SQUARE, K.OP_SUBTRACT, K.OP_SUBTRACT]
        assert ops[~read].tolist() == [K.OP_SQUARE, K.OP_MULTIPLY, K.OP_SQUARE, K.OP_ADD, K.OP_SUM]
    assert_close(tape.value_and_grad(X)[1], jax.grad(lambda x: rosenbrock(jnp, x))(X))
    v = RNG.normal(size=X.shape)
    expected_hv = jax.jvp(jax.grad(lambda x: rosenbrock(jnp, x)), (X,), (v,))[1]
    assert_close(tape.hvp(X, v), expected_hv)
    # a JVP still runs the region's tangent pass: it returns the output's tangent
    assert_close(tape.jvp((X,), v)[1], jax.jvp(lambda x: rosenbrock(jnp, x), (X,), (v,))[1])
    # a region whose values a later instruction reads (exp(t) in `escaping`) keeps its tangent pass
    escaping_tape = ft.trace(lambda x, y: escaping(np, x, y), X, Y, argnums=(0, 1))
    starts = escaping_tape.code[0::4] & K.S_START != 0
    assert not (escaping_tape.code[0::4][starts] & K.S_LOCAL).all()


@pytest.mark.parametrize("name", ["sin", "cos"])  # (exp, tanh, sinh, cosh keep NumPy's vector loops)
def test_hvp_of_a_region_recomputes_the_values_only_second_partials_read(fuse_small, name):
    """sin'' = -sin(x) = -z reads the row's own value, which sin' = cos(x) does not: the second-order sweep
    must recompute it (not only S_RECOMPUTE's rows), or the HVP reads scratch that was never written."""

    def f(xp, x):
        return xp.sum(getattr(xp, name)(0.5 * x)) + xp.sum((x * 2.0 + 1.0) * x[::-1])

    tape = ft.trace(lambda x: f(np, x), X)
    assert (tape.code[0::4][tape.ins[:, K.C_OP] == getattr(K, f"OP_{name.upper()}")] & K.S_FUSED != 0).all()
    v = RNG.normal(size=X.shape)
    assert_close(tape.hvp(X, v), jax.jvp(jax.grad(lambda x: f(jnp, x)), (X,), (v,))[1])


def test_value_and_grad_runs_a_region_only_the_caller_reads_once(fuse_small):
    """value_and_grad skips such a region in its forward and computes its values in the reverse: the
    value and the aux it returns are the forward replay's, bit for bit, call after call."""
    tape = ft.trace(lambda x: rosenbrock(np, x), X)
    aux_tape = ft.trace(lambda x: with_aux(np, x), X, has_aux=True)
    assert tape.code[0] & K.S_LOCAL and aux_tape.code[0] & K.S_LOCAL
    for x in (X, X[::-1] * 0.9):
        value, grad = tape.value_and_grad(x)
        assert value == tape(x)
        assert_close(grad, jax.grad(lambda x: rosenbrock(jnp, x))(x))
        (value, aux), grad = aux_tape.value_and_grad(x)
        forward_value, forward_aux = aux_tape(x)
        assert value == forward_value
        np.testing.assert_array_equal(aux, forward_aux)
        assert_close(grad, jax.grad(lambda x: with_aux(jnp, x)[0])(x))


def test_guard_on_an_intermediate_still_switches_branch(fuse_small):
    f = ft.grad(lambda x: guarded(np, x))
    for x in (X, -X * 0.1):
        assert_close(f(x), jax.grad(lambda x: guarded(jnp, x))(x))
    # a guard reads the region: an HVP still runs its forward (it is not S_LOCAL) and sees the branch
    tape = ft.trace(lambda x: guarded(np, x), X)
    assert not tape.code[0] & K.S_LOCAL
    v = RNG.normal(size=X.shape)
    assert_close(tape.hvp(X, v), jax.jvp(jax.grad(lambda x: guarded(jnp, x)), (X,), (v,))[1])
    with pytest.raises(ft.BranchChangedError):
        tape.hvp(-X * 0.1, v)
    # a guard on the region's own closing sum (`if s:` reads it, no comparison instruction in between)
    tape = ft.trace(lambda x: truth_of_a_sum(np, x), X)
    assert not tape.code[0] & K.S_LOCAL
    assert_close(tape.hvp(X, v), 2.0 * v)  # H of sum(x² - 1) is 2 I
    with pytest.raises(ft.BranchChangedError):
        tape.hvp(np.ones_like(X), v)  # the sum is exactly 0: the other branch


@pytest.mark.parametrize("name", ["rosenbrock", "escaping"])
def test_k_direction_sweeps_and_vjp_with_regions_present(fuse_small, name):
    fn, args, argnums = PROGRAMS[name]
    small = tuple(a[:40] if np.ndim(a) else a for a in args)  # dense Jacobians stay small
    f_ft, f_jax = (lambda *a: fn(np, *a)), (lambda *a: fn(jnp, *a))
    v = tuple(np.linspace(-1.0, 1.0, np.size(a)).reshape(np.shape(a)) for a in small)
    hv = ft.hvp(f_ft, small, v)
    expected = jax.jvp(jax.grad(f_jax, argnums=tuple(range(len(small)))), small, v)[1]
    assert_tree_close(hv if isinstance(hv, tuple) else (hv,), expected)
    tape = ft.trace(f_ft, *small, argnums=argnums)
    assert _fused_rows(tape) >= 2
    operator = tape.hvp_at(*small)  # run_value_and_grad keeps every value here
    first = v[0] if isinstance(argnums, int) else tuple(v[k] for k in argnums)
    assert_tree_close(operator(first), tape.hvp(*small, first))
    assert_tree_close(tape.jacobian(*small, mode="rev"), tape.jacobian(*small, mode="fwd"))
    out, pull = tape.vjp(*small)
    reference = jax.vjp(f_jax, *small)
    assert_close(out, reference[0])
    assert_tree_close(pull(1.5)[: len(small)], reference[1](1.5)[: len(small)])


def test_saved_tape_rebuilds_its_regions(fuse_small):
    tape = ft.trace(lambda x: rosenbrock(np, x), X)
    file = io.BytesIO()
    tape.save(file)
    file.seek(0)
    loaded = ft.load_tape(file)
    np.testing.assert_array_equal(loaded.code, tape.code)
    np.testing.assert_array_equal(loaded.grad(X), tape.grad(X))


def test_regions_respect_the_threshold_and_eligibility():
    short = X[: K.FUSE_MIN // 2]
    tape = ft.trace(lambda x: rosenbrock(np, x), short)  # below FUSE_MIN
    assert _fused_rows(tape) == 0
    at_threshold = np.resize(X, K.FUSE_MIN + 1)  # x[1:] and x[:-1] have FUSE_MIN elements
    assert _fused_rows(ft.trace(lambda x: rosenbrock(np, x), at_threshold)) == tape.ins.shape[0]
    code = K.scalar_code(tape.ins)
    fusion.mark_regions(code, tape.ins, tape.aux, [], fuse_min=2)
    words = code[0::4]
    ops = tape.ins[:, K.C_OP]
    assert (words[ops == K.OP_SUM] & K.S_FUSED != 0).all()  # the closing sum joins
    exp_tape = ft.trace(lambda x: np.sum(np.exp(x * 2.0) * 3.0), X)
    code = K.scalar_code(exp_tape.ins)
    fusion.mark_regions(code, exp_tape.ins, exp_tape.aux, [], fuse_min=2)
    assert code[0::4][exp_tape.ins[:, K.C_OP] == K.OP_EXP][0] & K.S_FUSED == 0  # NumPy's loops keep exp


@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs(min_steps=3, max_steps=10))
def test_random_programs_pass_with_every_chain_fused(program):
    if not well_defined(program):
        return
    saved = K.FUSE_MIN
    K.FUSE_MIN = 2
    try:
        report = check_program(program)
    finally:
        K.FUSE_MIN = saved
    assert report.passed, program.snippet() + "\n" + str(report)
