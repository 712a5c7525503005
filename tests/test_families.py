"""The family interface: every kind has one family, the registry refuses an incomplete module,
parameters are named, the dispatch is generated from the registry, and the side store of max/min
holds what both tiers' forwards count."""

from __future__ import annotations

import types

import numpy as np
import pytest

import fasttape as ft
from fasttape import dispatch, executor, families, kernels, primitives
from fasttape.families import reductions


def test_every_kind_has_exactly_one_family():
    owners = {kind: [f.name for f in families.FAMILIES if kind in f.kinds] for kind in primitives.KINDS}
    assert all(len(names) == 1 for names in owners.values()), owners
    for p in kernels.PRIMITIVES:
        family = families.of(p.opcode)
        assert p.kind in family.kinds
        assert families.FAMILY_NUMBER[p.opcode] == family.number


def test_the_registry_names_what_a_family_module_lacks(monkeypatch):
    incomplete = types.ModuleType("fasttape.families.sorting")
    incomplete.KINDS, incomplete.PARAMS = ("sort",), ("axis",)
    incomplete.forward = incomplete.reverse = lambda *a: None
    monkeypatch.setattr(families, "REGISTERED", (*families.REGISTERED, incomplete))
    with pytest.raises(TypeError, match=r"sorting does not define \['tangent', 'second', 'numpy_forward'"):
        families._register()


def test_a_kind_claimed_twice_or_by_none_is_refused(monkeypatch):
    twice = types.ModuleType("fasttape.families.again")
    for name in families.FUNCTIONS:
        setattr(twice, name, None)
    twice.KINDS, twice.PARAMS = ("matmul",), ()
    monkeypatch.setattr(families, "REGISTERED", (*families.REGISTERED, twice))
    with pytest.raises(TypeError, match="'matmul' is claimed by families 'matmul' and 'again'"):
        families._register()
    without = tuple(m for m in families.REGISTERED if m not in (twice, families.matmul))  # nor again nor matmul
    monkeypatch.setattr(families, "REGISTERED", without)
    with pytest.raises(TypeError, match=r"no family implements the primitive kind\(s\) \['matmul'\]"):
        families._register()


def test_parameters_are_packed_and_unpacked_by_name():
    family = families.of(kernels.OP_MATMUL)
    assert family.params == ("batch", "m", "k", "n")
    row = [0] * kernels.ROW
    row[kernels.C_P0 : kernels.C_P0 + 4] = family.pack(n=5, batch=2, m=3, k=4)
    assert family.unpack(row) == {"batch": 2, "m": 3, "k": 4, "n": 5}
    assert families.of(kernels.OP_GATHER).pack(start=9, count=3) == (9, 3, 0, 0)
    with pytest.raises(ValueError, match=r"family 'broadcast' has no parameter\(s\) \['axis'\]"):
        families.of(kernels.OP_BROADCAST).pack(pre=1, axis=2)


def test_the_dispatch_has_one_branch_per_family_and_raises_past_them():
    for sweep in dispatch.SIGNATURES:
        for f in families.FAMILIES:
            assert f"{f.name}_{sweep}(" in dispatch.SOURCE
        assert getattr(dispatch.DISPATCH, sweep).py_func.__module__ == "fasttape._dispatch"
    assert dispatch.SOURCE.count("raise ValueError('unknown opcode: no family implements it')") == 4


def test_the_listing_shows_each_family_s_parameters():
    def f(x, M):
        return np.sum(np.max(M @ x[:, None] * np.ones((3, 2)), axis=0))

    listing = ft.trace(f, np.array([0.5, 1.0, 2.0]), np.eye(3)).listing()
    assert "matmul[1x3x3x1]" in listing
    assert "broadcast[3x2x1]" in listing
    assert "max[1x3x2]" in listing


def _bound_buffer(tape, x):
    buf = tape._template.copy()
    leaf = tape._args[0].leaves[0]
    buf[leaf.offset : leaf.offset + leaf.size] = np.ravel(x)
    return buf


TIERS = {"compiled": kernels, "executor": executor}


@pytest.mark.parametrize("tier", sorted(TIERS))
@pytest.mark.parametrize("reduce", [np.max, np.min])
def test_max_and_min_keep_their_tie_counts_in_a_side_store(reduce, tier):
    """The side store overlaps no slot; the forward marks it not yet counted (-1), the first derivative
    sweep writes the number of ties per output (0 where the extremum is NaN), in both tiers, and the
    reverse shares the adjoint by it.  The next call's forward marks it again: no stale count."""
    x = np.array([[1.0, 5.0, 5.0], [2.0, 2.0, 2.0], [-3.0, np.nan, 0.0], [5.0, -5.0, 1.0]])
    tape = ft.trace(lambda a: np.sum(reduce(a, axis=1)), x)
    (row,) = [r for r in tape.ins.tolist() if r[kernels.C_OP] in (kernels.OP_MAX, kernels.OP_MIN)]
    side = families.of(row[kernels.C_OP]).unpack(row)["side"]
    assert all(s.offset + s.size <= side or side + 4 <= s.offset for s in tape._slots)  # no slot's values
    sweeps = TIERS[tier]
    counted = {}
    for name, y in (("ties", x), ("no ties", x + np.arange(12.0).reshape(4, 3) * 1e-3)):
        buf = _bound_buffer(tape, y)
        assert sweeps.run_forward(tape.ins, tape.code, tape.aux, buf, False)
        np.testing.assert_array_equal(buf[side : side + 4], -1.0)
        assert sweeps.run_value_and_grad(tape.ins, tape.code, tape.aux, buf, tape._out_position, False)
        counted[name] = buf[side : side + 4].copy()
        np.testing.assert_array_equal(counted[name], np.sum(y == reduce(y, axis=1, keepdims=True), axis=1))
        tan = np.zeros(tape.n_values)
        assert sweeps.run_jvp(tape.ins, tape.code, tape.aux, buf, tan, 1)
        np.testing.assert_array_equal(buf[side : side + 4], counted[name])
    assert not np.array_equal(counted["ties"], counted["no ties"])  # recounted, not reused
    value, grad = tape.value_and_grad(x)
    expected = counted["ties"]
    shares = (x == reduce(x, axis=1, keepdims=True)) / np.where(expected > 0, expected, np.nan)[:, None]
    np.testing.assert_array_equal(grad[[0, 1, 3]], shares[[0, 1, 3]])
    assert np.isnan(grad[2]).all()


def test_only_max_min_and_the_factorisations_ask_for_a_side_store():
    extents = {"pre": 2, "r": 3, "post": 4, "batch": 2, "n": 3, "m": 1}
    for p in kernels.PRIMITIVES:
        size = families.of_primitive(p).side_size(p, dict(extents))
        if p.name in reductions.TIES:
            assert size == 8, p.name  # tie counts, one per reduced run
        elif p.kind in families.linalg.KINDS:
            assert size == 2 * (3 * 3 + 3), p.name  # LU factors and pivots per matrix
        else:
            assert size == 0, p.name
