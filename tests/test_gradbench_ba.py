"""GradBench's ``ba`` eval (fasttape.gradbench.evals.ba): the objective against a scalar transcription of the
reference and against JAX running the same code, the whole sparse Jacobian against JAX's dense one, the CSR
structure against the reference's insertion order, and the protocol's output format."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from fasttape.gradbench import serve
from fasttape.gradbench.evals import ba

RTOL = 1e-10


def parameters(n, m, p, seed, still_camera=1):
    """Random cameras (n, 11), points (m, 3) in front of them, weights, features and the eval's observations;
    camera ``still_camera`` has rotation 0 (the reference's θ² = 0 branch)."""
    rng = np.random.default_rng(seed)
    cams = np.concatenate(
        [
            rng.normal(0.0, 0.5, (n, 3)),  # rotation
            rng.normal(0.0, 0.3, (n, 3)),  # centre
            rng.uniform(1.0, 3.0, (n, 1)),  # focal length
            rng.normal(0.0, 1.0, (n, 2)),  # principal point
            rng.normal(0.0, 0.1, (n, 2)),  # radial distortion
        ],
        axis=1,
    )
    if still_camera is not None:
        cams[still_camera, :3] = 0.0
    X = rng.normal(0.0, 1.0, (m, 3)) + [0.0, 0.0, 6.0]
    w, feats = rng.uniform(0.5, 1.5, p), rng.normal(0.0, 1.0, (p, 2))
    i = np.arange(p)
    return cams, X, w, feats, i % n, i % m


def reference_residual(cam, x, w, feat):
    """One observation's reprojection error, transcribed from the reference's scalar code (ba.hpp)."""
    rot, centre, f, principal, (k1, k2) = cam[:3], cam[3:6], cam[6], cam[7:9], cam[9:11]
    shifted = x - centre
    sqtheta = rot @ rot
    if sqtheta != 0:
        theta = np.sqrt(sqtheta)
        axis = rot / theta
        along = (axis @ shifted) * (1.0 - np.cos(theta))
        Xcam = shifted * np.cos(theta) + np.cross(axis, shifted) * np.sin(theta) + axis * along
    else:
        Xcam = shifted + np.cross(rot, shifted)
    proj = Xcam[:2] / Xcam[2]
    rsq = proj @ proj
    proj = proj * (1.0 + k1 * rsq + k2 * rsq * rsq)
    return w * (proj * f + principal - feat)


def stacked_objective(cams, X, w, feats, cam_index, point_index):
    """The objective's outputs as one vector, the Jacobian's row order: e_0 (2), ..., e_{p−1} (2), then w_err (p)."""
    reprojection, weight = ba.objective(cams, X, w, feats, cam_index, point_index, xp=jnp)
    return jnp.concatenate([reprojection.reshape(-1), weight])


JAX_JACOBIANS = {mode: jax.jit(jacobian(stacked_objective, argnums=(0, 1, 2))) for mode, jacobian in
                 (("fwd", jax.jacfwd), ("rev", jax.jacrev))}  # fmt: skip


def dense_jacobian(mode, cams, X, w, feats, cam_index, point_index):
    """JAX's dense Jacobian (3p, 11n + 3m + p), columns the cameras', the points', then the weights'."""
    J = JAX_JACOBIANS[mode](cams, X, w, feats, cam_index, point_index)
    rows = 3 * w.size
    return np.concatenate([np.asarray(block).reshape(rows, -1) for block in J], axis=1)


def reference_structure(n, m, cam_index, point_index):
    """Row pointers and columns in the order of the reference's SparseMat insertions, one entry at a time."""
    p = cam_index.size
    rows, cols = [0], []
    for i in range(p):
        for _ in range(2):
            rows.append(rows[-1] + 15)
        for _ in range(2):
            cols += [11 * int(cam_index[i]) + j for j in range(11)]
            cols += [11 * n + 3 * int(point_index[i]) + j for j in range(3)]
            cols.append(11 * n + 3 * m + i)
    for i in range(p):
        rows.append(rows[-1] + 1)
        cols.append(11 * n + 3 * m + i)
    return rows, cols


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_the_reference_s_scalar_code_and_jax(seed):
    cams, X, w, feats, cam_index, point_index = parameters(3, 5, 7, seed)
    reprojection, weight = ba.objective(cams, X, w, feats, cam_index, point_index)
    observations = enumerate(zip(cam_index, point_index))
    expected = [reference_residual(cams[c], X[k], w[i], feats[i]) for i, (c, k) in observations]
    assert reprojection.shape == (7, 2) and weight.shape == (7,)
    np.testing.assert_allclose(reprojection, np.array(expected), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(weight, 1.0 - w * w, rtol=1e-15)
    jax_objective = jax.jit(lambda *a: ba.objective(*a, xp=jnp))
    jax_reprojection, jax_weight = jax_objective(*map(jnp.array, (cams, X, w, feats)), cam_index, point_index)
    np.testing.assert_allclose(reprojection, np.asarray(jax_reprojection), rtol=RTOL)
    np.testing.assert_allclose(weight, np.asarray(jax_weight), rtol=RTOL)


def test_the_still_camera_takes_the_first_order_rotation():
    cams, X, w, feats, cam_index, point_index = parameters(3, 5, 7, 2)
    still = cam_index == 1
    reprojection, _ = ba.objective(cams, X, w, feats, cam_index, point_index)
    cams[1, :3] = 1e-300  # θ² underflows to 0: still the first-order branch, the same errors
    again, _ = ba.objective(cams, X, w, feats, cam_index, point_index)
    np.testing.assert_array_equal(again, reprojection)
    cams[1, :3] = [0.0, 0.0, 1e-3]  # a small rotation: the full formula, nearly the same errors elsewhere
    moved, _ = ba.objective(cams, X, w, feats, cam_index, point_index)
    assert np.all(moved[still] != reprojection[still]) and np.array_equal(moved[~still], reprojection[~still])
    np.testing.assert_allclose(moved[still], reprojection[still], rtol=1e-2)


@pytest.mark.parametrize("seed, batch", [(0, ba.BATCH), (1, ba.BATCH), (2, 3)])  # (batches of 3, 3 and 1)
def test_the_whole_sparse_jacobian_matches_jax_s_dense_one(seed, batch, monkeypatch):
    monkeypatch.setattr(ba, "BATCH", batch)  # (the second case reuses the first's tape: same shapes, new values)
    args = parameters(3, 5, 7, seed)
    cams, X, w, feats, cam_index, point_index = args
    rows, cols, vals = ba.jacobian_csr(*args)
    assert rows.dtype.kind == cols.dtype.kind == "i" and vals.dtype == np.float64
    assert rows.shape == (3 * 7 + 1,) and cols.shape == vals.shape == (31 * 7,)
    assert (rows.tolist(), cols.tolist()) == reference_structure(3, 5, cam_index, point_index)  # (in range)
    sparse = scipy.sparse.csr_matrix((vals, cols, rows), shape=(21, 33 + 15 + 7)).toarray()
    forward = dense_jacobian("fwd", *args)
    np.testing.assert_allclose(sparse, forward, rtol=RTOL, atol=0)
    np.testing.assert_allclose(sparse, dense_jacobian("rev", *args), rtol=RTOL, atol=0)
    # every stored entry is the matching entry of JAX's Jacobian, in the reference's order
    np.testing.assert_allclose(vals, forward[np.repeat(np.arange(21), np.diff(rows)), cols], rtol=RTOL, atol=0)
    np.testing.assert_array_equal(vals[-7:], -2.0 * w)
    block = vals[:30].reshape(2, 15)  # observation 0: camera 0, point 0, weight 0
    assert np.count_nonzero(block[:, :11]) >= 18 and np.all(block[:, 14] != 0)


def test_the_jacobian_blocks_match_central_differences_of_the_reference_s_scalar_code():
    """An independent witness of the derivatives (JAX differentiates the same code), at the still camera too,
    where the derivative in the rotation is the first-order branch's."""
    args = parameters(3, 5, 7, 6)
    cams, X, w, feats, cam_index, point_index = args
    _, _, vals = ba.jacobian_csr(*args)
    blocks = vals[: 7 * 30].reshape(7, 2, 15)
    for i, (c, k) in enumerate(zip(cam_index, point_index)):
        theta = np.concatenate([cams[c], X[k], w[i : i + 1]])
        differences = np.empty((2, 15))
        for j in range(15):
            h = 1e-6 * max(1.0, abs(theta[j]))
            up, down = theta.copy(), theta.copy()
            up[j] += h
            down[j] -= h
            plus = reference_residual(up[:11], up[11:14], up[14], feats[i])
            minus = reference_residual(down[:11], down[11:14], down[14], feats[i])
            differences[:, j] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(blocks[i], differences, rtol=1e-6, atol=1e-7 * np.abs(differences).max())
    assert np.any(cam_index == 1) and not np.any(cams[np.arange(3) != 1, :3] == 0)


def test_the_csr_structure_is_the_reference_s_insertion_order():
    n, m, p = 4, 6, 23
    i = np.arange(p)
    rows, cols = ba.csr_structure(n, m, i % n, i % m)
    expected_rows, expected_cols = reference_structure(n, m, i % n, i % m)
    assert rows.tolist() == expected_rows and cols.tolist() == expected_cols
    rows, cols, _ = ba.jacobian_csr(*parameters(n, m, p, 3))
    assert rows.tolist() == expected_rows and cols.tolist() == expected_cols


def evaluate(function, data):
    message = {"id": 7, "kind": "evaluate", "module": "ba", "function": function, "input": data}
    out: list[str] = []
    serve([json.dumps(message)], out.append, warm_seconds=0)
    (answer,) = [json.loads(line) for line in out]
    assert answer["id"] == 7
    return answer


def eval_input(n, m, p, seed, still=False):
    """One camera, point, weight and feature, as the eval sends them."""
    cams, X, w, feats, _, _ = parameters(1, 1, 1, seed, still_camera=0 if still else None)
    return {"n": n, "m": m, "p": p, "cam": cams[0].tolist(), "x": X[0].tolist(), "w": float(w[0]),
            "feat": feats[0].tolist(), "min_runs": 2, "min_seconds": 0}  # fmt: skip


@pytest.mark.parametrize("still", [False, True])
def test_the_outputs_through_the_protocol_are_the_reference_s_format(still):
    n, m, p = 3, 5, 12  # (3p + 1 = 37 row pointers: the first 30 and the last are reported)
    data = eval_input(n, m, p, 4, still)
    args = ba.expand(np.array(data["cam"]), np.array(data["x"]), data["w"], np.array(data["feat"]), n, m, p)
    objective = evaluate("objective", data)
    assert objective["success"] is True and len(objective["timings"]) == 3
    output = objective["output"]
    assert set(output) == {"reproj_error", "w_err"}
    assert set(output["reproj_error"]) == {"elements", "repeated"} and set(output["w_err"]) == {"element", "repeated"}
    assert type(output["reproj_error"]["repeated"]) is int and output["reproj_error"]["repeated"] == p
    assert type(output["w_err"]["repeated"]) is int and output["w_err"]["repeated"] == p
    expected = np.asarray(jax.jit(stacked_objective)(*args))
    np.testing.assert_allclose(output["reproj_error"]["elements"], expected[:2], rtol=RTOL)
    assert type(output["w_err"]["element"]) is float
    np.testing.assert_allclose(output["w_err"]["element"], expected[2 * p], rtol=RTOL)

    jacobian = evaluate("jacobian", data)
    assert jacobian["success"] is True
    output = jacobian["output"]
    assert set(output) == {"rows", "cols", "vals"} and all(len(v) == 31 for v in output.values())
    assert all(type(v) is int for v in output["rows"] + output["cols"])
    assert all(type(v) is float for v in output["vals"])
    rows, cols = reference_structure(n, m, *args[4:])
    assert output["rows"] == rows[:30] + rows[-1:] and output["cols"] == cols[:30] + cols[-1:]
    assert output["rows"][:3] == [0, 15, 30] and output["rows"][-1] == 31 * p
    dense = dense_jacobian("rev", *args)
    expected_vals = [dense[r, c] for r, c in ((0, c) for c in cols[:15])] + [dense[1, c] for c in cols[15:30]]
    np.testing.assert_allclose(output["vals"][:30], expected_vals, rtol=RTOL, atol=0)
    assert output["vals"][-1] == -2.0 * data["w"] == dense[-1, -1]


@pytest.mark.parametrize(
    "change, error",
    [
        ({"feat": None}, "no field 'feat'"),
        ({"cam": [1.0] * 10}, "field 'cam' should have shape (11,), got (10,)"),
        ({"x": [[1.0, 2.0, 3.0]]}, "field 'x'"),
        ({"w": "0.5"}, "field 'w' should be a finite number"),
        ({"w": [0.5]}, "field 'w'"),
        ({"p": 0}, "field 'p'"),
        ({"n": 2.5}, "field 'n'"),
    ],
)
def test_a_bad_input_is_answered_with_the_field_it_gets_wrong(change, error):
    data = eval_input(3, 5, 12, 5)
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    for function in ("objective", "jacobian"):
        answer = evaluate(function, data)
        assert answer["success"] is False and error in answer["error"], answer
