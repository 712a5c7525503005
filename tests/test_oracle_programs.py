"""Random programs over fasttape's primitive table, checked against JAX (oracle.programs)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

import oracle
from oracle.programs import TIED, Program, Step, check_program, programs, search, well_defined


@settings(max_examples=20, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs(min_steps=2, max_steps=6))
def test_random_programs_pass(program):
    if not well_defined(program):
        return
    report = check_program(program)
    assert report.passed, program.snippet() + "\n" + str(report)


class _StubOracle:
    """Stands in for ``oracle`` inside an exec'd snippet: records what ``oracle.check`` receives."""

    def __init__(self):
        self.calls = []

    def check(self, f, *args, **kwargs):
        self.calls.append((f, args, kwargs))
        return "report"


def _exec_snippet(snippet, oracle_module):
    import builtins

    def fake_import(name, *args, **kwargs):
        return oracle_module if name == "oracle" else builtins.__import__(name, *args, **kwargs)

    printed = []
    scope = {"__builtins__": {**vars(builtins), "__import__": fake_import, "print": printed.append}}
    exec(snippet, scope)
    return printed


@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs(min_steps=1, max_steps=8))
def test_snippet_reproduces_callable(program):
    stub = _StubOracle()
    printed = _exec_snippet(program.snippet(), stub)
    assert printed == ["report"]
    [(f, args, kwargs)] = stub.calls
    assert kwargs["namespace"] is True
    assert kwargs["fd"] is program.smooth  # tied inputs: against JAX alone
    assert len(args) == len(program.inputs)
    for a, x in zip(args, program.inputs):  # the inputs are embedded exactly
        assert a.shape == x.shape
        np.testing.assert_array_equal(a, x)
    with np.errstate(all="ignore"):
        try:
            expected = program.callable(np, *program.inputs)
        except np.linalg.LinAlgError:  # NumPy's SVD refuses NaN (JAX and fasttape give NaN): so does the snippet's
            with pytest.raises(np.linalg.LinAlgError):
                f(np, *args)
            return
        np.testing.assert_array_equal(f(np, *args), expected)


def test_some_programs_have_tied_inputs():
    seen = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(programs(min_steps=1, max_steps=3))
    def collect(program):
        seen.append(program)

    collect()
    tied = [p for p in seen if not p.smooth and not p.nonfinite]
    assert 0 < len(tied) < len(seen)
    for program in tied:  # a few values, repeated: no jitter
        values = np.concatenate([np.ravel(x) for x in program.inputs])
        assert set(values.tolist()) <= set(TIED)
    for program in seen:
        if program.smooth:
            values = np.concatenate([np.ravel(x) for x in program.inputs])
            assert np.unique(values).size == values.size


def test_some_programs_have_nan_and_inf_inputs_and_are_checked_op_by_op():
    program = find(
        programs(min_steps=1, max_steps=3),
        lambda p: p.nonfinite,
        settings=settings(max_examples=2000, database=None, derandomize=True, suppress_health_check=list(HealthCheck)),
    )
    assert not program.smooth and not np.isfinite(np.ravel(program.inputs[0])).all()
    assert "eager=True, exact_nonfinite=False" in program.snippet()
    stub = _StubOracle()
    _exec_snippet(program.snippet(), stub)  # NaN and inf written so that the snippet runs
    [(_, args, kwargs)] = stub.calls
    assert kwargs["eager"] is True and kwargs["exact_nonfinite"] is False
    for a, x in zip(args, program.inputs):
        np.testing.assert_array_equal(a, x)
    untied = find(programs(min_steps=1, max_steps=3), lambda p: p.smooth)
    assert not untied.nonfinite and "eager=False" in untied.snippet()


def test_snippet_runs_the_real_oracle():
    x = np.array([0.1, 1 / 3, -2.0])
    program = Program((x,), (Step("tanh", (0,)), Step("multiply", (1, 0), (("neg0", False), ("neg1", False)))))
    assert "v1 = xp.tanh(x0)" in program.source()
    assert "v2 = xp.multiply(v1, x0)" in program.source()
    assert program.primitives() == ["multiply", "sum", "tanh"]
    [report] = _exec_snippet(program.snippet(), oracle)
    assert isinstance(report, oracle.Report) and report.passed
    assert report.results[0].error_jax == 0.0
    np.testing.assert_allclose(program(), np.sum(np.tanh(x) * x), rtol=1e-15)


class _FaultyTanh:
    """numpy with a subtly wrong (but smooth) tanh."""

    def __getattr__(self, name):
        if name == "tanh":
            return lambda x: np.tanh(x) + 1e-3 * np.sin(x) ** 2
        return getattr(np, name)


def _fault_tanh(fn):
    def wrapped(xp, *args):
        return fn(_FaultyTanh() if xp is np else xp, *args)

    return wrapped


def test_search_finds_nothing_on_correct_programs():
    assert search(3, seed=1, max_steps=5) is None


def test_search_detects_and_shrinks_a_faulty_primitive():
    found = search(30, seed=0, min_steps=1, max_steps=8, wrap=_fault_tanh, kinds=("value",))
    assert found is not None
    assert "tanh" in found.primitives
    assert "tanh" in found.source
    assert "tanh" in found.summary()
    assert not found.report.passed
    assert len(found.program.steps) == 1  # shrunk
