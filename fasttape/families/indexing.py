"""The dynamic indexing family: gathers and scatters whose indices are values of the sweep.

Indices computed from the inputs (an ``argmin``, an ``argsort``, integer labels passed as an
argument) live in integer slots of the buffer (integers held exactly as float64) and are read
during every sweep, so a new index array never re-traces.

``take``: operand A viewed as (pre, n, post), indices B; the output is (pre, m, post) with
``out[p, j, q] = A[p, B[j], q]`` -- ``np.take(A, B, axis)`` -- or, with ``ALONG`` set and B of
shape (pre, m, post), ``out[p, j, q] = A[p, B[p, j, q], q]`` -- ``np.take_along_axis``.  Negative
indices count from the end; an index outside [-n, n) raises NumPy's IndexError (before any value is
written).  Its reverse is a scatter-add.

``scatter``: operand A (the array updated, size n), flat positions B into it (checked in [0, n)),
values C (one per position); the output is A with C added at B (``ADD``: repeated positions
accumulate, ``np.add.at`` and JAX's ``.at[].add``) or written at B (``SET``: the last write to a
position wins, as NumPy's ``x[idx] = v``).  SET keeps a side store of n values: per position, the
index of the value that won it (-1: none), so the reverse sends each adjoint to the winner only.
Its reverse gathers.

Both are linear in their differentiated operands (the indices have no derivative), so the second-
order rules are the first-order ones on every adjoint.
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import register_jitable

from ..jit import jit
from ..layout import (
    C_A,
    C_B,
    C_C,
    C_FLAGS,
    C_N,
    C_NA,
    C_NB,
    C_NC,
    C_OP,
    C_OUT,
    F_GRAD_A,
    F_GRAD_C,
    linear_planes,
    param_columns,
)
from ..loops import zero_first_writes
from ..primitives import opcode

KINDS = ("take", "scatter")
PARAMS = ("pre", "n", "mode", "side")  # a take's ``post`` is its operand's size / (pre n)
P_PRE, P_N, P_MODE, P_SIDE = param_columns(PARAMS)
SCATTERS = True  # both reverses write adjoints at computed positions: they only accumulate

OP_TAKE = opcode("take")
ALONG = 1  # take's mode bit: one index per output element (take_along_axis); the axis is mode >> 1
ADD = 0  # scatter's modes
SET = 1


@register_jitable
def position(value, n, axis, i):
    """An index read from the buffer, counted from the end when negative; IndexError (NumPy's message, and
    the instruction ``i``, which the API turns into the argument's name) outside [-n, n)."""
    k = value + n if value < 0.0 else value
    if not (0.0 <= k < n) or k != math.floor(k):
        where = " (instruction " + str(i) + ")"
        if value != value or value != math.floor(value):
            raise IndexError("an index holds " + str(value) + ", not an integer (axis " + str(axis) + ")" + where)
        raise IndexError(
            "index " + str(int(value)) + " is out of bounds for axis " + str(axis) + " with size " + str(n) + where
        )  # fmt: skip
    return int(k)


@register_jitable
def extents(pre, n, mode, na, nb):
    """A take's (post, m): its operand is (pre, n, post), its output (pre, m, post)."""
    post = na // (pre * n) if pre * n > 0 else 0
    m = nb // max(pre * post, 1) if mode & ALONG else nb
    return post, m


@register_jitable
def take_fields(ins, i):
    """(output, A, B, pre, n, post, m, along, axis)."""
    pre, n, mode = ins[i, P_PRE], ins[i, P_N], ins[i, P_MODE]
    post, m = extents(pre, n, mode, ins[i, C_NA], ins[i, C_NB])
    return ins[i, C_OUT], ins[i, C_A], ins[i, C_B], pre, n, post, m, (mode & ALONG) != 0, mode >> 1


@register_jitable
def take_run(src, dst, buf, ins, i, add_back):
    """``dst[out] = src[A at the indices]`` (values or one tangent plane), or with ``add_back`` the
    reverse: ``dst[A at the indices] += src[out]`` (one adjoint plane)."""
    o, a, b, pre, n, post, m, along, axis = take_fields(ins, i)
    for p in range(pre):
        for j in range(m):
            for q in range(post):
                e = (p * m + j) * post + q
                k = position(buf[b + e] if along else buf[b + j], n, axis, i)
                s = a + (p * n + k) * post + q
                if add_back:
                    dst[s] += src[o + e]
                else:
                    dst[o + e] = src[s]


@register_jitable
def scatter_run(ins, i, buf, src, dst, mode, reverse):
    """A scatter's forward (``src``, ``dst``: the values, or one tangent plane: the output is A with C
    added or written at B) or, with ``reverse``, its adjoint on one plane (A's and C's adjoints, from
    the output's)."""
    o, a, b, c, n, m = ins[i, C_OUT], ins[i, C_A], ins[i, C_B], ins[i, C_C], ins[i, C_N], ins[i, C_NB]
    side = ins[i, P_SIDE]
    flags = ins[i, C_FLAGS]
    grad_a, grad_c = (flags & F_GRAD_A) != 0, (flags & F_GRAD_C) != 0
    if reverse:
        if grad_a:
            for p in range(n):
                if mode == ADD or buf[side + p] < 0.0:
                    dst[a + p] += src[o + p]
        if grad_c:
            for j in range(m):
                p = position(buf[b + j], n, 0, i)
                if mode == ADD or buf[side + p] == j:
                    dst[c + j] += src[o + p]
        return
    for p in range(n):
        dst[o + p] = src[a + p] if grad_a else 0.0
    for j in range(m):
        p = position(buf[b + j], n, 0, i)
        v = src[c + j] if grad_c else 0.0
        if mode == ADD:
            dst[o + p] += v
        else:
            dst[o + p] = v


@jit
def forward(ins, i, aux, buf):
    if ins[i, C_OP] == OP_TAKE:
        take_run(buf, buf, buf, ins, i, False)
        return
    mode = ins[i, P_MODE]
    o, a, b, c, n, m = ins[i, C_OUT], ins[i, C_A], ins[i, C_B], ins[i, C_C], ins[i, C_N], ins[i, C_NB]
    for j in range(m):  # every position checked before anything is written
        position(buf[b + j], n, 0, i)
    for p in range(n):
        buf[o + p] = buf[a + p]
    side = ins[i, P_SIDE]
    if mode == SET:
        for p in range(n):
            buf[side + p] = -1.0
    for j in range(m):
        p = position(buf[b + j], n, 0, i)
        if mode == ADD:
            buf[o + p] += buf[c + j]
        else:
            buf[o + p] = buf[c + j]
            buf[side + p] = j


@jit
def reverse(ins, i, aux, buf, N):
    if ins[i, C_OP] == OP_TAKE:
        take_run(buf[N:], buf[N:], buf, ins, i, True)
    else:
        scatter_run(ins, i, buf, buf[N:], buf[N:], ins[i, P_MODE], True)


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    for d in range(k):
        t = tan[d * NV : (d + 1) * NV]
        if ins[i, C_OP] == OP_TAKE:
            take_run(t, t, buf, ins, i, False)
        elif ins[i, P_MODE] == ADD:
            scatter_run(ins, i, buf, t, t, ADD, False)
        else:  # the winner's tangent, or A's where nothing was written
            o, a, c, n = ins[i, C_OUT], ins[i, C_A], ins[i, C_C], ins[i, C_N]
            side = ins[i, P_SIDE]
            flags = ins[i, C_FLAGS]
            for p in range(n):
                w = buf[side + p]
                if w < 0.0:
                    t[o + p] = t[a + p] if flags & F_GRAD_A else 0.0
                else:
                    t[o + p] = t[c + int(w)] if flags & F_GRAD_C else 0.0


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    for d in range(-1 if second else 0, k):  # linear: the first-order rule on every adjoint
        t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
        if ins[i, C_OP] == OP_TAKE:
            take_run(t, t, buf, ins, i, True)
        else:
            scatter_run(ins, i, buf, t, t, ins[i, P_MODE], True)


# --------------------------------------------------------------------------
# the executor tier's rules (NumPy)
# --------------------------------------------------------------------------
def _positions(row, buf):
    """A take's source positions (absolute), one per output element; NumPy's IndexError if out of range."""
    _, o, size, a, na, b, nb = row[:7]
    pre, n, mode = row[P_PRE], row[P_N], row[P_MODE]
    post, m = extents(pre, n, mode, na, nb)
    raw = buf[b : b + nb]
    if mode & ALONG:
        index = raw.reshape(pre, m, post)
    else:
        index = np.broadcast_to(raw.reshape(1, m, 1), (pre, m, post))
    k = _checked(index, n, mode >> 1)
    p = np.arange(pre).reshape(pre, 1, 1)
    q = np.arange(post).reshape(1, 1, post)
    return (a + (p * n + k) * post + q).reshape(-1)


def _checked(index, n, axis):
    """Integer indices from their float64 values, negatives counted from the end (IndexError as NumPy)."""
    bad = ~((index >= -n) & (index < n) & (index == np.floor(index)))
    if bad.any():
        value = index[bad].reshape(-1)[0]
        if value != np.floor(value):
            raise IndexError(f"an index holds {value}, not an integer (axis {axis})")
        raise IndexError(f"index {int(value)} is out of bounds for axis {axis} with size {n}")
    k = index.astype(np.int64)
    return np.where(k < 0, k + n, k)


def _winners(row, buf):
    """(positions of the scatter's values in A, winners: per position of A the value written there or -1)."""
    b, nb, n = row[C_B], row[C_NB], row[C_N]
    positions = _checked(buf[b : b + nb], n, 0)
    if row[P_MODE] == ADD:
        return positions, None
    return positions, buf[row[P_SIDE] : row[P_SIDE] + n].astype(np.int64)


def numpy_forward(row, aux, buf):
    o, n = row[C_OUT], row[C_N]
    if row[C_OP] == OP_TAKE:
        buf[o : o + n] = buf[_positions(row, buf)]
        return
    a, c, nc = row[C_A], row[C_C], row[C_NC]
    positions = _checked(buf[row[C_B] : row[C_B] + row[C_NB]], n, 0)
    out = buf[a : a + n].copy()
    if row[P_MODE] == ADD:
        np.add.at(out, positions, buf[c : c + nc])
    else:
        side = row[P_SIDE]
        winner = np.full(n, -1.0)
        winner[positions] = np.arange(nc, dtype=np.float64)  # NumPy's assignment: the last write wins
        out[positions] = buf[c : c + nc]
        buf[side : side + n] = winner
    buf[o : o + n] = out


def numpy_tangent(row, aux, buf, T):
    o, n = row[C_OUT], row[C_N]
    if row[C_OP] == OP_TAKE:
        T[:, o : o + n] = T[:, _positions(row, buf)]
        return
    flags, a, c, nc = row[C_FLAGS], row[C_A], row[C_C], row[C_NC]
    positions, winners = _winners(row, buf)
    k = T.shape[0]
    out = T[:, a : a + n].copy() if flags & F_GRAD_A else np.zeros((k, n))
    tc = T[:, c : c + nc] if flags & F_GRAD_C else np.zeros((k, nc))
    if winners is None:
        for r in range(k):
            np.add.at(out[r], positions, tc[r])
    else:
        won = winners >= 0
        out[:, won] = tc[:, winners[won]]
    T[:, o : o + n] = out


def numpy_reverse(row, aux, buf, G, G2, T):
    o, n = row[C_OUT], row[C_N]
    if row[C_OP] == OP_TAKE:
        positions = _positions(row, buf)
        for A in linear_planes(row, G, G2, T):
            g = A[:, o : o + n].copy()
            for r in range(A.shape[0]):  # scatter-add
                np.add.at(A[r], positions, g[r])
        return
    flags, a, c, nc = row[C_FLAGS], row[C_A], row[C_C], row[C_NC]
    positions, winners = _winners(row, buf)
    for A in linear_planes(row, G, G2, T):
        g = A[:, o : o + n].copy()
        if flags & F_GRAD_A:
            A[:, a : a + n] += g if winners is None else np.where(winners < 0, g, 0.0)
        if flags & F_GRAD_C:
            picked = g[:, positions]
            if winners is not None:
                picked = np.where(winners[positions] == np.arange(nc), picked, 0.0)
            A[:, c : c + nc] += picked


# --------------------------------------------------------------------------
# sizes, saved rows, listings, the oracle's reference
# --------------------------------------------------------------------------
def side_size(prim, params):
    return params["n"] if prim.name == "scatter" and params.get("mode") == SET else 0


def validate(prim, row, n_values, pool_end):
    n_out, na, nb, nc = row[C_N], row[C_NA], row[C_NB], row[C_NC]
    pre, n, mode, side = row[P_PRE : P_SIDE + 1]
    if prim.name == "take":
        post, m = extents(pre, n, mode, na, nb) if min(pre, n, mode) >= 0 else (-1, -1)
        if min(pre, n, mode) < 0 or side or nc or pre * n * post != na:
            return f"bad parameters {(pre, n, mode, side)} for an operand of size {na}"
        if pre * m * post != n_out or (mode & ALONG and nb != n_out):
            return f"an index operand of size {nb} does not fit an output of size {n_out} from [{pre}x{n}x{post}]"
        return None
    if mode not in (ADD, SET) or pre or n != n_out or na != n_out:
        return f"bad parameters {(pre, n, mode, side)} for a scatter into {na} values"
    if nb != nc:
        return f"{nb} positions for {nc} values"
    if mode == SET and not (0 <= side and side + n_out <= n_values):
        return f"a side store [{side}, {side + n_out}) outside the {n_values} values"
    if mode == ADD and side:
        return "a side store for a scatter-add"
    return None


def describe(prim, params):
    if prim.name == "take":
        axis = params["mode"] >> 1
        along = " along" if params["mode"] & ALONG else ""
        return f"[{params['pre']}x{params['n']}x...] axis {axis}{along}"
    return "[add]" if params["mode"] == ADD else "[set]"


def jax_call(jnp, fn, operands, params, index):
    return fn(*operands, **params)
