"""The oracle catches a derivative rule broken on purpose (FASTTAPE_FAULT), both
in the per-primitive check (on hand-written and on hypothesis-drawn inputs) and in
the random-program search; and the same instrumented build takes other faults while
it runs (``fasttape.faults.plant``, as ``oracle.mutants`` does).

The fault is compiled into the kernels, so this runs in a fresh interpreter
(the on-disk cache is switched off while a fault is set)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")
pytestmark = pytest.mark.instrumented  # minutes of compiling: nox -s mutants runs it, nox -s tests does not

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import oracle
    x = np.linspace(-1.0, 1.0, 5)
    broken = oracle.check(lambda v: np.sum(np.tanh(v) * v), x)
    healthy = oracle.check(lambda v: np.sum(np.exp(v) * v), x)
    print("tanh", broken.passed, sorted({r.kind for r in broken.failures()}))
    print("exp", healthy.passed)
    from oracle.programs import search
    found = search(15, seed=0, max_steps=5, kinds=("grad",))
    print("search", "none" if found is None else ",".join(found.primitives))
    print("snippet", "none" if found is None else "np.tanh" in found.source or "xp.tanh" in found.source)
    from oracle.run import run_matrix
    matrix = run_matrix("quick", primitive="tanh", kind="grad", progress=False, random_programs=False)
    print("drawn", ";".join(p + "@" + example.split("{")[0] for p, example, _ in matrix.drawn_failures) or "none")
    # the same build takes any other fault while it runs (oracle.mutants), and counts when it fires
    from fasttape import faults
    faults.plant("max:reverse")
    broken = oracle.check(lambda v: np.max(np.sin(v) * v), x + 2.0)
    print("max", broken.passed, sorted({r.kind for r in broken.failures()}), faults.hits() > 0)
    faults.plant("max:reverse@ties")  # wrong only where the operand holds a tie
    apart = oracle.check(lambda v: np.max(np.sin(v) * v), x + 2.0)
    print("edge-apart", apart.passed, faults.hits())
    tied = oracle.check(lambda v: np.max(v * 1.0), np.array([1.0, 3.0, 3.0, -1.0]), fd=False)
    print("edge-tied", tied.passed, faults.hits() > 0)
    faults.plant("exp:formula-value")
    print("exp-value", oracle.check(lambda v: np.sum(np.exp(v) * v), x).passed)
    faults.clear()
    print("cleared", oracle.check(lambda v: np.sum(np.tanh(v) * v), x).passed, faults.hits())
    """
)


def test_broken_tanh_rule_is_caught_and_other_primitives_still_pass():
    env = {**os.environ, "FASTTAPE_FAULT": "tanh"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["exp"] == "True"
    passed, kinds = lines["tanh"].split(" ", 1)
    assert passed == "False"
    for kind in ("grad", "jvp", "vjp", "hvp", "hessian"):
        assert kind in kinds, f"a broken d tanh should fail {kind}: {kinds}"
    # the random-program search finds it too, and its shrunk reproducer names the primitive
    assert "tanh" in lines["search"].split(","), lines["search"]
    assert lines["snippet"] == "True"
    # and so does the matrix's hypothesis-drawn phase, shrunk to an example of tanh alone
    assert lines["drawn"] == "tanh@tanh", lines["drawn"]
    # planted at run time: a family kernel's reverse (max), a formula's value (exp), then nothing
    passed, kinds = lines["max"].split(" ", 1)
    assert passed == "False" and kinds.endswith("True"), lines["max"]
    for kind in ("grad", "vjp"):
        assert kind in kinds, f"a broken max reverse should fail {kind}: {kinds}"
    assert "jvp" not in kinds and "hessian" not in kinds  # the tangent and second-order kernels are not broken
    assert lines["edge-apart"] == "True 0" and lines["edge-tied"] == "False True"
    assert lines["exp-value"] == "False"
    assert lines["cleared"] == "True 0"
