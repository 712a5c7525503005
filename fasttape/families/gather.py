"""The gather family: data movement through absolute buffer positions (indexing, slicing
with steps, transposes, concatenation).

The positions live in aux's index pool (``start``, ``count``); the reverse is a
scatter-add, so a gather never assigns a first write (``SCATTERS``).
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import C_N, C_OUT, HEADER, param_columns
from ..loops import zero_first_writes

KINDS = ("gather",)
PARAMS = ("start", "count")
P_START, P_COUNT = param_columns(PARAMS)
SCATTERS = True


@jit
def forward(ins, i, aux, buf):
    o = ins[i, C_OUT]
    start = ins[i, P_START]
    for j in range(ins[i, C_N]):
        buf[o + j] = buf[aux[start + j]]


@jit
def reverse(ins, i, aux, buf, N):
    o = ins[i, C_OUT]
    start = ins[i, P_START]
    for j in range(ins[i, C_N]):  # adjoint of a gather: scatter-add
        buf[N + aux[start + j]] += buf[N + o + j]


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    o = ins[i, C_OUT]
    start = ins[i, P_START]
    for d in range(k):
        t = tan[d * NV : (d + 1) * NV]
        for j in range(ins[i, C_N]):
            t[o + j] = t[aux[start + j]]


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    o = ins[i, C_OUT]
    start = ins[i, P_START]
    for d in range(-1 if second else 0, k):  # linear: the scatter-add on every adjoint
        t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
        for j in range(ins[i, C_N]):
            t[aux[start + j]] += t[o + j]


def numpy_forward(row, aux, buf):
    o, n = row[C_OUT], row[C_N]
    start = row[P_START]
    buf[o : o + n] = buf[aux[start : start + n]]


def numpy_tangent(row, aux, buf, T):
    o, n = row[C_OUT], row[C_N]
    start = row[P_START]
    T[:, o : o + n] = T[:, aux[start : start + n]]


def numpy_reverse(row, aux, buf, G, G2, T):
    o, n = row[C_OUT], row[C_N]
    start = row[P_START]
    index = aux[start : start + n]
    for A in (G, G2):
        if A is None:
            continue
        g = A[:, o : o + n].copy()
        for r in range(A.shape[0]):  # scatter-add
            np.add.at(A[r], index, g[r])


# The sweeps above as moves of contiguous runs (fasttape.gather_copies writes them out where a row's
# positions form a few runs): per sweep, each array it moves and how -- "copy" (out <- in: the values, a
# tangent) or "scatter" (in += out: the adjoints, both orders forward-over-reverse).  Arrays:
# "value" buf[p], "adjoint" buf[N + p], "tangent" tan[p], "adjoint2" adj2[p].
AS_RUNS = {
    "forward": (("value", "copy"),),
    "tangent": (("tangent", "copy"),),
    "reverse": (("adjoint", "scatter"),),
    "second": (("adjoint", "scatter"), ("adjoint2", "scatter")),
}


def positions(ins, rows, aux):
    """The buffer positions each of ``rows`` copies, one row of positions per row (they have one size)."""
    starts = ins[rows, P_START].astype(np.int64)
    return np.asarray(aux, dtype=np.int64)[starts[:, None] + np.arange(ins[rows[0], C_N])]


def side_size(prim, params):
    return 0


def validate(prim, row, n_values, pool_end):
    n = row[C_N]
    start, count, p2, p3 = row[P_START : P_START + 4]
    if p2 or p3 or count != n:
        return f"bad parameters {(start, count, p2, p3)} for an output of size {n}"
    if start < HEADER or start + count > pool_end:
        return f"indices [{start}, {start + count}) outside the index pool [{HEADER}, {pool_end})"
    return None


def describe(prim, params):
    return ""


def jax_call(jnp, fn, operands, params, index):
    return fn(jnp.concatenate(operands), index)
