"""GradBench's gmm, det, lstm, particle and saddle as fasttape's tool serves them: every output through the
protocol, checked against JAX running the same NumPy source (``xp=jax.numpy``) and against witnesses of
their own (SciPy's densities, NumPy's determinant, GradBench's expected values)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from fasttape.gradbench.evals import descent, det, gmm, lstm, particle, saddle
from tests.test_gradbench import evaluate, message, session

RUNS = {"min_runs": 1, "min_seconds": 0}


def gmm_input(d, k, n, seed, m=0, gamma=1.0):
    rng = np.random.default_rng(seed)
    return {
        "d": d, "k": k, "n": n, "m": m, "gamma": gamma,
        "x": rng.standard_normal((n, d)).tolist(),
        "alpha": rng.standard_normal(k).tolist(),
        "mu": rng.random((k, d)).tolist(),
        "q": rng.standard_normal((k, d)).tolist(),
        "l": rng.standard_normal((k, d * (d - 1) // 2)).tolist(),
    } | RUNS  # fmt: skip


def lower_factor(q, l, d):
    """Q with diagonal exp(q) and the strict lower part l column by column (the reference's Qtimesx)."""
    Q = np.diag(np.exp(q))
    position = 0
    for col in range(d):
        for row in range(col + 1, d):
            Q[row, col] = l[position]
            position += 1
    return Q


def test_gmm_objective_is_the_log_posterior_of_scipy_s_densities():
    d, k, n, m, gamma = 3, 4, 30, 2, 1.3
    data = gmm_input(d, k, n, seed=1, m=m, gamma=gamma)
    alpha, mu, q, l, X = (np.array(data[name]) for name in ("alpha", "mu", "q", "l", "x"))
    covariances = [np.linalg.inv(Q.T @ Q) for Q in (lower_factor(q[j], l[j], d) for j in range(k))]
    weights = np.exp(alpha) / np.exp(alpha).sum()
    likelihood = sum(
        np.log(sum(weights[j] * scipy.stats.multivariate_normal.pdf(x, mu[j], covariances[j]) for j in range(k)))
        for x in X
    )
    prior = sum(
        scipy.stats.wishart.logpdf(np.linalg.inv(S), df=d + m + 1, scale=np.eye(d) / gamma**2) for S in covariances
    )
    np.testing.assert_allclose(evaluate("gmm", "objective", data)["output"], likelihood + prior, rtol=1e-11)


@pytest.mark.parametrize("d, k", [(2, 3), (5, 4), (1, 2)])
def test_gmm_jacobian_is_jax_s_gradient_keyed_by_parameter(d, k):
    data = gmm_input(d, k, n=40, seed=d * k, m=1, gamma=0.7)
    args = [jnp.array(data[name], dtype=float).reshape(shape) for name, shape in
            (("alpha", (k,)), ("mu", (k, d)), ("q", (k, d)), ("l", (k, d * (d - 1) // 2)))]  # fmt: skip
    X = jnp.array(data["x"])
    expected = jax.grad(lambda *a: gmm.log_posterior(*a, X, 0.7, 1, xp=jnp), argnums=(0, 1, 2, 3))(*args)
    value = jax.jit(lambda *a: gmm.log_posterior(*a, X, 0.7, 1, xp=jnp))(*args)
    np.testing.assert_allclose(evaluate("gmm", "objective", data)["output"], float(value), rtol=1e-12)
    output = evaluate("gmm", "jacobian", data)["output"]
    assert set(output) == {"alpha", "mu", "q", "l"}
    for name, want in zip(gmm.PARAMETERS, expected, strict=True):
        got = np.array(output[name], dtype=float).reshape(want.shape)
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-13, err_msg=name)
    assert np.array(output["mu"]).shape == (k, d) and len(output["l"]) == k


def test_gmm_triangle_fills_the_lower_part_column_by_column():
    q, l = np.array([0.1, 0.2, 0.3]), np.array([4.0, 5.0, 6.0])
    row = np.concatenate([np.exp(q), l, [0.0]])
    np.testing.assert_array_equal(row[gmm.triangle_index(3)].reshape(3, 3), lower_factor(q, l, 3))


def laplace(M):
    """The reference's recursion: expansion along the first row."""
    if len(M) == 1:
        return M[0][0]
    return sum((-1) ** j * M[0][j] * laplace([row[:j] + row[j + 1 :] for row in M[1:]]) for j in range(len(M)))


@pytest.mark.parametrize("ell", [1, 2, 3, 4, 6])
def test_det_by_minors_is_the_recursion_and_its_gradient_the_adjugate(ell):
    A = np.random.default_rng(ell).random(ell * ell)
    data = {"A": A.tolist(), "ell": ell} | RUNS
    primal = evaluate("det", "primal", data)["output"]
    assert primal == pytest.approx(laplace(A.reshape(ell, ell).tolist()), rel=1e-13, abs=1e-15)
    gradient = np.array(evaluate("det", "gradient", data)["output"])
    M = jnp.array(A.reshape(ell, ell))
    np.testing.assert_allclose(gradient, np.asarray(jax.grad(jnp.linalg.det)(M)).ravel(), rtol=1e-10, atol=1e-13)
    expected = jax.grad(lambda a: det.det_by_minors(a, det.expansion_plan(ell), jnp))(jnp.array(A))
    np.testing.assert_allclose(gradient, np.asarray(expected), rtol=1e-12, atol=1e-15)


def test_det_plan_reads_row_i_at_level_i_and_every_permutation_once():
    ell = 5
    plan = det.expansion_plan(ell)
    assert [p.size for p in plan] == [math.perm(ell, i + 1) for i in range(ell)]
    assert all(((p % (ell * ell)) // ell == row).all() for row, p in enumerate(plan))
    columns = np.zeros((1, 0), dtype=int)  # each minor's prefix of columns, in the recursion's order
    for index in plan:
        taken = (index % ell).reshape(columns.shape[0], -1)
        columns = np.concatenate([np.repeat(columns, taken.shape[1], axis=0), taken.reshape(-1, 1)], axis=1)
    assert len({tuple(c) for c in columns}) == math.factorial(ell) and (np.sort(columns, 1) == np.arange(ell)).all()


def lstm_input(layers, chars, bits, seed):
    rng = np.random.default_rng(seed)
    return {
        "main_params": rng.random((2 * layers, 4 * bits)).tolist(),
        "extra_params": rng.random((3, bits)).tolist(),
        "state": rng.random((2 * layers, bits)).tolist(),
        "sequence": (rng.random((chars, bits)) < 0.5).astype(float).tolist(),
    } | RUNS


def lstm_reference(main, extra, state, sequence):
    """The reference's loops, one scalar at a time (cpp/gradbench/evals/lstm.hpp)."""
    layers, b = len(main) // 2, len(extra[0])
    state = [row[:] for row in state]
    sigmoid = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    total = 0.0
    for t in range(len(sequence) - 1):
        out = [sequence[t][i] * extra[0][i] for i in range(b)]
        for layer in range(layers):
            w, bias, hidden, cell = main[2 * layer], main[2 * layer + 1], state[2 * layer], state[2 * layer + 1]
            for i in range(b):
                forget = sigmoid(out[i] * w[i] + bias[i])
                ingate = sigmoid(hidden[i] * w[b + i] + bias[b + i])
                outgate = sigmoid(out[i] * w[2 * b + i] + bias[2 * b + i])
                change = math.tanh(hidden[i] * w[3 * b + i] + bias[3 * b + i])
                cell[i] = cell[i] * forget + ingate * change
                hidden[i] = outgate * math.tanh(cell[i])
            out = hidden
        prediction = [out[i] * extra[1][i] + extra[2][i] for i in range(b)]
        normaliser = math.log(sum(math.exp(p) for p in prediction) + 2.0)
        total += sum(sequence[t + 1][i] * (prediction[i] - normaliser) for i in range(b))
    return -total / ((len(sequence) - 1) * b)


@pytest.mark.parametrize("layers, chars, bits", [(1, 2, 3), (2, 9, 4)])
def test_lstm_loss_and_jacobian_match_the_reference_loops_and_jax(layers, chars, bits):
    data = lstm_input(layers, chars, bits, seed=layers + chars)
    args = [data[name] for name in ("main_params", "extra_params", "state", "sequence")]
    objective = evaluate("lstm", "objective", data)["output"]
    assert objective == pytest.approx(lstm_reference(*args), rel=1e-13)
    jacobian = evaluate("lstm", "jacobian", data)["output"]
    assert len(jacobian) == 8 * layers * bits + 3 * bits
    main, extra, state, sequence = (jnp.array(a) for a in args)
    g_main, g_extra = jax.grad(lambda m, e: lstm.loss(m, e, state, sequence, jnp), argnums=(0, 1))(main, extra)
    expected = np.concatenate([np.asarray(g_main).ravel(), np.asarray(g_extra).ravel()])  # rows of main, then extra
    np.testing.assert_allclose(jacobian, expected, rtol=1e-10, atol=1e-14)


SADDLE_EXPECTED = 8.246324826140356e-06  # GradBench's saddle eval validates against this value (evals/saddle/run.py)
PARTICLE_EXPECTED = 0.2071918746486116  # and particle against this one (evals/particle/run.py)


def jax_saddle_cost(p1, start):
    """saddle's cost of p1 (the inner search's maximum) with JAX's gradient of f in p2, the same descent."""
    f = lambda p1, p2: jnp.sum(p1 * p1) - jnp.sum(p2 * p2)  # noqa: E731
    inner = jax.grad(f, argnums=1)
    p2 = descent.argmax(lambda p2: f(p1, p2), lambda p2: inner(p1, p2), start)
    return f(p1, p2)


@pytest.mark.parametrize("p1", [[0.5, -0.25], [1.0, 1.0]])
def test_saddle_s_cost_and_its_derivative_through_the_inner_search_are_jax_s(p1):
    start, p1 = np.array([1.0, 1.0]), np.array(p1)
    value, expected = jax.value_and_grad(jax_saddle_cost)(jnp.array(p1), jnp.array(start))  # (reverse over reverse)
    for inner in "rf":
        assert saddle.COMPILED_COSTS[inner](p1, start) == pytest.approx(float(value), rel=1e-13)
        for outer in "rf":
            got = saddle.DERIVATIVES[outer + inner](p1, start)
            np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-12, err_msg=outer + inner)


def test_saddle_s_searches_land_where_gradbench_expects_in_every_mode():
    data = {"start": [1.0, 1.0]} | RUNS
    answers = session(*(message("saddle", modes, data, i) for i, modes in enumerate(saddle.FUNCTIONS)))
    outputs = [answer["output"] for answer in answers]
    assert all(output == outputs[0] for output in outputs), outputs  # (every mode: the same steps)
    np.testing.assert_allclose(outputs[0], SADDLE_EXPECTED, rtol=1e-9)


def jax_landing(w):
    """particle's landing with JAX's gradient of the potential."""
    potential = lambda c, x: jnp.sum(1.0 / jnp.sqrt(jnp.sum((c - x) ** 2, axis=1)))  # noqa: E731
    return particle.landing(w[0], jax.jit(jax.grad(potential, argnums=1)))


def test_particle_s_derivative_through_the_path_is_jax_s_in_every_mode():
    """The outer derivative (through the Euler path and its inner gradients) against JAX's, at two w."""
    for w in (np.array([0.0]), np.array([0.3])):
        value, expected = jax.value_and_grad(jax_landing)(jnp.array(w))
        for modes, derivative in particle.DERIVATIVES.items():
            np.testing.assert_allclose(derivative(w), np.asarray(expected), rtol=1e-10, err_msg=modes)
            assert particle.OBJECTIVES[modes[1]](w) == pytest.approx(float(value), rel=1e-13)


def test_particle_lands_where_gradbench_expects():
    answer = evaluate("particle", "rr", {"w": 0.0} | RUNS)
    assert answer["output"] == pytest.approx(PARTICLE_EXPECTED, rel=1e-12)


@pytest.mark.parametrize(
    "module, function, data, error",
    [
        ("gmm", "objective", {"d": 2, "k": 1, "n": 1}, "no field 'alpha'"),
        ("gmm", "jacobian", gmm_input(2, 2, 3, 0) | {"mu": [[0.0, 0.0]]}, "'mu' should have shape (2, 2)"),
        ("det", "primal", {"A": [1.0, 2.0, 3.0], "ell": 2}, "ell² = 4"),
        ("lstm", "objective", lstm_input(1, 3, 2, 0) | {"state": [[0.0, 0.0]]}, "'state' should have shape (2, 2)"),
        ("saddle", "rr", {"start": [1.0]}, "a point [x, y]"),
        ("particle", "ff", {"w": "x"}, "'w' should be a finite number"),
    ],
)
def test_bad_inputs_are_answered_with_the_field_s_name(module, function, data, error):
    answer = evaluate(module, function, data)
    assert answer["success"] is False and error in answer["error"], answer
