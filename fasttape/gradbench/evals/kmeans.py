"""GradBench's ``kmeans``: ``cost`` Σ_i min_j ‖C_j − P_i‖², and ``dir``, the Newton direction J ⊘ diag(H) of
the cost in the centroids C (J its gradient; its Hessian is diagonal, so diag(H) = H·1: J and H·1 from one
``ft.value_grad_and_hvp``)."""

import numpy as np

import fasttape as ft

from .inputs import array
from .replay import replayed


def cost(C, P, xp=np):
    d = xp.sum((P[:, None, :] - C[None]) ** 2, axis=-1)
    return xp.sum(d[xp.arange(P.shape[0]), xp.argmin(d, axis=1)])


def direction(C, P):
    """``run()`` of J ⊘ diag(H) at these centroids and points: each centroid minus the mean of its points (the
    reference's closed form), from one sweep of ``ft.value_grad_and_hvp`` (the points a constant of its tape)."""
    ones = np.ones_like(C)

    def centroid_cost(C_):
        return cost(C_, P)

    def run():
        _, J, curvature = ft.value_grad_and_hvp(centroid_cost, (C,), (ones,))
        return J / curvature

    return run


def _arrays(data):
    P, C = array(data, "points", ndim=2), array(data, "centroids", ndim=2)
    if P.shape[1] != C.shape[1]:
        raise ValueError(f"points are {P.shape[1]}-d and centroids {C.shape[1]}-d: they should be alike")
    return C, P


def _cost(data):
    return replayed(cost, *_arrays(data))


def _dir(data):
    return direction(*_arrays(data))


FUNCTIONS = {"cost": _cost, "dir": _dir}
