"""The oracle's matrix runner (``oracle.run``) and its CLI (``python -m oracle``)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("jax")

import fasttape as ft  # noqa: E402
from oracle.cases import FIRST_CASES, PRIMITIVE_CASES  # noqa: E402
from oracle.check import KINDS  # noqa: E402
from oracle.run import run_matrix, select_cases  # noqa: E402

ALL = tuple(p.name for p in ft.PRIMITIVES)


@pytest.fixture(scope="module")
def tanh_matrix():
    return run_matrix("quick", primitive="tanh", progress=False, random_programs=False)


def test_single_primitive_covers_every_kind(tanh_matrix):
    m = tanh_matrix
    assert m.passed, m.table()
    assert m.primitives == ("tanh",)
    assert not m.missing
    for kind in KINDS:
        cell = m.cell("tanh", kind)
        assert cell.checks >= 1 and cell.failed == 0
        assert cell.max_error_jax <= 1e-10
    assert m.cell("tanh", "hvp").max_error_fd is not None
    assert "ok" in m.table() and "FAIL" not in m.table()


def test_primitive_filter_uses_traced_opcodes():
    # no case is named after "broadcast" alone beyond a few; selection goes through the tapes
    names = {c.name for c in select_cases("broadcast")}
    assert "broadcast-implicit" in names
    assert "add-bcast-3x1-1x4" in names  # uses the broadcast opcode without being named after it
    assert {c.name for c in select_cases("cumsum")} == {c.name for c in PRIMITIVE_CASES if c.name.startswith("cumsum")}


def test_json_round_trip(tanh_matrix, tmp_path):
    path = tmp_path / "report.json"
    tanh_matrix.to_json(path)
    data = json.loads(path.read_text())
    assert data["profile"] == "quick"
    assert data["passed"] is True
    assert data["fasttape_version"] == ft.__version__
    assert "date" in data and "git_commit" in data and "timings" in data
    assert data["kinds"] == list(KINDS)
    cell = data["cells"]["tanh"]["hvp"]
    assert cell["checks"] == tanh_matrix.cell("tanh", "hvp").checks and cell["failed"] == 0
    assert data["missing"] == []
    assert data["checks"] == tanh_matrix.checks


def test_missing_cells_are_reported():
    cases = [c for c in PRIMITIVE_CASES if c.name == "exp"]
    m = run_matrix("quick", kind="value", cases=cases, progress=False, random_programs=False)
    assert m.cell("exp", "value").checks >= 1
    assert ("sin", "value") in m.missing and ("exp", "value") not in m.missing
    assert not m.passed  # a matrix with holes does not pass
    assert "missing cells" in m.table()


def test_every_primitive_is_covered():
    """Every case's loss is scalar, so every kind applies to every case: one kind suffices for coverage, and
    each primitive's first case covers it (every case runs in the oracle's ci profile, in nox -s tests)."""
    m = run_matrix("quick", kind="value", progress=False, random_programs=False, cases=FIRST_CASES)
    assert m.missing == [], m.missing
    assert m.passed, m.table()
    assert set(m.primitives) == set(ALL)


def test_cli_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "oracle", "--quick", "--primitive", "exp", "--no-programs"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all passed" in proc.stdout
    assert "exp" in proc.stdout


def test_cli_verbose_single_cell():
    proc = subprocess.run(
        [sys.executable, "-m", "oracle", "--primitive", "tanh", "--kind", "hvp", "-v"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "oracle.check(tanh): PASS" in proc.stdout
    assert "1 primitives x 1 kinds" in proc.stdout


def test_failures_and_errors_are_reported():
    from oracle.cases import Case

    def wrong_under_numpy(xp, x):  # differs from its jax.numpy run: the value check must catch it
        return xp.sin(x) * (1.5 if xp.ones(1).__class__.__module__ == "numpy" else 1.0)

    cases = [Case("wrong", wrong_under_numpy, ((3,),)), Case("boom", lambda xp, x: xp.no_such_function(x), ((3,),))]
    m = run_matrix("quick", kind="value", cases=cases, progress=False, random_programs=False)
    cell = m.cell("sin", "value")
    assert cell.failed == 1 and cell.first_failure_case == "wrong"
    assert [e[0] for e in m.errors] == ["boom"]
    assert not m.passed
    table = m.table()
    assert "FAIL sin×value" in table and "ERROR boom" in table


def test_a_wrong_gradient_without_finite_differences_is_reported(monkeypatch):
    """fd=False (a case at a tie or near 1e300): a gradient that differs from JAX fails with its error
    against JAX alone in the message."""
    import importlib

    import numpy as np

    check_module = importlib.import_module("oracle.check")  # the module (``oracle.check`` is also the function)

    monkeypatch.setattr(check_module.ft, "grad", lambda f, argnums: lambda *a: tuple(2.0 * x for x in a))
    report = check_module.check(lambda x: np.sum(x * x) / 2.0, np.arange(3.0), fd=False, kinds=("grad",))
    (failure,) = report.failures()
    assert failure.kind == "grad" and failure.message.startswith("differs from JAX by 1.0e+00")
    assert "finite differences" not in failure.message


def test_the_table_states_the_conventions_both_sides_follow_at_ties_and_kinks():
    cases = [c for c in PRIMITIVE_CASES if c.name in ("max-edge-ties", "abs-edge-zeros", "logsumexp-edge-huge")]
    m = run_matrix("quick", cases=cases, progress=False, random_programs=False)
    declared = {p.name: p.convention for p in ft.PRIMITIVES}
    assert m.conventions() == {"abs": declared["abs"], "max": declared["max"]}  # huge: no convention, no kink
    assert f"max: {declared['max']}" in m.table()
    assert m.to_dict()["conventions"] == m.conventions()


def test_the_oracle_reaches_fused_regions_and_the_scalar_code():
    """The cases for the paths small array inputs never take still take them (a fused region in each large
    case, the scalar code in the scalar loop); the large ones skip only the dense Jacobian and Hessian."""
    import functools

    import numpy as np

    from fasttape import kernels as K
    from oracle.cases import NP, scalar_loss

    by_name = {c.name: c for c in PRIMITIVE_CASES}
    paths = {"fused-chain": K.S_START, "fused-binary": K.S_START, "scalar-steps": K.S_SCALAR}
    paths |= {"fused-chain-nonfinite": K.S_START, "fused-binary-nonfinite": K.S_START}
    paths |= {"scalar-pairs-nonfinite": K.S_SCALAR}
    for name, flag in paths.items():
        case = by_name[name]
        rng = case.rng()
        args = case.inputs(rng)
        tape = ft.trace(functools.partial(scalar_loss(case, args, rng), NP), *args, argnums=tuple(range(len(args))))
        assert np.count_nonzero(tape.code[0::4] & flag) > 0, name
    assert set(KINDS) - set(by_name["fused-chain"].kinds) == {"jacobian", "hessian"}


def test_a_nan_input_spreads_along_rows_forward_and_along_columns_in_reverse():
    """0 * NaN is NaN: forward mode spreads a NaN partial along its Jacobian row, reverse mode along its
    column, in fasttape as in JAX; each mode is held to JAX's same mode."""
    import numpy as np

    from oracle.check import check

    x = np.array([np.nan, 0.5, -1.0])
    report = check(lambda v: np.tanh(v) * 2.0, x, kinds=("jacobian",), fd=False)
    assert report.passed, str(report)
    forward, reverse = ft.jacfwd(lambda v: np.tanh(v) * 2.0)(x), ft.jacrev(lambda v: np.tanh(v) * 2.0)(x)
    assert np.isnan(forward[0]).all() and np.isnan(reverse[:, 0]).all()


def test_every_primitive_is_checked_beside_nan_and_inf_against_jax_run_op_by_op():
    import numpy as np

    from oracle.cases import NONFINITE

    by_name = {c.name: c for c in PRIMITIVE_CASES}
    for p in ft.PRIMITIVES:
        case = by_name[f"{p.name}-edge-{NONFINITE}"]
        assert case.eager and not case.smooth
        values = np.concatenate([a.reshape(-1) for a in case.inputs(case.rng())])
        assert np.isnan(values).any() and np.isposinf(values).any() and np.isneginf(values).any(), p.name
        assert np.isfinite(values).any(), p.name


def test_an_eager_reference_keeps_ieee_propagation():
    """Jitted, XLA turns jacfwd's one-hot products into a diagonal, so JAX's Jacobian of sum(w tan(x)) beside a
    NaN comes out finite where op by op (and in fasttape) 0 x NaN makes every entry NaN."""
    import numpy as np

    from oracle.check import check

    w = np.array([0.5, -1.0, 2.0, 1.5])
    x = np.array([np.nan, 1.0, 0.3, np.inf])
    report = check(lambda v: np.sum(np.tan(v) * w), x, kinds=("jacobian", "grad", "hvp", "hessian"), fd=False,
                   eager=True)  # fmt: skip
    assert report.passed, str(report)
    assert np.isnan(ft.jacfwd(lambda v: np.sum(np.tan(v) * w))(x)).all()
