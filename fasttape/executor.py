"""The NumPy executor: a tape's sweeps run instruction by instruction with NumPy, nothing compiled.

It has the compiled sweeps' entry points (``run_forward``, ``run_value_and_grad``,
``run_reverse``, ``run_jvp``, ``run_hvp``, ``run_vector_reverse``), with their arguments
and their effect on the buffers, so ``fasttape.tiers`` can serve a call from here while
the compiled kernels are built.  Each instruction runs its family's NumPy rule
(``numpy_forward``, ``numpy_tangent``, ``numpy_reverse`` in ``fasttape.families``); the
elementwise ones evaluate the declarations' own formulas on arrays.  Where the compiled
sweeps assign a first write (``F_INIT``) and zero only some adjoints, this executor
zeroes every adjoint and accumulates, which gives the same numbers.

The entry points that follow an earlier forward sweep (``run_reverse``,
``run_vector_reverse``, ``run_hvp`` without values) recompute the values first: a
compiled forward over fused regions keeps only some of them.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .families import FAMILY_BY_OPCODE


def _guards_hold(aux, buf):
    start = aux[K.M_GUARDS]
    for g in range(aux[K.M_NGUARDS]):
        if (buf[aux[start + 2 * g]] != 0.0) != (aux[start + 2 * g + 1] != 0):
            return False
    return True


def _forward(rows, aux, buf):
    for i, row in enumerate(rows):
        try:
            FAMILY_BY_OPCODE[row[K.C_OP]].module.numpy_forward(row, aux, buf)
        except IndexError as e:  # an index read in the sweep: the instruction, as the compiled kernels name it
            raise IndexError(f"{e} (instruction {i})") from None


def _tangent(rows, aux, buf, T):
    """Tangents: T is (k, n_values), one row per direction."""
    for row in rows:
        if row[K.C_FLAGS] & K.F_ACTIVE:
            FAMILY_BY_OPCODE[row[K.C_OP]].module.numpy_tangent(row, aux, buf, T)


def _reverse(rows, aux, buf, G, G2=None, T=None):
    """Adjoints in reverse tape order.  G: first-order adjoints, shape (1, n_values), or None;
    G2: k rows of adjoints carried by the same (first-order) rules, or None; T: with G and G2,
    the tangents: G2 then gets the second-order terms (forward-over-reverse)."""
    for row in reversed(rows):
        if row[K.C_FLAGS] & K.F_ACTIVE:
            FAMILY_BY_OPCODE[row[K.C_OP]].module.numpy_reverse(row, aux, buf, G, G2, T)


# --------------------------------------------------------------------------
# entry points: as in fasttape.sweeps
# --------------------------------------------------------------------------
def run_forward(ins, code, aux, buf, fused):
    with np.errstate(all="ignore"):
        _forward(ins.tolist(), aux, buf)
    return _guards_hold(aux, buf)


def run_value_and_grad(ins, code, aux, buf, out, fused):
    rows = ins.tolist()
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if not _guards_hold(aux, buf):
            return False
        buf[N:] = 0.0
        buf[N + out] = 1.0
        _reverse(rows, aux, buf, buf[N:].reshape(1, N))
    return True


def run_reverse(ins, code, aux, buf):
    rows = ins.tolist()
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)  # every value (a compiled forward keeps only some in fused regions)
        _reverse(rows, aux, buf, buf[N:].reshape(1, N))


def run_jvp(ins, code, aux, buf, tan, k):
    rows = ins.tolist()
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if not _guards_hold(aux, buf):
            return False
        _tangent(rows, aux, buf, tan.reshape(k, -1))
    return True


def run_hvp(ins, code, aux, buf, tan, adj2, k, out, with_values):
    rows = ins.tolist()
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if with_values and not _guards_hold(aux, buf):
            return False
        T = tan.reshape(k, N)
        _tangent(rows, aux, buf, T)
        buf[N:] = 0.0
        adj2[:] = 0.0
        buf[N + out] = 1.0
        _reverse(rows, aux, buf, buf[N:].reshape(1, N), adj2.reshape(k, N), T)
    return True


def run_vector_reverse(ins, code, aux, buf, adj2, k):
    rows = ins.tolist()
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        _reverse(rows, aux, buf, None, adj2.reshape(k, -1))
