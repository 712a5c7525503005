"""The oracle catches a derivative rule broken on purpose (FASTTAPE_FAULT), both
in the per-primitive check (on hand-written and on hypothesis-drawn inputs) and in
the random-program search.

The fault is compiled into the kernels, so this runs in a fresh interpreter
(the on-disk cache is switched off while a fault is set)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

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


def test_fault_must_name_an_elementwise_primitive():
    env = {**os.environ, "FASTTAPE_FAULT": "gather"}
    result = subprocess.run([sys.executable, "-c", "import fasttape"], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "FASTTAPE_FAULT" in result.stderr
