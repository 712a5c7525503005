"""GradBench's ``ht`` (hand tracking, from ADBench): a skinned hand model posed by 26 parameters θ, and the
errors between observed points and the hand's surface.

θ is the global rotation (angle-axis, 3), the global translation (3), then four angles of each of the five
fingers.  They pose the bones: each bone's relative transform is its base transform times a rotation of Euler
angles, the parent chain makes them absolute, and each vertex is moved by the blend of its bones' transforms
(linear blend skinning), then rotated and translated globally.  ``objective`` is the 3·n errors
``points[i] − hand point i``, where hand point i is vertex ``correspondences[i]`` (the simple variant, ``us``
empty) or the point at barycentric coordinates (u0, u1, 1 − u0 − u1) of triangle ``correspondences[i]`` (the
complicated variant, ``us`` n×2).  ``jacobian`` is its 3·n rows: 26 columns ∂/∂θ, preceded in the complicated
variant by two columns holding each row's derivative in its own point's (u0, u1) (the only u it depends on).

The derivatives are forward mode, traced once per input and replayed by every run: the 26 θ columns by
``ft.jacfwd`` (blocks of unit tangents), the two us columns by one ``ft.jvp`` of two directions that move every
u0 (every u1) at once, which gives every row its own ∂/∂u0 (∂/∂u1) since point i's error depends on us[i] alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import fasttape as ft

from .inputs import count, field, shaped

N_THETA = 26
FINGERS = 5
FIRST_FINGER_BONE = 2  # bones 0 and 1 (wrist, forearm) are not posed; each finger is 4 bones, the last not posed


def _pose_index(bones: int) -> np.ndarray:
    """(bones, 3) positions in θ (``N_THETA`` meaning a zero angle) of each bone's Euler angles, as the reference
    lays them out: per finger, two angles of its first bone and one of each of the next two."""
    index = np.full((bones, 3), N_THETA)
    i = 6
    for finger in range(FINGERS):
        first = FIRST_FINGER_BONE + 4 * finger
        for bone in range(first, first + 3):
            index[bone, 0] = i
            i += 1
            if bone == first:
                index[bone, 1] = i
                i += 1
    return index


@dataclass(frozen=True)
class HandModel:
    parents: tuple[int, ...]  # each bone's parent, earlier in the order (-1: a root)
    base_relatives: np.ndarray  # (bones, 4, 4), row-major
    inverse_base_absolutes: np.ndarray  # (bones, 4, 4), row-major
    base_positions: np.ndarray  # (vertices, 4), homogeneous
    weights: np.ndarray  # (vertices, bones)
    triangles: np.ndarray  # (triangles, 3) vertex indices
    is_mirrored: bool


def _rotations_x_y_z(angles, xp):
    """R_z R_y R_x of each row's Euler angles (stored x, z, y, as the reference reads them), stacked."""
    tx, tz, ty = angles[:, 0], angles[:, 1], angles[:, 2]
    one, zero = xp.ones_like(tx), xp.zeros_like(tx)

    def matrices(*rows):
        return xp.stack([xp.stack(row, axis=-1) for row in rows], axis=-2)

    cx, sx, cy, sy, cz, sz = xp.cos(tx), xp.sin(tx), xp.cos(ty), xp.sin(ty), xp.cos(tz), xp.sin(tz)
    rx = matrices((one, zero, zero), (zero, cx, -sx), (zero, sx, cx))
    ry = matrices((cy, zero, sy), (zero, one, zero), (-sy, zero, cy))
    rz = matrices((cz, -sz, zero), (sz, cz, zero), (zero, zero, one))
    return rz @ ry @ rx


def _angle_axis_rotation(r, xp):
    """Rodrigues' rotation of the angle-axis vector r (the identity below an angle of 1e-4, as the reference)."""
    angle = xp.sqrt(xp.sum(r * r))
    small = angle < 1e-4
    x, y, z = r / xp.where(small, 1.0, angle)
    c, s = xp.cos(angle), xp.sin(angle)
    k = xp.stack([x, y, z])
    zero = xp.zeros_like(x)
    cross = xp.stack([xp.stack([zero, -z, y]), xp.stack([z, zero, -x]), xp.stack([-y, x, zero])])
    rotation = c * xp.eye(3) + (1.0 - c) * (k[:, None] * k[None, :]) + s * cross
    return xp.where(small, xp.eye(3), rotation)


def skinned_vertices(theta, model: HandModel, xp=np):
    """The (vertices, 3) posed hand."""
    bones = len(model.parents)
    angles = xp.concatenate([theta, xp.zeros(1)])[_pose_index(bones)]  # (bones, 3)
    rotations = _rotations_x_y_z(angles, xp)
    base = model.base_relatives
    relatives = xp.concatenate([base[:, :, :3] @ rotations, base[:, :, 3:]], axis=2)  # base · [[R, 0], [0, 1]]
    absolutes = []
    for bone, parent in enumerate(model.parents):
        absolutes.append(relatives[bone] if parent < 0 else absolutes[parent] @ relatives[bone])
    transforms = xp.stack(absolutes) @ model.inverse_base_absolutes  # (bones, 4, 4)
    blended = (model.weights @ transforms[:, :3, :].reshape(bones, 12)).reshape(-1, 3, 4)  # per vertex
    positions = xp.sum(blended * model.base_positions[:, None, :], axis=2)
    if model.is_mirrored:
        positions = positions * np.array([-1.0, 1.0, 1.0])
    # (the reference scales the global rotation's columns by a pose column of ones: nothing to do)
    return positions @ _angle_axis_rotation(theta[:3], xp).T + theta[3:6]


def errors(theta, us, model: HandModel, correspondences, points, xp=np):
    """The 3·n errors, point by point; ``us`` None in the simple variant."""
    vertices = skinned_vertices(theta, model, xp)
    if us is None:
        hand = vertices[correspondences]
    else:
        a, b, c = model.triangles[correspondences].T  # each point's triangle's corners
        u0, u1 = us[:, :1], us[:, 1:]
        hand = u0 * vertices[a] + u1 * vertices[b] + (1.0 - u0 - u1) * vertices[c]
    return (points - hand).reshape(-1)


def jacobian(theta, us, model: HandModel, correspondences, points):
    """``run()`` of the (3n, 2 + 26) Jacobian (26 columns when ``us`` is None), traced on its first call (the
    model, correspondences and points are constants of the tapes): the θ columns by ``ft.jacfwd`` (us an input
    that is not differentiated), the two us columns by one ``ft.jvp`` of two directions, all of u0 and all of u1
    (θ still: a zero tangent), which gives every row its own ∂/∂u0 and ∂/∂u1."""
    if us is None:

        def of_theta(theta_):
            return errors(theta_, None, model, correspondences, points)

        return functools.partial(ft.jacfwd(of_theta), theta)

    def of_theta_and_us(theta_, us_):
        return errors(theta_, us_, model, correspondences, points)

    theta_columns = ft.jacfwd(of_theta_and_us)  # argnums=0
    still = np.zeros((N_THETA, 2))
    every_u = np.zeros(us.shape + (2,))
    every_u[:, 0, 0] = every_u[:, 1, 1] = 1.0

    def run():
        _, us_columns = ft.jvp(of_theta_and_us, (theta, us), (still, every_u))
        return np.concatenate([us_columns, theta_columns(theta, us)], axis=1)

    return run


# ------------------------------------------------------------------------------------------------------------
# The input, read into arrays (untimed): each check names its field
# ------------------------------------------------------------------------------------------------------------
def _indices(data, name: str, ndim: int, below: int, least: int = 0) -> np.ndarray:
    """A field of integers in [least, below), ``ndim``-deep, non-empty."""
    value = field(data, name)
    try:
        result = np.array(value)
    except ValueError as e:
        raise ValueError(f"field {name!r} should be a {ndim}-d list of integers ({e})") from None
    if result.ndim != ndim or result.size == 0 or result.dtype.kind not in "iu":
        raise ValueError(f"field {name!r} should be a non-empty {ndim}-d list of integers, got {value!r:.80}")
    if result.min() < least or result.max() >= below:
        raise ValueError(f"field {name!r} holds an index outside [{least}, {below})")
    return result.astype(np.int64)


def read_model(data) -> HandModel:
    bones = count(data, "bone_count", least=FIRST_FINGER_BONE + 4 * FINGERS)
    names = field(data, "bone_names")
    if not isinstance(names, list) or len(names) != bones or not all(isinstance(s, str) for s in names):
        raise ValueError(f"field 'bone_names' should be a list of {bones} strings (bone_count)")
    parents = _indices(data, "parents", 1, below=bones, least=-1)
    if parents.size != bones or np.any(parents >= np.arange(bones)):
        raise ValueError(f"field 'parents' should list {bones} bones' parents, each earlier than its bone (or -1)")
    base_positions = shaped(data, "base_positions", (None, 4))
    vertices = base_positions.shape[0]
    mirrored = field(data, "is_mirrored")
    if not isinstance(mirrored, bool):
        raise ValueError(f"field 'is_mirrored' should be true or false, got {mirrored!r}")
    triangles = _indices(data, "triangles", 2, below=vertices)
    if triangles.shape[1] != 3:
        raise ValueError(f"field 'triangles' should list 3 vertices per triangle, got {triangles.shape[1]}")
    return HandModel(
        parents=tuple(int(p) for p in parents),
        base_relatives=shaped(data, "base_relatives", (bones, 4, 4)),
        inverse_base_absolutes=shaped(data, "inverse_base_absolutes", (bones, 4, 4)),
        base_positions=base_positions,
        weights=shaped(data, "weights", (vertices, bones)),
        triangles=triangles,
        is_mirrored=mirrored,
    )


def read_input(data):
    """(θ, us or None, model, correspondences, points) of an ``HTInput``."""
    theta = shaped(data, "theta", (N_THETA,))
    hand = field(data, "data")
    model = read_model(field(hand, "model"))
    points = shaped(hand, "points", (None, 3))
    n = points.shape[0]
    us = None if field(data, "us") == [] else shaped(data, "us", (n, 2))
    below = model.base_positions.shape[0] if us is None else model.triangles.shape[0]
    correspondences = _indices(hand, "correspondences", 1, below=below)
    if correspondences.size != n:
        raise ValueError(f"field 'correspondences' should hold one index per point ({n}), got {correspondences.size}")
    return theta, us, model, correspondences, points


def _objective(data):
    theta, us, model, correspondences, points = read_input(data)
    return lambda: errors(theta, us, model, correspondences, points)


def _jacobian(data):
    return jacobian(*read_input(data))


FUNCTIONS = {"objective": _objective, "jacobian": _jacobian}
