"""GradBench's ht eval (fasttape.gradbench.evals.ht) on a small synthetic hand: the objective against a literal
transcription of the reference's loops and against JAX running the same code, both Jacobian layouts against
JAX's (the us columns against the diagonal of JAX's full Jacobian in us), the output format through the
protocol, and bad inputs answered with the field they get wrong."""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fasttape.api
from fasttape.gradbench import serve
from fasttape.gradbench.evals import ht

RTOL = 1e-10
BONES, VERTICES, TRIANGLES, POINTS = 22, 40, 30, 24  # (θ's 26 parameters pose 22 bones: the hand's skeleton)


def rigid(rng) -> np.ndarray:
    """A random 4×4 rotation and translation."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    m = np.eye(4)
    m[:3, :3] = q * np.sign(np.diag(r))
    m[:3, 3] = rng.normal(size=3)
    return m


def synthetic_input(seed=0, complicated=True, mirrored=False, still=False) -> dict:
    """An HTInput (``HandInput.to_dict()``'s fields): a random skeleton, skin, triangles and observations."""
    rng = np.random.default_rng(seed)
    parents = [-1] + [int(rng.integers(-1, i)) if i > 1 else 0 for i in range(1, BONES)]
    relatives = [rigid(rng) for _ in range(BONES)]
    absolutes = []
    for bone, parent in enumerate(parents):
        absolutes.append(relatives[bone] if parent < 0 else absolutes[parent] @ relatives[bone])
    weights = rng.random((VERTICES, BONES)) * (rng.random((VERTICES, BONES)) < 0.3)
    weights[np.arange(VERTICES), rng.integers(0, BONES, VERTICES)] += 0.5
    weights /= weights.sum(axis=1, keepdims=True)
    theta = rng.normal(scale=0.5, size=26)
    if still:
        theta[:3] = 0.0  # no global rotation: the reference's identity branch (angle below 1e-4)
    n = POINTS
    return {
        "theta": theta.tolist(),
        "us": rng.random((n, 2)).tolist() if complicated else [],
        "data": {
            "model": {
                "bone_count": BONES,
                "bone_names": [f"bone{i}" for i in range(BONES)],
                "parents": parents,
                "base_relatives": np.array(relatives).tolist(),
                "inverse_base_absolutes": np.linalg.inv(np.array(absolutes)).tolist(),
                "base_positions": np.hstack([rng.normal(size=(VERTICES, 3)), np.ones((VERTICES, 1))]).tolist(),
                "weights": weights.tolist(),
                "triangles": rng.integers(0, VERTICES, (TRIANGLES, 3)).tolist(),
                "is_mirrored": mirrored,
            },
            "correspondences": rng.integers(0, TRIANGLES if complicated else VERTICES, n).tolist(),
            "points": rng.normal(size=(n, 3)).tolist(),
        },
        "min_runs": 2,
        "min_seconds": 0,
    }


def reference_objective(data) -> np.ndarray:
    """The reference's objective (GradBench's cpp/gradbench/evals/ht.hpp) transcribed loop by loop."""
    theta, model = np.array(data["theta"]), data["data"]["model"]
    pose = np.zeros((3, BONES + 3))  # to_pose_params: columns rotation, scale, translation, then one per bone
    pose[:, 0], pose[:, 1], pose[:, 2] = theta[:3], 1.0, theta[3:6]
    i_theta, column = 6, 5
    for _finger in range(5):
        for joint in range(2, 5):
            pose[0, column] = theta[i_theta]
            i_theta += 1
            if joint == 2:
                pose[1, column] = theta[i_theta]
                i_theta += 1
            column += 1
        column += 1
    absolutes = []
    for bone in range(BONES):
        tx, tz, ty = pose[:, bone + 3]
        rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
        ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
        rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
        tr = np.eye(4)
        tr[:3, :3] = rz @ ry @ rx
        relative = np.array(model["base_relatives"][bone]) @ tr
        parent = model["parents"][bone]
        absolutes.append(relative if parent == -1 else absolutes[parent] @ relative)
    base = np.array(model["base_positions"]).T  # 4 × vertices
    positions = np.zeros((3, base.shape[1]))
    for bone in range(BONES):
        transform = absolutes[bone] @ np.array(model["inverse_base_absolutes"][bone])
        for vertex in range(base.shape[1]):
            positions[:, vertex] += (transform @ base[:, vertex])[:3] * model["weights"][vertex][bone]
    if model["is_mirrored"]:
        positions[0] *= -1
    angle = np.sqrt(np.sum(pose[:, 0] ** 2))
    rotation = np.eye(3)
    if angle >= 1e-4:
        x, y, z = pose[:, 0] / angle
        s, c = np.sin(angle), np.cos(angle)
        rotation = np.array(
            [
                [x * x + (1 - x * x) * c, x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
                [x * y * (1 - c) + z * s, y * y + (1 - y * y) * c, y * z * (1 - c) - x * s],
                [x * z * (1 - c) - y * s, z * y * (1 - c) + x * s, z * z + (1 - z * z) * c],
            ]
        )
    positions = rotation @ positions + pose[:, 2:3]
    points, err = data["data"]["points"], []
    for i, corr in enumerate(data["data"]["correspondences"]):
        if data["us"]:
            u0, u1 = data["us"][i]
            a, b, c = model["triangles"][corr]
            hand = u0 * positions[:, a] + u1 * positions[:, b] + (1 - u0 - u1) * positions[:, c]
        else:
            hand = positions[:, corr]
        err.extend(points[i][j] - hand[j] for j in range(3))
    return np.array(err)


def jax_arguments(data):
    """(θ, us or None, model, correspondences, points) as read by the eval, the floats as JAX arrays."""
    theta, us, model, correspondences, points = ht.read_input(data)
    floats = ("base_relatives", "inverse_base_absolutes", "base_positions", "weights")
    model = ht.HandModel(**{**model.__dict__, **{name: jnp.asarray(getattr(model, name)) for name in floats}})
    return jnp.asarray(theta), None if us is None else jnp.asarray(us), model, correspondences, jnp.asarray(points)


def evaluate(function, data) -> dict:
    out = []
    message = {"id": 7, "kind": "evaluate", "module": "ht", "function": function, "input": data}
    serve([json.dumps(message)], out.append, warm_seconds=0)
    (answer,) = [json.loads(line) for line in out]
    assert answer["id"] == 7 and answer["success"] is True, answer
    assert [t["name"] for t in answer["timings"]] == ["prepare", "evaluate", "evaluate"]
    return answer["output"]


def assert_plain_rows(rows, n_rows, n_columns):
    assert isinstance(rows, list) and len(rows) == n_rows
    assert all(isinstance(row, list) and len(row) == n_columns for row in rows)
    assert all(type(x) is float for row in rows for x in row)


VARIANTS = [(True, False, False), (False, False, False), (True, True, True), (False, True, True)]


@pytest.mark.parametrize("complicated, mirrored, still", VARIANTS)
def test_objective_is_the_reference_s_and_jax_s(complicated, mirrored, still):
    data = synthetic_input(seed=1, complicated=complicated, mirrored=mirrored, still=still)
    output = evaluate("objective", data)
    assert isinstance(output, list) and len(output) == 3 * POINTS and all(type(x) is float for x in output)
    np.testing.assert_allclose(output, reference_objective(data), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(output, np.asarray(ht.errors(*jax_arguments(data), xp=jnp)), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("mirrored, still", [(False, False), (True, True)])
def test_complicated_jacobian_holds_each_row_s_own_us_columns_then_theta_s_as_jax(mirrored, still):
    data = synthetic_input(seed=2, mirrored=mirrored, still=still)
    rows = evaluate("jacobian", data)
    assert_plain_rows(rows, 3 * POINTS, 2 + 26)
    J = np.array(rows)
    theta, us, model, correspondences, points = jax_arguments(data)
    J_theta, J_us = jax.jacfwd(ht.errors, argnums=(0, 1))(theta, us, model, correspondences, points, jnp)
    J_us = np.asarray(J_us)  # (3n, n, 2): row 3i + j depends on us[i] alone
    own = np.repeat(np.arange(POINTS), 3)
    off_diagonal = np.ones(J_us.shape, dtype=bool)
    off_diagonal[np.arange(3 * POINTS), own] = False
    assert np.all(J_us[off_diagonal] == 0)  # (so the two columns of own derivatives hold all of it)
    np.testing.assert_allclose(J[:, :2], J_us[np.arange(3 * POINTS), own], rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(J[:, 2:], np.asarray(J_theta), rtol=RTOL, atol=1e-13)


@pytest.mark.parametrize("mirrored", [False, True])
def test_simple_jacobian_is_jax_s_in_theta(mirrored):
    data = synthetic_input(seed=3, complicated=False, mirrored=mirrored)
    rows = evaluate("jacobian", data)
    assert_plain_rows(rows, 3 * POINTS, 26)
    theta, _, model, correspondences, points = jax_arguments(data)
    expected = jax.jacfwd(ht.errors)(theta, None, model, correspondences, points, jnp)
    np.testing.assert_allclose(np.array(rows), np.asarray(expected), rtol=RTOL, atol=1e-13)


@pytest.mark.parametrize("complicated", [True, False])
def test_a_jacobian_is_traced_on_its_first_run_and_replayed_by_the_next(complicated, monkeypatch):
    traced = []
    record = fasttape.api.record
    monkeypatch.setattr(fasttape.api, "record", lambda *a, **k: traced.append(1) or record(*a, **k))
    run = ht.FUNCTIONS["jacobian"](synthetic_input(seed=4, complicated=complicated))
    assert not traced  # (reading the input traces nothing)
    first = run()
    tapes = len(traced)
    assert tapes == (2 if complicated else 1)  # (the θ columns' tape, and the us columns')
    again = run(), run()
    assert len(traced) == tapes and all(np.array_equal(first, J) for J in again)
    assert first.shape == (3 * POINTS, 28 if complicated else 26)


def without(data, *path):
    data = copy.deepcopy(data)
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    del node[last]
    return data


def replaced(data, value, *path):
    data = copy.deepcopy(data)
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


GOOD = synthetic_input(seed=5)


@pytest.mark.parametrize(
    "bad, error",
    [
        (without(GOOD, "theta"), "no field 'theta'"),
        (without(GOOD, "data", "model", "weights"), "no field 'weights'"),
        (without(GOOD, "data", "points"), "no field 'points'"),
        (replaced(GOOD, GOOD["theta"][:25], "theta"), "'theta'"),
        (replaced(GOOD, np.zeros((VERTICES, BONES + 1)).tolist(), "data", "model", "weights"), "'weights'"),
        (replaced(GOOD, np.eye(4).tolist(), "data", "model", "base_relatives"), "'base_relatives'"),
        (replaced(GOOD, np.zeros((POINTS, 3)).tolist(), "us"), "'us'"),
        (replaced(GOOD, [0, 1] * 11, "data", "model", "parents"), "'parents'"),
        (replaced(GOOD, [TRIANGLES] * POINTS, "data", "correspondences"), "'correspondences'"),
        (replaced(GOOD, [0.5] * POINTS, "data", "correspondences"), "'correspondences'"),
        (replaced(GOOD, "no", "data", "model", "is_mirrored"), "'is_mirrored'"),
    ],
)
def test_a_bad_input_is_answered_with_the_field_it_gets_wrong(bad, error):
    for function in ("objective", "jacobian"):
        out = []
        message = {"id": 3, "kind": "evaluate", "module": "ht", "function": function, "input": bad}
        serve([json.dumps(message)], out.append, warm_seconds=0)
        answer = json.loads(out[0])
        assert answer["success"] is False and answer["id"] == 3
        assert error in answer["error"], answer["error"]
