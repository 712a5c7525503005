"""The compiled sweeps over the scalar code: one-element add / subtract / multiply in tight loops.

The scalar code (``layout.scalar_code``) is a compact copy of those instructions -- the
arithmetic of loops over Python floats -- four uint32 per row.  Each sweep streams a run
of it with a three-way switch instead of the general dispatch; each function returns the
index of the last instruction of the run.
"""

from __future__ import annotations

import numpy as np

from .jit import jit
from .layout import (
    CURVATURE,
    F_ACTIVE,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    OP_ADD,
    OP_MULTIPLY,
    OP_SUBTRACT,
    S_FLAGS_SHIFT,
    S_OPCODE_MASK,
    S_SCALAR,
)
from .runs import arithmetic_partials, arithmetic_second, second_terms


@jit
def scalar_forward_run(code, buf, i):
    """Values of the scalar-code instructions from ``i`` on (the arithmetic of loops over Python
    floats) in one tight loop; returns the index of the last one."""
    end = code.shape[0] // 4
    while i < end:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        op = w & S_OPCODE_MASK
        o = code[4 * i + 1]
        a = code[4 * i + 2]
        b = code[4 * i + 3]
        # a store in each arm and no `else`: LLVM then keeps the branches (well predicted) instead of
        # computing all three and selecting, which puts the select on the chain through memory
        if op == OP_MULTIPLY:
            buf[o] = buf[a] * buf[b]
        elif op == OP_ADD:
            buf[o] = buf[a] + buf[b]
        elif op == OP_SUBTRACT:
            buf[o] = buf[a] - buf[b]
        i += 1
    return i - 1


@jit
def scalar_reverse_run(code, buf, N, i):
    """Adjoints of the scalar-code instructions from ``i`` down, in one tight loop; returns the index
    of the last one."""
    n = np.uint64(N)  # unsigned, like the slots: n + a indexes without a negative-index check
    while i >= 0:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if flags & F_ACTIVE:
            o = code[4 * i + 1]
            a = code[4 * i + 2]
            b = code[4 * i + 3]
            g = buf[n + o]
            dx, dy = arithmetic_partials(w & S_OPCODE_MASK, buf[a], buf[b], buf[o])
            if flags & F_GRAD_A:
                buf[n + a] = g * dx if flags & F_INIT_A else buf[n + a] + g * dx
            if flags & F_GRAD_B:
                buf[n + b] = g * dy if flags & F_INIT_B else buf[n + b] + g * dy
        i -= 1
    return i + 1


@jit
def scalar_tangent_run(code, buf, tan, NV, k, i):
    """Tangents (k directions) of the scalar-code instructions from ``i`` on; returns the index of
    the last one."""
    end = code.shape[0] // 4
    nv = np.uint64(NV)  # unsigned offsets, like the slots (no negative-index checks)
    while i < end:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if flags & F_ACTIVE:
            o = code[4 * i + 1]
            a = code[4 * i + 2]
            b = code[4 * i + 3]
            dx, dy = arithmetic_partials(w & S_OPCODE_MASK, buf[a], buf[b], buf[o])
            ga = flags & F_GRAD_A
            gb = flags & F_GRAD_B
            for d in range(k):
                base = np.uint64(d) * nv
                t = 0.0
                if ga:
                    t += dx * tan[base + a]
                if gb:
                    t += dy * tan[base + b]
                tan[base + o] = t
        i += 1
    return i - 1


@jit
def scalar_second_run(code, buf, tan, adj2, N, k, second, i):
    """The second-order (or, without ``second``, k-seed reverse) sweep over the scalar-code
    instructions from ``i`` down; returns the index of the last one."""
    n = np.uint64(N)  # unsigned offsets, like the slots (no negative-index checks)
    while i >= 0:
        w = code[4 * i]
        if not (w & S_SCALAR):
            break
        flags = w >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE):
            i -= 1
            continue
        op = w & S_OPCODE_MASK
        o = code[4 * i + 1]
        a = code[4 * i + 2]
        b = code[4 * i + 3]
        ga = (flags & F_GRAD_A) != 0
        gb = (flags & F_GRAD_B) != 0
        ia = (flags & F_INIT_A) != 0
        ib = (flags & F_INIT_B) != 0
        x = buf[a]
        y = buf[b]
        z = buf[o]
        dx, dy = arithmetic_partials(op, x, y, z)
        if second:
            g = buf[n + o]
            if ga:
                buf[n + a] = g * dx if ia else buf[n + a] + g * dx
            if gb:
                buf[n + b] = g * dy if ib else buf[n + b] + g * dy
            dxx, dxy, dyy = arithmetic_second(op, x, y, z)
            flat = (flags & F_CONST_ADJOINT) != 0
            xx, xy, yy = CURVATURE[op, 0], CURVATURE[op, 1], CURVATURE[op, 2]
            for d in range(k):
                base = np.uint64(d) * n
                gd = adj2[base + o]
                if ga:
                    v = second_terms(flat, gd, dx, g, xx, dxx, tan[base + a], xy and gb, dxy, tan[base + b])
                    adj2[base + a] = v if ia else adj2[base + a] + v
                if gb:
                    v = second_terms(flat, gd, dy, g, yy, dyy, tan[base + b], xy and ga, dxy, tan[base + a])
                    adj2[base + b] = v if ib else adj2[base + b] + v
        else:
            for d in range(k):
                base = np.uint64(d) * n
                gd = adj2[base + o]
                if ga:
                    adj2[base + a] = gd * dx if ia else adj2[base + a] + gd * dx
                if gb:
                    adj2[base + b] = gd * dy if ib else adj2[base + b] + gd * dy
        i -= 1
    return i + 1


# --------------------------------------------------------------------------
# fused regions in the k-direction sweeps (JVP and forward-over-reverse)
