"""GradBench's ``det``: the determinant of an ℓ x ℓ matrix by expansion by minors (``primal``) and its gradient
in the matrix (``gradient``), both flat and row-major.

The reference recurses: a minor's determinant is Σ_j (−1)^j M[0, j] det(minor of M without row 0 and column
j), down to 1 x 1 minors; ℓ! products in all.  Here the same recursion runs one level at a time, each level
vectorised over all of its minors: the minors that use rows i.. are indexed by the prefix of columns taken
by rows 0..i−1 (in the recursion's order), so a level is one gather of signed matrix entries, one product
with the level below and one sum over each minor's columns.  The work is the reference's (every minor of
every level computed, none shared), in a handful of array operations instead of ℓ! scalar ones; the
gathers' indices depend on ℓ alone: made by the first call for an ℓ (timed with it), then cached.
"""

import functools

import numpy as np

import fasttape as ft

from .inputs import count, vector
from .replay import replayed


@functools.lru_cache(maxsize=1)
def expansion_plan(ell: int) -> tuple[np.ndarray, ...]:
    """For each row i, where the level-i minors' signed entries are read from in ``[A.ravel(), −A.ravel()]``:
    minor p (a prefix of i columns, taken in the recursion's order) expands along its remaining columns
    c_0 < c_1 < …, reading A[i, c_j] with the sign (−1)^j; its j-th sub-minor is minor p·(ℓ−i) + j of level
    i+1.  One flat index array per level, of ℓ!/(ℓ−i−1)! entries."""
    remaining = np.arange(ell)[None, :]  # one row per minor: its columns, ascending
    plan = []
    for row in range(ell):
        width = ell - row
        signs = np.arange(width) % 2  # (−1)^j: read from the negated copy
        plan.append((row * ell + remaining + ell * ell * signs).ravel())
        if width > 1:
            keep = np.array([[c for c in range(width) if c != j] for j in range(width)])
            remaining = remaining[:, keep].reshape(-1, width - 1)
    return tuple(plan)


def det_by_minors(A, plan, xp=np):
    """det of the matrix whose row-major entries are ``A``, expanded by minors level by level (``plan``:
    ``expansion_plan(ℓ)``)."""
    signed = xp.concatenate([A, -A])
    minors = signed[plan[-1]]  # the 1 x 1 minors: their entry
    ell = len(plan)
    for row in reversed(range(ell - 1)):
        factors = xp.reshape(signed[plan[row]], (-1, ell - row))  # one row per minor of this level
        minors = xp.sum(factors * xp.reshape(minors, factors.shape), axis=1)
    return minors[0]


_gradient = ft.grad(det_by_minors)


def determinant(A, ell):
    """det by minors of the ℓ x ℓ matrix of row-major entries ``A``."""
    return det_by_minors(A, expansion_plan(ell))


def _arrays(data):
    A, ell = vector(data, "A"), count(data, "ell")
    if A.shape[0] != ell * ell:
        raise ValueError(f"field 'A' should hold ell² = {ell * ell} numbers (row-major), got {A.shape[0]}")
    return A, ell


def _primal(data):
    return replayed(determinant, *_arrays(data))


def _gradient_of(data):
    A, ell = _arrays(data)
    return lambda: _gradient(A, expansion_plan(ell))  # (the plan: made by the first call, then cached)


FUNCTIONS = {"primal": _primal, "gradient": _gradient_of}
