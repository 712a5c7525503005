"""The oracle's JAX reference: one entry per primitive, and a tape replayed in JAX
computes the same values and derivatives as fasttape's own sweeps."""

import functools

import pytest

import fasttape as ft
from fasttape.tracing import record
from oracle.cases import FIRST_CASES, NP, scalar_loss

from .helpers import assert_close

jax = pytest.importorskip("jax")
oracle = pytest.importorskip("oracle")


def test_every_primitive_has_a_jax_reference():
    table = oracle.jax_primitives()
    names = {p.name for p in ft.PRIMITIVES}
    assert names == set(table), f"missing: {sorted(names - set(table))}; extra: {sorted(set(table) - names)}"


# one case per primitive: the oracle's ci profile (nox -s tests) replays every case, as each check's reference
@pytest.mark.parametrize("case", FIRST_CASES, ids=lambda c: c.name)
def test_replayed_tape_matches_fasttape(case):
    rng = case.rng("oracle")
    args = case.inputs(rng)
    argnums = tuple(range(len(args)))
    loss = functools.partial(scalar_loss(case, args, rng), NP)
    tape = record(loss, args, argnums)
    program = oracle.replay_in_jax(tape)

    def jax_loss(*a):
        return program(*a)[0]

    value, grads = tape.value_and_grad(*args)
    jvalue, jgrads = jax.value_and_grad(jax_loss, argnums=argnums)(*args)
    assert_close(value, jvalue)
    for g, jg in zip(grads, jgrads):
        assert_close(g, jg)
