"""fasttape as a GradBench tool (fasttape.gradbench): the protocol served to a scripted eval, every output
checked against JAX, and bad messages answered without stopping the tool."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fasttape as ft
from fasttape import tape_kernels
from fasttape.gradbench import protocol, serve
from fasttape.gradbench.evals import kmeans, llsq, ode

RTOL = 1e-12


def session(*messages) -> list[dict]:
    """The tool's answers to ``messages`` (dicts, or raw lines), one each, in order."""
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    out: list[str] = []
    serve(lines, out.append, warm_seconds=0)
    assert len(out) == len(lines) and all(line.endswith("\n") and line.count("\n") == 1 for line in out)
    return [json.loads(line) for line in out]


def message(module, function, data, id_=2) -> dict:
    return {"id": id_, "kind": "evaluate", "module": module, "function": function, "input": data}


def evaluate(module, function, data, id_=2):
    (answer,) = session(message(module, function, data, id_))
    assert answer["id"] == id_
    return answer


def jax_logsumexp(x):
    a = jnp.max(x)
    return a + jnp.log(jnp.sum(jnp.exp(x - a)))


def jax_llsq(x, n):
    t = -1.0 + jnp.arange(n) * 2.0 / (n - 1)
    powers = jnp.stack([t**j for j in range(x.size)], axis=1)
    r = jnp.sign(t) - powers @ x
    return 0.5 * jnp.sum(r * r)


def test_an_eval_s_whole_session_is_served():
    x = list(np.random.default_rng(0).random(50))
    answers = session(
        {"id": 0, "kind": "start", "eval": "lse"},
        {"id": 1, "kind": "define", "module": "lse"},
        message("lse", "primal", {"x": x, "min_runs": 3, "min_seconds": 0}),
        {"id": 3, "kind": "analysis", "of": 2, "valid": True},
        message("lse", "gradient", {"x": x, "min_runs": 2, "min_seconds": 0}, id_=4),
    )
    assert [a["id"] for a in answers] == [0, 1, 2, 3, 4]
    assert answers[0]["tool"] == "fasttape" and set(answers[0]["config"]) == {"fasttape", "numpy", "numba", "cores"}
    assert answers[1] == {"id": 1, "success": True}
    assert answers[3] == {"id": 3}
    expected = jax_logsumexp(jnp.array(x))  # (float64: tests/conftest.py)
    gradient = jax.grad(jax_logsumexp)(jnp.array(x))
    np.testing.assert_allclose(answers[2]["output"], float(expected), rtol=RTOL)
    np.testing.assert_allclose(answers[4]["output"], np.asarray(gradient), rtol=RTOL)
    for answer, runs in ((answers[2], 3), (answers[4], 2)):
        names = [t["name"] for t in answer["timings"]]
        assert names == ["prepare"] + ["evaluate"] * runs
        assert all(isinstance(t["nanoseconds"], int) and t["nanoseconds"] > 0 for t in answer["timings"])


def test_min_seconds_keeps_running_until_that_much_time_is_spent():
    answer = evaluate("lse", "gradient", {"x": [0.5] * 1000, "min_runs": 1, "min_seconds": 0.05})
    evaluations = [t["nanoseconds"] for t in answer["timings"] if t["name"] == "evaluate"]
    assert sum(evaluations) >= 0.05e9 and len(evaluations) > 1


@pytest.mark.parametrize("n, m", [(7, 3), (64, 8), (1001, 1)])
def test_llsq_primal_and_gradient_match_jax(n, m):
    x = np.random.default_rng(n).random(m)
    expected = jax_llsq(jnp.array(x), n)
    gradient = jax.grad(jax_llsq)(jnp.array(x), n)
    primal = evaluate("llsq", "primal", {"x": list(x), "n": n, "min_runs": 1, "min_seconds": 0})
    np.testing.assert_allclose(primal["output"], float(expected), rtol=1e-10)
    got = evaluate("llsq", "gradient", {"x": list(x), "n": n, "min_runs": 1, "min_seconds": 0})
    np.testing.assert_allclose(got["output"], np.asarray(gradient), rtol=1e-10, atol=1e-12)


def test_llsq_s_points_and_steps_are_the_reference_s():
    t = llsq.points(5)
    assert t.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and np.sign(t).tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]
    assert llsq.basis(t, 3).tolist() == [[1.0, v, v * v] for v in t.tolist()]


@pytest.mark.parametrize("n, s", [(6, 1), (50, 10)])
def test_ode_primal_and_gradient_match_jax(n, s):
    x = np.random.default_rng(s).random(n)
    expected = ode.solve(jnp.array(x), s, jnp)
    gradient = jax.grad(lambda x_: ode.solve(x_, s, jnp)[-1])(jnp.array(x))
    primal = evaluate("ode", "primal", {"x": list(x), "s": s, "min_runs": 1, "min_seconds": 0})
    np.testing.assert_allclose(primal["output"], np.asarray(expected), rtol=RTOL)
    got = evaluate("ode", "gradient", {"x": list(x), "s": s, "min_runs": 1, "min_seconds": 0})
    np.testing.assert_allclose(got["output"], np.asarray(gradient), rtol=1e-10, atol=1e-300)


def test_kmeans_cost_and_newton_direction_match_jax_and_the_closed_form():
    rng = np.random.default_rng(31337)
    P = rng.random((60, 3))
    C = P[-4:]  # (as the eval draws them: no cluster is empty)
    data = {"points": P.tolist(), "centroids": C.tolist(), "min_runs": 2, "min_seconds": 0}
    cost = evaluate("kmeans", "cost", data)["output"]
    np.testing.assert_allclose(cost, float(kmeans.cost(jnp.array(C), jnp.array(P), jnp)), rtol=RTOL)
    J = jax.grad(kmeans.cost)(jnp.array(C), jnp.array(P), jnp)
    H = jax.hessian(kmeans.cost)(jnp.array(C), jnp.array(P), jnp).reshape(C.size, C.size)
    direction = np.asarray(evaluate("kmeans", "dir", data)["output"])
    newton = (np.asarray(J).reshape(-1) / np.diag(np.asarray(H))).reshape(C.shape)
    np.testing.assert_allclose(direction, newton, rtol=RTOL)
    nearest = np.argmin(((P[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
    closed = np.array([C[j] - P[nearest == j].mean(axis=0) for j in range(len(C))])
    np.testing.assert_allclose(direction, closed, rtol=1e-12, atol=1e-15)


def test_hello_squares_and_doubles():
    assert evaluate("hello", "square", 3.0)["output"] == 9.0
    assert evaluate("hello", "double", 3.0)["output"] == 6.0  # (d x² / dx, by ft.grad)
    assert [t["name"] for t in evaluate("hello", "double", 1.5)["timings"]] == ["prepare", "evaluate"]


@pytest.mark.parametrize(
    "bad, error",
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "a JSON object with an id"),
        ({"id": 5, "kind": "frobnicate"}, "unknown message kind 'frobnicate'"),
        ({"id": 5, "kind": "define", "module": "tensor"}, "does not implement module 'tensor'"),
        (message("nope", "primal", {}, 5), "unknown module 'nope'"),
        (message("lse", "hessian", {}, 5), "no function 'hessian'"),
        (message("lse", "primal", {"y": [1.0]}, 5), "no field 'x'"),
        (message("lse", "primal", {"x": [[1.0]]}, 5), "1-d list"),
        (message("lse", "primal", {"x": ["a"]}, 5), "list of numbers"),
        (message("lse", "primal", {"x": [1.0, float("inf")]}, 5), "not finite"),
        (message("llsq", "primal", {"x": [1.0], "n": 1}, 5), "'n'"),
        (message("lse", "primal", {"x": [1.0], "min_runs": 0}, 5), "min_runs"),
        (message("hello", "square", "3", 5), "a number"),
        (message("kmeans", "cost", {"points": [[1.0, 2.0]], "centroids": [[1.0]]}, 5), "should be alike"),
        (message("ode", "primal", {"x": [1.0], "s": 0}, 5), "'s'"),
    ],
)
def test_a_bad_message_is_answered_with_its_error_and_the_tool_serves_the_next(bad, error):
    answers = session(bad, message("hello", "square", 2.0, 6))
    assert answers[0]["success"] is False and error in answers[0]["error"]
    assert answers[0]["id"] == (bad["id"] if isinstance(bad, dict) else None)
    assert answers[1] == {**answers[1], "id": 6, "success": True, "output": 4.0}


def test_an_output_that_is_not_finite_is_a_failure_not_invalid_json(monkeypatch):
    monkeypatch.setitem(protocol.MODULES, "broken", {"f": lambda data: lambda: np.array([1.0, np.nan])})
    (answer,) = session({"id": 1, "kind": "evaluate", "module": "broken", "function": "f", "input": {}})
    assert answer["success"] is False and "not finite" in answer["error"]


def test_the_tool_process_writes_answers_alone_to_stdout():
    messages = [
        {"id": 0, "kind": "start"},
        {"id": 1, "kind": "define", "module": "hello"},
        {"id": 2, "kind": "evaluate", "module": "hello", "function": "double", "input": 4.0},
    ]
    stdin = "".join(json.dumps(m) + "\n" for m in messages) + "garbage\n"
    result = subprocess.run([sys.executable, "-m", "fasttape.gradbench"], input=stdin, capture_output=True,
                            text=True, timeout=600, check=True)  # fmt: skip
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["id"] for a in answers] == [0, 1, 2, None]
    assert answers[2]["output"] == 8.0 and answers[3]["success"] is False


def test_prepare_makes_a_fast_function_s_tapes_hot_and_waits_for_their_kernels(monkeypatch):
    calls = []
    monkeypatch.setitem(protocol.MODULES, "counting", {"f": lambda data: lambda: calls.append(1) or 1.0})
    out: list[str] = []
    serve([json.dumps(message("counting", "f", {"min_runs": 2, "min_seconds": 0}))], out.append, warm_seconds=60)
    (answer,) = [json.loads(line) for line in out]
    assert [t["name"] for t in answer["timings"]] == ["prepare", "evaluate", "evaluate"]
    assert len(calls) == tape_kernels.HOT_CALLS + 2 + 2  # the first, HOT_CALLS more, one after the builds; 2 runs

    gradient = ft.grad(lambda x: np.sum(np.tanh(x) * x))  # a tape of its own
    x = np.random.default_rng(3).random(1000)
    monkeypatch.setitem(protocol.MODULES, "tanh", {"g": lambda data: lambda: gradient(x)})
    out.clear()
    with ft.tiers.only("compiled"), ft.options(tape_kernels="auto"):
        serve([json.dumps(message("tanh", "g", {"min_runs": 1, "min_seconds": 0}))], out.append)
    (tape,) = gradient.cache.tapes()
    assert json.loads(out[0])["success"] and tape._kernels.state in ("ready", "declined")  # settled within prepare
