"""The sorting family: integer results computed from values, with no derivative.

``argsort``: operand viewed as (pre, r, post); the stable ascending order of each of the pre x post
columns of length r (NumPy's ``kind="stable"``, NaNs last), as indices into the column.
``argmax`` / ``argmin``: the index of the first extremum of each column, the first NaN if there is
one (NumPy and JAX).  ``searchsorted``: operand A a sorted 1-D array of n values, B the values to
place; the insertion points in [0, n], mode ``RIGHT`` for NumPy's ``side="right"``.

Their outputs are integers (held exactly as float64): they feed the dynamic indexing family
(``take``), which carries the derivatives.  Every row of this family is inactive, so the derivative
sweeps never run it; its derivative kernels do nothing.
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import C_A, C_B, C_N, C_NA, C_NB, C_OP, C_OUT, param_columns
from ..primitives import opcode

KINDS = ("argsort", "argreduce", "searchsorted")
PARAMS = ("pre", "r", "post", "mode")
P_PRE, P_R, P_POST, P_MODE = param_columns(PARAMS)

OP_ARGSORT = opcode("argsort")
OP_ARGMAX = opcode("argmax")
OP_ARGMIN = opcode("argmin")
RIGHT = 1  # searchsorted's mode


@jit
def before(x, y):
    """x sorts before y: NumPy's order, with NaN after every number."""
    return x < y or (y != y and x == x)


@jit
def forward(ins, i, aux, buf):
    op, o, a = ins[i, C_OP], ins[i, C_OUT], ins[i, C_A]
    if op == OP_ARGSORT:
        pre, r, post = ins[i, P_PRE], ins[i, P_R], ins[i, P_POST]
        column = np.empty(r)
        for p in range(pre):
            for q in range(post):
                base = p * r * post + q
                for k in range(r):
                    column[k] = buf[a + base + k * post]
                order = np.argsort(column, kind="mergesort")  # stable; NaNs last
                for k in range(r):
                    buf[o + base + k * post] = order[k]
    elif op == OP_ARGMAX or op == OP_ARGMIN:
        pre, r, post = ins[i, P_PRE], ins[i, P_R], ins[i, P_POST]
        for p in range(pre):
            for q in range(post):
                base = a + p * r * post + q
                best = 0
                m = buf[base]
                if m == m:
                    for k in range(1, r):
                        v = buf[base + k * post]
                        if v != v:
                            best = k
                            break
                        if (op == OP_ARGMAX and v > m) or (op == OP_ARGMIN and v < m):
                            best = k
                            m = v
                buf[o + p * post + q] = best
    else:  # searchsorted: binary search for the first element not before (left) / after (right) the value
        n, b, right = ins[i, C_NA], ins[i, C_B], ins[i, P_MODE] == RIGHT
        for j in range(ins[i, C_NB]):
            v = buf[b + j]
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                x = buf[a + mid]
                if before(v, x) if right else not before(x, v):
                    hi = mid
                else:
                    lo = mid + 1
            buf[o + j] = lo


@jit
def reverse(ins, i, aux, buf, N):
    pass  # no derivative: the rows are never active


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    pass


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    pass


def _columns(row, buf):
    pre, r, post = row[P_PRE : P_POST + 1]
    a, na = row[C_A], row[C_NA]
    return buf[a : a + na].reshape(pre, r, post)


def numpy_forward(row, aux, buf):
    op, o, n = row[C_OP], row[C_OUT], row[C_N]
    if op == OP_ARGSORT:
        buf[o : o + n] = np.argsort(_columns(row, buf), axis=1, kind="stable").reshape(-1)
    elif op in (OP_ARGMAX, OP_ARGMIN):
        fn = np.argmax if op == OP_ARGMAX else np.argmin
        buf[o : o + n] = fn(_columns(row, buf), axis=1).reshape(-1)
    else:
        a, na, b, nb = row[C_A], row[C_NA], row[C_B], row[C_NB]
        side = "right" if row[P_MODE] == RIGHT else "left"
        buf[o : o + n] = np.searchsorted(buf[a : a + na], buf[b : b + nb], side=side)


def numpy_tangent(row, aux, buf, T):
    pass


def numpy_reverse(row, aux, buf, G, G2, T):
    pass


def side_size(prim, params):
    return 0


def validate(prim, row, n_values, pool_end):
    n, na, nb = row[C_N], row[C_NA], row[C_NB]
    pre, r, post, mode = row[P_PRE : P_MODE + 1]
    if prim.name == "searchsorted":
        if pre or r or post or mode not in (0, RIGHT) or nb != n:
            return f"bad parameters {(pre, r, post, mode)} for {nb} values searched in {na}"
        return None
    if min(pre, r, post) < 0 or mode or nb or pre * r * post != na:
        return f"bad extents {(pre, r, post)} for an operand of size {na}"
    if n != (na if prim.name == "argsort" else pre * post) or (r == 0 and n):
        return f"an output of size {n} from [{pre}x{r}x{post}]"
    return None


def describe(prim, params):
    if prim.name == "searchsorted":
        return "[right]" if params["mode"] == RIGHT else "[left]"
    return f"[{params['pre']}x{params['r']}x{params['post']}]"


def jax_call(jnp, fn, operands, params, index):
    return fn(*operands, **params)
