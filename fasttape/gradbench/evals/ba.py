"""GradBench's ``ba`` (bundle adjustment, from ADBench): ``objective``, the reprojection errors of p observations
of m points by n cameras and the weight errors 1 − w², and ``jacobian``, their sparse Jacobian in the parameters
(cameras, points, weights), in the reference's CSR layout (``SparseMat`` of ba.hpp).

The input is one camera, one point, one weight and one feature, each repeated (cams n×11, X m×3, w p, feats p×2)
with observation i = (camera i % n, point i % m); every run computes all p observations and the whole Jacobian,
though only its first 30 entries and its last are reported.  The model is written once, vectorised over the
observations with one observation per column (cams 11×p: ``cams[6]`` is every focal length), for ``xp`` NumPy or
``jax.numpy``.  Each observation's residual depends on its own camera, point and weight alone, so its 2×15 block
is the gradient of its two components in its own (gathered) parameters: for each batch of observations, the VJPs
with cotangent 1 in component 0 of every observation, then in component 1, each the gradient of the errors'
product with the cotangent (``ft.grad``); the weight errors' derivatives by ``ft.vjp``.
"""

import numpy as np

import fasttape as ft

from .inputs import count, number, shaped

CAMERA = 11  # [r1 r2 r3 (Rodrigues), C1 C2 C3 (centre), f, u0 v0 (principal point), k1 k2 (radial distortion)]
BLOCK = CAMERA + 3 + 1  # the nonzeros of a reprojection-error row: its camera's, its point's, its weight
REPORTED = 2 * BLOCK  # the reference reports the first 30 entries of rows, cols and vals, and the last


def cross(a, b, xp=np):
    """a × b, for 3-vectors along axis 0 (``np.cross(a, b, axis=0)``, which fasttape does not record)."""
    return xp.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def rodrigues_rotate(rot, X, xp=np):
    """The points X (3, p) rotated by the angle-axis vectors rot (3, p), column by column; where θ² = |rot|² is
    0, the first-order rotation X + rot × X, as the reference (θ is then taken as 1 so that the other branch,
    unused there, stays finite along with its derivatives)."""
    sqtheta = xp.sum(rot * rot, axis=0)
    rotating = sqtheta != 0
    theta = xp.sqrt(xp.where(rotating, sqtheta, 1.0))
    axis = rot / theta
    cos, sin = xp.cos(theta), xp.sin(theta)
    along = xp.sum(axis * X, axis=0) * (1.0 - cos)
    rotated = X * cos + cross(axis, X, xp) * sin + axis * along
    return xp.where(rotating, rotated, X + cross(rot, X, xp))


def project(cams, X, xp=np):
    """The projections (2, p) of the points X (3, p) by the cameras cams (11, p), column by column."""
    Xcam = rodrigues_rotate(cams[0:3], X - cams[3:6], xp)
    proj = Xcam[0:2] / Xcam[2]
    rsq = xp.sum(proj * proj, axis=0)
    distortion = 1.0 + cams[9] * rsq + cams[10] * rsq * rsq
    return proj * distortion * cams[6] + cams[7:9]


def reprojection_errors(cams, X, w, feats, xp=np):
    """w_i (proj_i − feat_i), (2, p), of the observations' own cameras (11, p), points (3, p), weights (p) and
    features (2, p): one observation per column."""
    return w * (project(cams, X, xp) - feats)


def weight_errors(w):
    """1 − w², each weight's regularisation error."""
    return 1.0 - w * w


def observed(cams, X, feats, cam_index, point_index, xp=np):
    """Each observation's camera (11, p), point (3, p) and feature (2, p), one observation per column, from the
    cameras (n, 11), points (m, 3) and features (p, 2)."""
    return xp.take(cams.T, cam_index, axis=1), xp.take(X.T, point_index, axis=1), feats.T


def objective(cams, X, w, feats, cam_index, point_index, xp=np):
    """The reprojection errors (p, 2) and weight errors (p) of the observations (cams[cam_index[i]],
    X[point_index[i]], w[i], feats[i])."""
    cams_i, X_i, feats_i = observed(cams, X, feats, cam_index, point_index, xp)
    return reprojection_errors(cams_i, X_i, w, feats_i, xp).T, weight_errors(w)


def expand(cam, x, w, feat, n: int, m: int, p: int):
    """The eval's parameters from one of each: cams (n, 11), X (m, 3), w (p), feats (p, 2), and the observations'
    camera and point indices (i % n, i % m)."""
    i = np.arange(p)
    return (np.tile(cam, (n, 1)), np.tile(x, (m, 1)), np.full(p, w), np.tile(feat, (p, 1)), i % n, i % m)


def csr_structure(n: int, m: int, cam_index, point_index, index_type=np.int32):
    """The row pointers (3p + 1) and column indices (31p) of the Jacobian, (11n + 3m + p) columns: for each
    observation i two rows of its 11 camera columns, 3 point columns and its weight's column; then one row per
    weight error, holding its weight's column (the reference's ``SparseMat``)."""
    p = cam_index.size
    rows = np.empty(3 * p + 1, index_type)
    rows[: 2 * p + 1] = BLOCK * np.arange(2 * p + 1)
    rows[2 * p + 1 :] = 2 * p * BLOCK + np.arange(1, p + 1)
    cols = np.empty(2 * p * BLOCK + p, index_type)
    blocks = cols[: 2 * p * BLOCK].reshape(p, 2, BLOCK)
    blocks[:, :, :CAMERA] = (CAMERA * cam_index)[:, None, None] + np.arange(CAMERA)
    blocks[:, :, CAMERA : CAMERA + 3] = (CAMERA * n + 3 * point_index)[:, None, None] + np.arange(3)
    weight_columns = CAMERA * n + 3 * m + np.arange(p)
    blocks[:, :, CAMERA + 3] = weight_columns[:, None]
    cols[2 * p * BLOCK :] = weight_columns
    return rows, cols


def cotangent_product(cams, X, w, feats, cotangent):
    """⟨cotangent, reprojection errors⟩ (cotangent (2, p)): its gradient in (cams, X, w) is the errors' VJP."""
    return np.sum(cotangent * reprojection_errors(cams, X, w, feats))


_pull_back = ft.grad(cotangent_product, argnums=(0, 1, 2))  # (the cotangent an input of the tape, not a constant)

BATCH = 2048  # observations per gradient: a tape of about 2 KB per observation, whose buffers stay in cache


def jacobian_csr(cams, X, w, feats, cam_index, point_index):
    """The whole Jacobian as CSR arrays ``(rows, cols, vals)``, in the reference's order: the reprojection
    errors' rows (row 2i, then row 2i + 1, of observation i: 11 camera, 3 point and 1 weight entries each),
    then the weight errors' (one entry each).  For each batch of ``BATCH`` observations (one tape for that many,
    one for the last batch's), the VJPs of the reprojection errors with cotangent 1 in component 0 of every
    observation, then in component 1, as gradients of ⟨cotangent, errors⟩ (``ft.grad``: the tape's own compiled
    kernels once it is hot)."""
    n, m, p = cams.shape[0], X.shape[0], w.shape[0]
    index_type = np.int32 if CAMERA * n + 3 * m + p < 2**31 and 2 * p * BLOCK + p < 2**31 else np.int64
    rows, cols = csr_structure(n, m, cam_index, point_index, index_type)
    cams_i, X_i, feats_i = observed(cams, X, feats, cam_index, point_index)
    vals = np.empty(2 * p * BLOCK + p)
    blocks = vals[: 2 * p * BLOCK].reshape(p, 2, BLOCK)
    units = np.zeros((2, 2, min(BATCH, p)))  # units[c]: 1 in component c of every observation
    units[0, 0] = units[1, 1] = 1.0
    for start in range(0, p, BATCH):
        batch = slice(start, min(start + BATCH, p))
        args = (cams_i[:, batch], X_i[:, batch], w[batch], feats_i[:, batch])
        for component in range(2):
            d_cams, d_X, d_w = _pull_back(*args, units[component, :, : batch.stop - batch.start])
            observation = blocks[batch, component]
            observation[:, :CAMERA] = d_cams.T
            observation[:, CAMERA : CAMERA + 3] = d_X.T
            observation[:, CAMERA + 3] = d_w
    _, pull_back = ft.vjp(weight_errors, w)
    (vals[2 * p * BLOCK :],) = pull_back(np.ones(p))
    return rows, cols, vals


def _arrays(data):
    """The expanded parameters of an input (see :func:`expand`)."""
    n, m, p = count(data, "n"), count(data, "m"), count(data, "p")
    cam, x, feat = shaped(data, "cam", (CAMERA,)), shaped(data, "x", (3,)), shaped(data, "feat", (2,))
    return expand(cam, x, number(data, "w"), feat, n, m, p)


def _objective(data):
    arrays = _arrays(data)

    def run():
        reprojection, weight = objective(*arrays)
        p = weight.size
        return {
            "reproj_error": {"elements": reprojection[0], "repeated": p},
            "w_err": {"element": weight[0], "repeated": p},
        }

    return run


def _jacobian(data):
    arrays = _arrays(data)

    def run():  # (for p < 10 the 3p + 1 row pointers are fewer than 30, which the reference reads past: all go)
        csr = dict(zip(("rows", "cols", "vals"), jacobian_csr(*arrays)))
        return {name: np.concatenate([a[:REPORTED], a[-1:]]) for name, a in csr.items()}

    return run


FUNCTIONS = {"objective": _objective, "jacobian": _jacobian}
