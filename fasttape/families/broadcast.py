"""The broadcast family: explicit broadcasting, undone in the reverse sweep by summing.

The operand is (pre, post), the output (pre, r, post): each block of ``post`` values is
repeated r times.  The adjoint of a block is the sum of its r copies' adjoints (autograd's
"unbroadcast").
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import C_A, C_FLAGS, C_N, C_NA, C_OUT, F_INIT_A, param_columns
from ..loops import sum_contiguous, zero_first_writes
from . import reductions

KINDS = ("broadcast",)
PARAMS = ("pre", "r", "post")
P_PRE, P_R, P_POST = param_columns(PARAMS)


@jit
def broadcast_forward(t, o, a, pre, r, post):
    """Each of the ``pre`` blocks of ``post`` values repeated ``r`` times (slices indexed from zero, so
    the copies vectorise); values or tangents alike."""
    for p in range(pre):
        if post == 1:
            z = t[o + p * r : o + (p + 1) * r]
            v = t[a + p]
            for k in range(r):
                z[k] = v
            continue
        x = t[a + p * post : a + (p + 1) * post]
        for k in range(r):
            z = t[o + (p * r + k) * post : o + (p * r + k + 1) * post]
            for q in range(post):
                z[q] = x[q]


@jit
def unbroadcast(t, o, a, pre, r, post, init):
    """Adjoints ``t`` (a value-sized array): the adjoint of each broadcast block is the sum of its ``r``
    copies' adjoints.  ``init``: the block's adjoint is written, not added to."""
    for p in range(pre):
        if post == 1:
            s = sum_contiguous(t, o + p * r, r)
            t[a + p] = s if init else t[a + p] + s
            continue
        dx = t[a + p * post : a + (p + 1) * post]
        for k in range(r):
            g = t[o + (p * r + k) * post : o + (p * r + k + 1) * post]
            if init and k == 0:
                for q in range(post):
                    dx[q] = g[q]
            else:
                for q in range(post):
                    dx[q] += g[q]


@jit
def forward(ins, i, aux, buf):
    broadcast_forward(buf, ins[i, C_OUT], ins[i, C_A], ins[i, P_PRE], ins[i, P_R], ins[i, P_POST])


@jit
def reverse(ins, i, aux, buf, N):
    init = (ins[i, C_FLAGS] & F_INIT_A) != 0
    unbroadcast(buf[N:], ins[i, C_OUT], ins[i, C_A], ins[i, P_PRE], ins[i, P_R], ins[i, P_POST], init)


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    for d in range(k):
        broadcast_forward(tan[d * NV : (d + 1) * NV], ins[i, C_OUT], ins[i, C_A], ins[i, P_PRE], ins[i, P_R],
                          ins[i, P_POST])  # fmt: skip


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    for d in range(-1 if second else 0, k):  # linear: the first-order rule on every adjoint
        t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
        unbroadcast(t, ins[i, C_OUT], ins[i, C_A], ins[i, P_PRE], ins[i, P_R], ins[i, P_POST], False)


def numpy_forward(row, aux, buf):
    _, o, n, a, na = row[:5]
    pre, r, post = row[P_PRE : P_POST + 1]
    buf[o : o + n] = np.broadcast_to(buf[a : a + na].reshape(pre, 1, post), (pre, r, post)).reshape(-1)


def numpy_tangent(row, aux, buf, T):
    _, o, n, a, na = row[:5]
    pre, r, post = row[P_PRE : P_POST + 1]
    k = T.shape[0]
    T[:, o : o + n] = np.broadcast_to(T[:, a : a + na].reshape(k, pre, 1, post), (k, pre, r, post)).reshape(k, n)


def numpy_reverse(row, aux, buf, G, G2, T):
    _, o, n, a, na = row[:5]
    pre, r, post = row[P_PRE : P_POST + 1]
    for A in (G, G2):
        if A is not None:  # unbroadcast: sum the copies
            A[:, a : a + na] += A[:, o : o + n].reshape(A.shape[0], pre, r, post).sum(axis=2).reshape(A.shape[0], na)


def side_size(prim, params):
    return 0


def validate(prim, row, n_values, pool_end):
    n, na = row[C_N], row[C_NA]
    pre, r, post, extra = row[P_PRE : P_PRE + 4]
    if extra or min(pre, r, post) < 0:
        return f"bad extents {tuple(row[P_PRE : P_PRE + 4])}"
    if na != pre * post or n != pre * r * post:
        return f"sizes {na} -> {n} do not match extents {pre}x{r}x{post}"
    return None


# the listing and the oracle's call are those of the other (pre, r, post) family
describe = reductions.describe
jax_call = reductions.jax_call
