"""The fault switch (``fasttape.faults``) and the pieces of ``oracle.mutants`` that need no
instrumented build: site names, the generated sources with and without the switch, the
reference memo, the mutation report.  Planting faults in compiled kernels is exercised
in a fresh interpreter by tests/test_oracle_fault.py."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from fasttape import codegen, dispatch, faults
from fasttape.primitives import PRIMITIVE_BY_NAME, PRIMITIVES


def test_every_primitive_has_every_kernel_site_and_elementwise_ones_their_formulas():
    sites = faults.sites()
    assert len(sites) == len({str(s) for s in sites})
    for p in PRIMITIVES:
        kinds = {s.kind for s in sites if s.primitive == p.name and not s.edge}
        for edge in p.edges:  # each rule again, wrong only at each declared edge
            assert {s.kind for s in sites if s.primitive == p.name and s.edge == edge} == kinds
        assert set(faults.KERNEL_KINDS) <= kinds
        formulas = kinds & set(faults.FORMULA_KINDS)
        if not p.elementwise:
            assert not formulas
            continue
        expected = set(faults.FORMULA_KINDS) - ({"formula-dy"} if p.arity == 1 else set())
        if not any(p.curvature):  # second partials all structural zeros: no term is formed, nothing to break
            expected.discard("formula-d2")
        expected -= {("formula-dx", "formula-dy")[k] for k in p.static}  # a static operand's partial is never read
        assert formulas == expected


def test_site_names_parse_and_bad_ones_say_what_exists():
    assert str(faults.parse("tanh")) == "tanh:formula-dx"  # a bare name: the first partial, as before
    assert faults.parse("max:reverse-k") == faults.Site("max", "reverse-k")
    with pytest.raises(ValueError, match="no primitive named 'tanhh'"):
        faults.parse("tanhh:reverse")
    with pytest.raises(ValueError, match="gather has no 'formula-dx'.*value, reverse"):
        faults.parse("gather:formula-dx")
    with pytest.raises(ValueError, match="tanh has no 'formula-dy'"):
        faults.parse("tanh:formula-dy")
    assert faults.parse("max:reverse@ties") == faults.Site("max", "reverse", "ties")
    assert str(faults.parse("logsumexp:second@huge")) == "logsumexp:second@huge"
    with pytest.raises(ValueError, match="max declares no edge 'huge'"):
        faults.parse("max:reverse@huge")


def test_planting_needs_the_instrumented_kernels():
    assert not faults.INSTRUMENTED  # the suite runs the normal build
    with pytest.raises(RuntimeError, match="FASTTAPE_FAULT=instrument"):
        faults.plant("tanh:reverse")


def test_normal_sources_hold_no_switch_and_instrumented_ones_route_every_rule_through_it():
    assert "perturbed" not in codegen.SOURCE and "armed" not in dispatch.SOURCE
    source = codegen.elementwise_source(instrumented=True)
    for function, kinds in (
        ("unary_value", ["formula-value"]),
        ("unary_partial", ["formula-dx"]),
        ("binary_partials", ["formula-dx", "formula-dy"]),
        ("binary_second", ["formula-d2"]),
    ):
        wrapper = source.split(f"def {function}(op")[1].split("\n\n")[0]
        assert f"{function}_exact(op" in wrapper
        for kind in kinds:
            assert f"perturbed(op, {faults.KIND_CODE[kind]}, " in wrapper, (function, kind)
    for p in PRIMITIVES:  # the hot loops write their formulas out: each goes through the switch itself
        if p.hot and p.kind == "unary":
            assert f"perturbed({p.opcode}, {faults.KIND_CODE['formula-value']}, " in source, p.name
    wrapped = dispatch.dispatch_source(instrumented=True)
    for sweep, kind in (("forward", "VALUE"), ("tangent", "TANGENT"), ("reverse", "REVERSE"), ("second", "SECOND")):
        body = wrapped.split(f"def {sweep}(")[1].split("\n\n")[0]
        assert f"armed(op, {kind}" in body and f"{sweep}_families(" in body, sweep


def _import_with(fault: str) -> subprocess.CompletedProcess:
    code = "from fasttape import cache, tiers; print(cache.ENABLED, tiers.mode())"
    env = {**os.environ, "FASTTAPE_FAULT": fault}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_an_instrumented_build_is_never_cached_and_never_served_by_the_executor():
    result = _import_with("instrument")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "compiled"]


@pytest.mark.parametrize("fault", ["max:sideways", "gather"])  # gather has no formula to break
def test_a_misspelt_fault_stops_the_import_with_the_sites_that_exist(fault):
    result = _import_with(fault)
    assert result.returncode != 0
    assert "FASTTAPE_FAULT" in result.stderr and "reverse-k" in result.stderr


# -- the oracle's side ---------------------------------------------------------
jax = pytest.importorskip("jax")
check_module = importlib.import_module("oracle.check")  # (``oracle.check`` the name is the function)


def _loss(x):
    return np.sum(np.tanh(x) * x)


def test_the_reference_memo_serves_jax_results_and_skips_tapes_without_the_opcode(monkeypatch):
    memo = check_module.ReferenceMemo()
    monkeypatch.setattr(check_module, "MEMO", [memo])
    x = np.linspace(-1.0, 1.0, 5)
    first = check_module.check(_loss, x)
    assert first.passed and len(first.results) == len(check_module.KINDS)
    assert {kind for _, kind in memo.values} >= {"value", "grad", "jvp", "vjp", "hvp", "hessian"}
    # a second check of the same point reads the memo: a stored reference made wrong is seen as wrong
    for key in [k for k in memo.values if k[1] == "grad"]:
        memo.values[key] = tuple(2.0 * np.asarray(g) for g in memo.values[key])
    again = check_module.check(_loss, x)
    assert [r.kind for r in again.failures()] == ["grad"]
    # with an opcode set, a tape without it is not checked at all; one with it is
    memo.opcode = PRIMITIVE_BY_NAME["logsumexp"].opcode
    assert check_module.check(_loss, x).results == []
    memo.opcode = PRIMITIVE_BY_NAME["tanh"].opcode
    assert len(check_module.check(_loss, x).results) == len(check_module.KINDS)


def test_the_mutation_report_counts_only_faults_that_fired():
    from oracle.mutants import Outcome, kill_rate, summary, table

    outcomes = [
        Outcome("tanh:reverse", "killed", "tanh-1 grad: differs", 12),
        Outcome("tanh:value", "killed", "tanh-1 value: differs", 3),
        Outcome("tanh:tangent", "survived", "", 7),
        Outcome("sign:reverse", "not reached", "", 0),
    ]
    assert kill_rate(outcomes) == pytest.approx(2 / 3)
    text = summary(outcomes, "ci")
    assert "2 killed, 1 survived, 1 not reached" in text and "kill rate 66.7%" in text
    assert "SURVIVED tanh:tangent: fired 7 times, every check passed; no thorough check" in text
    assert "not reached sign: reverse (its derivative" in text
    rows = {line.split()[0]: line.split()[1:] for line in table(outcomes).splitlines()[1:]}
    assert rows["tanh"] == ["K", "K", "S"] and rows["sign"] == ["."]
