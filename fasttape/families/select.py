"""The select family: ``where(c, x, y)``, elementwise with three operands.

The condition is never differentiated; each output element's adjoint goes to the operand
its condition picked (ties of a kink are the user's own ``where``).
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import C_A, C_B, C_C, C_FLAGS, C_N, C_NA, C_NB, C_NC, C_OUT, F_GRAD_B, F_GRAD_C, F_INIT_B, F_INIT_C
from ..loops import zero, zero_first_writes
from . import elementwise

KINDS = ("select",)
PARAMS = ()


@jit
def fields(ins, i):
    """A select row's offsets (output, condition, picked, other), operand strides (0: a scalar broadcast
    over the run) and whether the two value operands take adjoints."""
    flags = ins[i, C_FLAGS]
    return (
        ins[i, C_OUT], ins[i, C_A], ins[i, C_B], ins[i, C_C],
        1 if ins[i, C_NA] > 1 else 0, 1 if ins[i, C_NB] > 1 else 0, 1 if ins[i, C_NC] > 1 else 0,
        (flags & F_GRAD_B) != 0, (flags & F_GRAD_C) != 0,
    )  # fmt: skip


@jit
def forward(ins, i, aux, buf):
    o, a, b, c, sa, sb, sc, _, _ = fields(ins, i)
    for j in range(ins[i, C_N]):
        buf[o + j] = buf[b + j * sb] if buf[a + j * sa] != 0.0 else buf[c + j * sc]


@jit
def reverse(ins, i, aux, buf, N):
    o, a, b, c, sa, sb, sc, gb, gc = fields(ins, i)
    flags = ins[i, C_FLAGS]
    if flags & F_INIT_B:
        zero(buf, N + b, ins[i, C_NB])
    if flags & F_INIT_C:
        zero(buf, N + c, ins[i, C_NC])
    for j in range(ins[i, C_N]):
        g = buf[N + o + j]
        if buf[a + j * sa] != 0.0:
            if gb:
                buf[N + b + j * sb] += g
        elif gc:
            buf[N + c + j * sc] += g


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    o, a, b, c, sa, sb, sc, gb, gc = fields(ins, i)
    for j in range(ins[i, C_N]):
        taken = buf[a + j * sa] != 0.0
        for d in range(k):
            if taken:
                tan[d * NV + o + j] = tan[d * NV + b + j * sb] if gb else 0.0
            else:
                tan[d * NV + o + j] = tan[d * NV + c + j * sc] if gc else 0.0


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    # linear in the picked operand: the first-order rule on every adjoint
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    o, a, b, c, sa, sb, sc, gb, gc = fields(ins, i)
    for j in range(ins[i, C_N]):
        taken = buf[a + j * sa] != 0.0
        if taken and not gb or not taken and not gc:
            continue
        dst = b + j * sb if taken else c + j * sc
        if second:
            buf[N + dst] += buf[N + o + j]
        for d in range(k):
            adj2[d * N + dst] += adj2[d * N + o + j]


def numpy_forward(row, aux, buf):
    _, o, n, a, na, b, nb, c, nc = row[:9]
    buf[o : o + n] = np.where(buf[a : a + na] != 0.0, buf[b : b + nb], buf[c : c + nc])


def numpy_tangent(row, aux, buf, T):
    _, o, n, a, na, b, nb, c, nc = row[:9]
    flags = row[C_FLAGS]
    taken = buf[a : a + na] != 0.0
    picked = T[:, b : b + nb] if flags & F_GRAD_B else 0.0
    other = T[:, c : c + nc] if flags & F_GRAD_C else 0.0
    T[:, o : o + n] = np.where(taken, picked, other)


def numpy_reverse(row, aux, buf, G, G2, T):
    _, o, n, a, na, b, nb, c, nc = row[:9]
    flags = row[C_FLAGS]
    taken = buf[a : a + na] != 0.0
    for A in (G, G2):
        if A is None:
            continue
        g = A[:, o : o + n]
        if flags & F_GRAD_B:
            elementwise.add_to(A, b, nb, np.where(taken, g, 0.0), n)
        if flags & F_GRAD_C:
            elementwise.add_to(A, c, nc, np.where(taken, 0.0, g), n)


side_size = elementwise.side_size
validate = elementwise.validate
describe = elementwise.describe
jax_call = elementwise.jax_call
