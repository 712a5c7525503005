"""Fused regions: long elementwise chains run a tile at a time, in every sweep.

``fasttape.fusion`` marks the regions in the code array; here each sweep runs a region
tile by tile (``FUSE_TILE`` elements), keeping its intermediate values, tangents and
adjoints in scratch that stays in cache; only what is read after the region reaches the
buffer.  The loops are the elementwise family's runs (``fasttape.runs``), so a fused
sweep gives the same bits as the plain one.
"""

from __future__ import annotations

import numpy as np

from .jit import jit
from .layout import (
    BINARY,
    C_A,
    C_N,
    C_NA,
    C_OUT,
    F_ACTIVE,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    FUSE_TILE,
    NO_SOURCE,
    OP_SUM,
    S_FLAGS_SHIFT,
    S_FUSED,
    S_GZERO,
    S_LOCAL,
    S_OPCODE_MASK,
    S_RECOMPUTE,
    S_START,
    S_STORE,
    S_TANGENT,
    UNARY,
)
from .loops import sum_contiguous, zero_adjoints
from .runs import (
    binary_partials_into,
    binary_reverse_slices,
    binary_slices,
    combined_into,
    partials_pay_off,
    scaled_into,
    second_binary,
    second_unary,
    tangent_binary,
    tangent_unary,
    unary_forward_run,
    unary_partials_into,
    unary_reverse_run,
)


@jit
def region_end(code, s):
    """The last row of the region that starts at row ``s``."""
    e = s
    rows = code.shape[0] // 4
    while e + 1 < rows:
        w = code[4 * (e + 1)]
        if not (w & S_FUSED) or (w & S_START):
            break
        e += 1
    return e


@jit
def region_start(code, e):
    s = e
    while not (code[4 * s] & S_START):
        s -= 1
    return s


@jit
def tile_operand(ins, code, buf, scratch, i, k, t0, size):
    """Operand k (0: a, 1: b) of region row i on the tile [t0, t0 + size): the region's scratch when
    the region produced it, else the buffer (one element for a scalar operand); and its stride.
    ``buf`` may be the value half or the adjoint half: the same runs index both."""
    q = code[4 * i + 2 + k]
    if q != NO_SOURCE:
        return scratch[q * FUSE_TILE : q * FUSE_TILE + size], 1
    a = ins[i, C_A + 2 * k]
    if ins[i, C_NA + 2 * k] == 1:
        return buf[a : a + 1], 0
    return buf[a + t0 : a + t0 + size], 1


@jit
def region_values(ins, code, buf, values, s, e, t0, size, store, needed_only=False):
    """Values of region rows s..e on one tile, into the scratch ``values``; with ``store``, the
    outputs read after the region also go to the buffer; with ``needed_only``, only the rows the
    first-order reverse reads.  The loops are the plain sweep's, so the values are the same bits."""
    for i in range(s, e + 1):
        w = code[4 * i]
        if needed_only and not (w & S_RECOMPUTE):
            continue
        op = w & S_OPCODE_MASK
        if op == OP_SUM:  # a whole-array sum closing the region: tile sums into the zeroed output
            if store:
                q = code[4 * i + 2]
                buf[ins[i, C_OUT]] += sum_contiguous(values, q * FUSE_TILE, size)
            continue
        p = code[4 * i + 1]
        z = values[p * FUSE_TILE : p * FUSE_TILE + size]
        x, sx = tile_operand(ins, code, buf, values, i, 0, t0, size)
        if UNARY[op]:
            unary_forward_run(op, z, x)
        else:
            y, sy = tile_operand(ins, code, buf, values, i, 1, t0, size)
            binary_slices(op, z, x, y, sx, sy)
        if store and (w & S_STORE):
            o = ins[i, C_OUT] + t0
            buf[o : o + size] = z


@jit
def region_forward(ins, code, buf, s):
    """The fused forward of the region starting at row ``s``; returns its last row."""
    e = region_end(code, s)
    n = ins[s, C_N]
    if (code[4 * e] & S_OPCODE_MASK) == OP_SUM:
        buf[ins[e, C_OUT]] = 0.0
    values = np.empty((e - s + 1) * FUSE_TILE)
    for t0 in range(0, n, FUSE_TILE):
        region_values(ins, code, buf, values, s, e, t0, min(FUSE_TILE, n - t0), True)
    return e


@jit
def zero_first_written_outside(ins, code, buf, adj2, N, k, s, e):
    """Zero the adjoints (first order, and k second-order ones in ``adj2``) of the outside operands
    whose adjoint region rows s..e write first (``F_INIT``): the tiles then only accumulate, since
    views of one array at different offsets would overwrite each other's contributions tile by tile."""
    for i in range(s, e + 1):
        flags = code[4 * i] >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE):
            continue
        for kk in range(2 if BINARY[code[4 * i] & S_OPCODE_MASK] else 1):
            if code[4 * i + 2 + kk] == NO_SOURCE and flags & (F_GRAD_A << kk) and flags & (F_INIT_A << kk):
                zero_adjoints(buf, adj2, N, k, ins[i, C_A + 2 * kk], ins[i, C_NA + 2 * kk], True)


@jit
def broadcast_into_tile(dst, value, init):
    """A closing sum's adjoint into its operand's tile: dst = or += value (d sum = 1)."""
    if init:
        dst[:] = value
    else:
        dst += value


@jit
def tile_adjoints_from_outside(ins, code, buf, adj2, N, k, grads, grads2, s, e, t0, size):
    """Start a tile's scratch adjoints (first order in ``grads``, k second-order ones in ``grads2``):
    what instructions after the region wrote into a stored output's adjoints, else zero.  Rows whose
    first adjoint writer is in the region (S_GZERO) and a closing sum are left to that writer."""
    span = (e - s + 1) * FUSE_TILE
    for i in range(s, e + 1):
        w = code[4 * i]
        if (w & S_OPCODE_MASK) == OP_SUM or (w & S_GZERO):
            continue
        at = code[4 * i + 1] * FUSE_TILE
        if w & S_STORE:
            o = ins[i, C_OUT] + t0
            grads[at : at + size] = buf[N + o : N + o + size]
            for d in range(k):
                grads2[d * span + at : d * span + at + size] = adj2[d * N + o : d * N + o + size]
        else:
            grads[at : at + size] = 0.0
            for d in range(k):
                grads2[d * span + at : d * span + at + size] = 0.0


@jit
def region_reverse(ins, code, buf, N, e, skipped_local):
    """The fused reverse of the region ending at row ``e``: per tile, recompute its values from the
    region's inputs, then run its adjoints backwards in scratch; only the adjoints of operands from
    outside the region reach the buffer.  With ``skipped_local``, the forward skipped the region if it
    is S_LOCAL: the tiles then compute all of its values and store what the caller reads, as the fused
    forward would (the same loops, tiles in the same order: the same bits).  Returns the region's
    first row."""
    s = region_start(code, e)
    skipped = skipped_local and (code[4 * s] & S_LOCAL) != 0
    n = ins[s, C_N]
    adjoints = buf[N:]
    zero_first_written_outside(ins, code, buf, buf[:0], N, 0, s, e)
    if skipped and (code[4 * e] & S_OPCODE_MASK) == OP_SUM:
        buf[ins[e, C_OUT]] = 0.0
    values = np.empty((e - s + 1) * FUSE_TILE)
    grads = np.empty((e - s + 1) * FUSE_TILE)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        region_values(ins, code, buf, values, s, e, t0, size, skipped, not skipped)
        tile_adjoints_from_outside(ins, code, buf, buf[:0], N, 0, grads, grads, s, e, t0, size)
        for i in range(e, s - 1, -1):
            w = code[4 * i]
            flags = w >> S_FLAGS_SHIFT
            if not (flags & F_ACTIVE):
                continue
            op = w & S_OPCODE_MASK
            if op == OP_SUM:  # d sum = 1 for every element
                if flags & F_GRAD_A:
                    at = code[4 * i + 2] * FUSE_TILE
                    broadcast_into_tile(grads[at : at + size], adjoints[ins[i, C_OUT]], flags & F_INIT_A)
                continue
            p = code[4 * i + 1]
            g = grads[p * FUSE_TILE : p * FUSE_TILE + size]
            z = values[p * FUSE_TILE : p * FUSE_TILE + size]
            x, sx = tile_operand(ins, code, buf, values, i, 0, t0, size)
            gx, _ = tile_operand(ins, code, adjoints, grads, i, 0, t0, size)
            # the first writer of an intermediate's adjoint assigns (outside operands were zeroed)
            ia = (flags & F_INIT_A) != 0 and code[4 * i + 2] != NO_SOURCE
            if UNARY[op]:
                if flags & F_GRAD_A:
                    unary_reverse_run(op, g, gx, x, z, ia)
            else:
                y, sy = tile_operand(ins, code, buf, values, i, 1, t0, size)
                gy, _ = tile_operand(ins, code, adjoints, grads, i, 1, t0, size)
                ib = (flags & F_INIT_B) != 0 and code[4 * i + 3] != NO_SOURCE
                binary_reverse_slices(op, g, x, y, z, sx, sy, gx, gy, flags & F_GRAD_A, flags & F_GRAD_B, ia, ib)
    return s


@jit
def region_tangents(ins, code, buf, tan, NV, k, values, tangents, s, e, t0, size, store):
    """Tangents (k directions) of region rows s..e on one tile, from the tile's values, into the
    scratch ``tangents`` (direction d's part starts at d R FUSE_TILE); with ``store``, the tangents of
    the outputs read after the region (and a closing sum's) also go to ``tan``; without, only the
    tangents that the second-order reverse reads (``S_TANGENT``)."""
    span = (e - s + 1) * FUSE_TILE
    partials = np.empty(2 * FUSE_TILE if k > 1 else 0)
    for i in range(s, e + 1):
        w = code[4 * i]
        flags = w >> S_FLAGS_SHIFT
        if not (flags & F_ACTIVE) or not (store or w & S_TANGENT):
            continue
        op = w & S_OPCODE_MASK
        if op == OP_SUM:
            if store:
                q = code[4 * i + 2]
                for d in range(k):
                    tan[d * NV + ins[i, C_OUT]] += sum_contiguous(tangents, d * span + q * FUSE_TILE, size)
            continue
        p = code[4 * i + 1]
        z = values[p * FUSE_TILE : p * FUSE_TILE + size]
        x, sx = tile_operand(ins, code, buf, values, i, 0, t0, size)
        ga, gb = (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0
        once = partials_pay_off(op, k)  # the partials of the tile once, for every direction
        if once and UNARY[op]:
            unary_partials_into(op, x, z, partials[:size])
        elif once:
            y, sy = tile_operand(ins, code, buf, values, i, 1, t0, size)
            binary_partials_into(op, x, y, z, size, sx, sy, partials[:size], partials[FUSE_TILE : FUSE_TILE + size])
        for d in range(k):
            scratch = tangents[d * span : (d + 1) * span]
            plane = tan[d * NV : (d + 1) * NV]
            to = scratch[p * FUSE_TILE : p * FUSE_TILE + size]
            tx, _ = tile_operand(ins, code, plane, scratch, i, 0, t0, size)
            if once and UNARY[op]:
                scaled_into(to, partials[:size], tx)
            elif UNARY[op]:
                tangent_unary(op, x, z, tx, to)
            else:
                y, sy = tile_operand(ins, code, buf, values, i, 1, t0, size)
                ty, _ = tile_operand(ins, code, plane, scratch, i, 1, t0, size)
                if once:
                    combined_into(to, partials[:size], tx, sx, partials[FUSE_TILE : FUSE_TILE + size], ty, sy, size,
                                  ga, gb)  # fmt: skip
                else:
                    tangent_binary(op, x, y, z, tx, ty, to, size, sx, sy, ga, gb)
            if store and (w & S_STORE):
                o = ins[i, C_OUT] + t0
                plane[o : o + size] = to


@jit
def region_tangent(ins, code, buf, tan, NV, k, s):
    """The tangent sweep of the region starting at row ``s`` (values recomputed per tile, since the
    fused forward kept only those read after the region); returns its last row."""
    e = region_end(code, s)
    n = ins[s, C_N]
    w = code[4 * e]
    if (w & S_OPCODE_MASK) == OP_SUM and (w >> S_FLAGS_SHIFT) & F_ACTIVE:
        for d in range(k):
            tan[d * NV + ins[e, C_OUT]] = 0.0
    span = (e - s + 1) * FUSE_TILE
    values = np.empty(span)
    tangents = np.empty(k * span)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        region_values(ins, code, buf, values, s, e, t0, size, False, True)  # tangents read the same
        region_tangents(ins, code, buf, tan, NV, k, values, tangents, s, e, t0, size, True)
    return e


@jit
def region_second(ins, code, buf, tan, adj2, N, k, e):
    """Forward-over-reverse of the region ending at row ``e``: per tile, recompute its values and
    tangents, then run its first-order adjoint and the k second-order adjoints backwards in scratch;
    only the adjoints of operands from outside the region reach ``buf`` and ``adj2``.  Returns the
    region's first row."""
    s = region_start(code, e)
    n = ins[s, C_N]
    adjoints = buf[N:]
    zero_first_written_outside(ins, code, buf, adj2, N, k, s, e)
    span = (e - s + 1) * FUSE_TILE
    values = np.empty(span)
    tangents = np.empty(k * span)
    grads = np.empty(span)
    grads2 = np.empty(k * span)
    for t0 in range(0, n, FUSE_TILE):
        size = min(FUSE_TILE, n - t0)
        # every value: a second partial may read z where the first does not (sin'' = -z), so S_RECOMPUTE,
        # which covers what the first-order reverse reads, is not enough here
        region_values(ins, code, buf, values, s, e, t0, size, False, False)
        region_tangents(ins, code, buf, tan, N, k, values, tangents, s, e, t0, size, False)
        tile_adjoints_from_outside(ins, code, buf, adj2, N, k, grads, grads2, s, e, t0, size)
        for i in range(e, s - 1, -1):
            w = code[4 * i]
            flags = w >> S_FLAGS_SHIFT
            if not (flags & F_ACTIVE):
                continue
            op = w & S_OPCODE_MASK
            ia = (flags & F_INIT_A) != 0 and code[4 * i + 2] != NO_SOURCE
            if op == OP_SUM:  # d sum = 1, d² sum = 0: both adjoints broadcast into the tile
                if flags & F_GRAD_A:
                    o = ins[i, C_OUT]
                    at = code[4 * i + 2] * FUSE_TILE
                    broadcast_into_tile(grads[at : at + size], adjoints[o], ia)
                    for d in range(k):
                        broadcast_into_tile(grads2[d * span + at : d * span + at + size], adj2[d * N + o], ia)
                continue
            p = code[4 * i + 1]
            g = grads[p * FUSE_TILE : p * FUSE_TILE + size]
            z = values[p * FUSE_TILE : p * FUSE_TILE + size]
            x, sx = tile_operand(ins, code, buf, values, i, 0, t0, size)
            gx, _ = tile_operand(ins, code, adjoints, grads, i, 0, t0, size)
            flat = (flags & F_CONST_ADJOINT) != 0
            for d in range(k):
                second = grads2[d * span : (d + 1) * span]
                plane2 = adj2[d * N : (d + 1) * N]
                scratch = tangents[d * span : (d + 1) * span]
                plane = tan[d * N : (d + 1) * N]
                to2 = second[p * FUSE_TILE : p * FUSE_TILE + size]
                tx2, _ = tile_operand(ins, code, plane2, second, i, 0, t0, size)
                tx, _ = tile_operand(ins, code, plane, scratch, i, 0, t0, size)
                if UNARY[op]:
                    second_unary(op, x, z, g, gx, to2, tx2, tx, d == 0, ia, flat)
                    continue
                y, sy = tile_operand(ins, code, buf, values, i, 1, t0, size)
                gy, _ = tile_operand(ins, code, adjoints, grads, i, 1, t0, size)
                ty2, _ = tile_operand(ins, code, plane2, second, i, 1, t0, size)
                ty, _ = tile_operand(ins, code, plane, scratch, i, 1, t0, size)
                ib = (flags & F_INIT_B) != 0 and code[4 * i + 3] != NO_SOURCE
                second_binary(
                    op, x, y, z, g, gx, gy, to2, tx2, ty2, tx, ty, size, sx, sy,
                    (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0, d == 0, True, ia, ib, flat,
                )  # fmt: skip
    return s
