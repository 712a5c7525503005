"""``numpy.linalg`` on traced arrays: ``solve``, ``inv``, ``slogdet`` and ``det``.

Each lowers onto the linalg family's primitives (``fasttape.families.linalg``): ``solve``
(``inv`` is the solve against the identity) and ``slogdet`` (``det`` is sign·exp(log|det|)).
Shapes follow NumPy 2: matrices (..., n, n) with broadcast batch axes; ``solve``'s right-hand
side is a vector only when it is 1-D.  NumPy itself computes each value first, so a wrong
shape or a singular matrix raises NumPy's own error, with NumPy's message, at trace time.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from . import numpy as fnp
from .tracer import concrete, recorder_of


def _empty(value):
    """An empty result has no derivative: it is recorded as the constant NumPy computed."""
    return np.asarray(value, dtype=np.float64)


def solve(a, b):
    """``numpy.linalg.solve``: X with A X = B, by the LU factors of A (computed once per call)."""
    rec = recorder_of((a, b))
    if rec is None:
        return np.linalg.solve(a, b)
    fnp._check_complex((a, b))
    value = np.linalg.solve(fnp._float(a), fnp._float(b))  # NumPy's shape errors and LinAlgError
    if value.size == 0:
        return _empty(value)
    vector = np.ndim(concrete(b)) == 1
    rhs = fnp.reshape(b, (-1, 1)) if vector else b
    n, m = np.shape(concrete(a))[-1], np.shape(concrete(rhs))[-1]
    batch = value.shape[:-1] if vector else value.shape[:-2]
    out = rec.linalg(K.OP_SOLVE, (a, rhs), value.reshape(batch + (n, m)), m=m)
    return fnp.reshape(out, value.shape)


def inv(a):
    """``numpy.linalg.inv``: the solve against the identity."""
    if recorder_of((a,)) is None:
        return np.linalg.inv(a)
    value = np.linalg.inv(fnp._float(a))
    if value.size == 0:
        return _empty(value)
    n = value.shape[-1]
    return solve(a, np.broadcast_to(np.eye(n), value.shape))


def slogdet(a):
    """``numpy.linalg.slogdet``: (sign, log|det A|); the sign's derivative is 0."""
    rec = recorder_of((a,))
    if rec is None:
        return np.linalg.slogdet(a)
    fnp._check_complex((a,))
    sign, logabs = np.linalg.slogdet(fnp._float(a))
    result = type(np.linalg.slogdet(np.eye(1)))
    if np.shape(concrete(a))[-1] == 0:
        return result(_empty(sign), _empty(logabs))
    pairs = rec.linalg(K.OP_SLOGDET, (a,), np.stack([sign, logabs], axis=-1).reshape(-1, 2))
    shape = np.shape(sign)
    return result(fnp.reshape(pairs[:, 0], shape), fnp.reshape(pairs[:, 1], shape))


def det(a):
    """``numpy.linalg.det``: sign · exp(log|det A|)."""
    if recorder_of((a,)) is None:
        return np.linalg.det(a)
    sign, logabs = slogdet(a)
    return sign * fnp.exp(logabs)


FUNCTIONS = {np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.slogdet: slogdet, np.linalg.det: det}
fnp.FUNCTIONS.update(FUNCTIONS)
