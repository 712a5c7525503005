"""Fused regions: chains of long elementwise instructions replayed tile by tile.

A region is a run of consecutive elementwise instructions over the same number of elements (at
least ``layout.FUSE_MIN``) whose operands are either outputs of earlier instructions of the region,
aligned element for element, or values from outside it.  The first-order sweeps
(``run_value_and_grad``, ``run_forward``, ``run_reverse``) replay it a tile at a time, so that its
intermediate values live in a small scratch that stays in cache:

* forward: only the outputs read after the region (by later instructions, gathers, guards or as
  results of the function) are written to the buffer;
* reverse: the tile's values are recomputed from the region's inputs, and the adjoints of the
  intermediates stay in scratch; only the adjoints of the region's inputs reach the buffer;
* value_and_grad runs a region whose values only the caller reads (``S_LOCAL``) once, in the
  reverse: its tiles compute every value there and store what the caller reads.

That is rematerialisation: it trades a few cheap recomputed operations for memory traffic, which is
what limits long elementwise chains.  The tangent and second-order sweeps (JVP, HVP) recompute a
tile's values and tangents the same way; the k-seed reverse of reverse-mode Jacobians runs after
an unfused forward and replays instruction by instruction.

This module decides the regions and writes them into the tape's code (see ``layout.scalar_code``):
row ``i`` of a region gets ``S_FUSED`` (and ``S_START`` on its first row), its position in the
region, and the region position of each operand that the region itself produced (``NO_SOURCE``
for operands read from the buffer).  ``S_STORE`` marks the outputs read after the region and
``S_GZERO`` the outputs whose adjoint one of the region's own instructions writes first (it
assigns, so the tile does not load or zero that adjoint beforehand), and ``S_RECOMPUTE`` the rows
whose values the first-order reverse reads (the others are not recomputed there; the tangents read no
others either, while the second-order reverse recomputes every value: sin'' = -z reads one that sin'
does not), ``S_TANGENT`` the rows whose tangents the second-order reverse
reads.  ``S_LOCAL`` on a region's first row says that only the caller reads its values (no later
instruction, gather or guard): value_and_grad computes them in its reverse only, and an HVP, which
returns none of them, skips the region in its forward and tangent sweeps (its second-order sweep
recomputes what it needs tile by tile).  A whole-array ``sum`` of the
region's last output closes the region: its tile sums add up in the forward, and its adjoint is
broadcast straight into the tile in the reverse.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .families import gather

# elementwise unary and binary primitives computed in compiled loops (not comparisons, not NumPy's)
_FUSABLE = (K.UNARY | K.BINARY) & ~K.COMPARISON & ~K.VECTOR_UNARY & ~K.VECTOR_BINARY


def _eligible(ins: np.ndarray, fuse_min: int) -> np.ndarray:
    """Rows a region may hold: cheap elementwise unary/binary instructions over >= fuse_min elements
    (the transcendental functions keep NumPy's vector loops, comparisons stay outside)."""
    op, n = ins[:, K.C_OP], ins[:, K.C_N]
    ok = (n >= max(fuse_min, 2)) & _FUSABLE[op]
    ok &= (ins[:, K.C_NA] == n) | (ins[:, K.C_NA] == 1)
    ok &= K.UNARY[op] | (ins[:, K.C_NB] == n) | (ins[:, K.C_NB] == 1)
    return ok


def _regions(ins: np.ndarray, fuse_min: int) -> list[tuple[int, list]]:
    """[(first row, [(a source, b source) per row])] for every region of two or more rows."""
    eligible = _eligible(ins, fuse_min).tolist()
    rows = ins[:, : K.C_P2 + 1].tolist()
    found = []
    start, sources, outputs = -1, [], {}  # outputs: offset -> position in the region

    def close():
        if len(sources) >= 2:
            found.append((start, list(sources)))

    for i, row in enumerate(rows):
        if not eligible[i]:
            if start >= 0 and _closing_sum(row, rows[start][K.C_N], outputs):
                sources.append((outputs[row[K.C_A]], K.NO_SOURCE))
            close()
            start, sources, outputs = -1, [], {}
            continue
        n = row[K.C_N]
        if start >= 0 and n != rows[start][K.C_N]:
            close()
            start, sources, outputs = -1, [], {}
        binary = bool(K.BINARY[row[K.C_OP]])
        operands = [(row[K.C_A], row[K.C_NA])] + ([(row[K.C_B], row[K.C_NB])] if binary else [])
        row_sources = []
        for offset, size in operands:
            if size == n and offset in outputs:
                row_sources.append(outputs[offset])
                continue
            # a read of part of a region output (a shifted view, or one element broadcast) needs
            # values of other tiles: the row starts a new region, reading the stored output
            if any(o < offset + size and offset < o + n for o in outputs):
                break
            row_sources.append(K.NO_SOURCE)
        else:
            if start < 0:
                start = i
            outputs[row[K.C_OUT]] = len(sources)
            sources.append(tuple(row_sources) + (K.NO_SOURCE,) * (2 - len(row_sources)))
            continue
        close()  # this row starts a new region instead
        start, sources, outputs = i, [(K.NO_SOURCE, K.NO_SOURCE)], {row[K.C_OUT]: 0}
    close()
    return found


# partials that read no output value (z), and partials that read neither operand: from the
# variables each declaration's first partials name (a closing sum reads neither)
_Z_FREE = {p.opcode for p in K.PRIMITIVES if p.elementwise and "z" not in p.reads} | {K.OP_SUM}
_OPERANDS_FREE = {p.opcode for p in K.PRIMITIVES if p.elementwise and not p.reads & {"x", "y"}} | {K.OP_SUM}


def _needed_in_reverse(ops, flags, sources) -> list[bool]:
    """Per region row: does the first-order reverse read its value -- in a partial of its own or of
    a later row -- or need it to recompute one that it reads?  The others are not recomputed."""
    needed = [False] * len(sources)
    for p, pair in enumerate(sources):
        if not flags[p] & K.F_ACTIVE:
            continue
        if ops[p] not in _Z_FREE:
            needed[p] = True
        if ops[p] == K.OP_MULTIPLY:  # d(ab)/da = b, d(ab)/db = a: an operand is read for the other's
            for k, q in enumerate(pair):
                if q != K.NO_SOURCE and flags[p] & (K.F_GRAD_B, K.F_GRAD_A)[k]:
                    needed[q] = True
        elif ops[p] not in _OPERANDS_FREE:
            for q in pair:
                if q != K.NO_SOURCE:
                    needed[q] = True
    for p in range(len(sources) - 1, -1, -1):  # operands come first: one backward pass closes it
        if needed[p]:
            for q in sources[p]:
                if q != K.NO_SOURCE:
                    needed[q] = True
    return needed


def _tangents_needed(ops, flags, sizes, sources) -> list[bool]:
    """Per region row: does the second-order reverse read its tangent -- in the second partials of a
    later row -- or need it to compute one that it reads?  Only the linear rows that the second-order
    kernels run on their fast paths read no tangent: negation, a sum, and add, subtract or a product
    of one active operand where every active operand is full-length."""
    needed = [False] * len(sources)
    for p, pair in enumerate(sources):
        if not flags[p] & K.F_ACTIVE:
            continue
        active = [k for k in range(2) if flags[p] & (K.F_GRAD_A, K.F_GRAD_B)[k]]
        full = all(sizes[p][k] == sizes[p][2] for k in active)
        if ops[p] in (K.OP_NEGATIVE, K.OP_SUM):
            continue
        if full and (ops[p] in (K.OP_ADD, K.OP_SUBTRACT) or (ops[p] == K.OP_MULTIPLY and len(active) == 1)):
            continue
        for q in pair:
            if q != K.NO_SOURCE:
                needed[q] = True
    for p in range(len(sources) - 1, -1, -1):
        if needed[p]:
            for q in sources[p]:
                if q != K.NO_SOURCE:
                    needed[q] = True
    return needed


def _closing_sum(row, n, outputs) -> bool:
    """A sum of a whole region output (all of its n elements, contiguous) ends the region."""
    return (
        row[K.C_OP] == K.OP_SUM
        and row[K.C_NA] == n
        and row[K.C_A] in outputs
        and row[K.C_P0] == 1
        and row[K.C_P1] == n
        and row[K.C_P2] == 1
    )


def _read_outside(ins, aux, regions, protected):
    """(``read``, ``read_in_sweeps``): ``read(offset, size)`` -- is any of those values read by
    anything but an aligned operand inside its own region: another instruction, a gather, a guard,
    or the caller (outputs and aux)?  ``read_in_sweeps`` leaves out the caller."""
    internal = set()
    for start, sources in regions:
        for p, pair in enumerate(sources):
            for k, q in enumerate(pair):
                if q != K.NO_SOURCE:
                    internal.add((start + p, k))
    starts, ends = [], []
    for k, (col, size_col) in enumerate(((K.C_A, K.C_NA), (K.C_B, K.C_NB), (K.C_C, K.C_NC))):
        size = ins[:, size_col]
        rows = np.nonzero(size > 0)[0]
        rows = rows[np.array([(i, k) not in internal for i in rows.tolist()], dtype=bool)] if rows.size else rows
        starts.append(ins[rows, col])
        ends.append(ins[rows, col] + size[rows])
    gathers = np.nonzero(ins[:, K.C_OP] == K.OP_GATHER)[0].tolist()  # they read at the pool's positions
    points = [aux[ins[i, gather.P_START] : ins[i, gather.P_START] + ins[i, K.C_N]] for i in gathers]
    guards, n_guards = int(aux[K.M_GUARDS]), int(aux[K.M_NGUARDS])
    points.append(aux[guards : guards + 2 * n_guards : 2])
    in_sweeps = _reader(starts, ends, points)
    for offset, size in protected:
        starts.append(np.array([offset], dtype=np.int64))
        ends.append(np.array([offset + size], dtype=np.int64))
    return _reader(starts, ends, points), in_sweeps


def _reader(starts, ends, points):
    """``read(offset, size)``: does [offset, offset + size) meet one of the runs [start, end) or
    one of the single positions ``points``?"""
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    # sorted for searchsorted; repeats do no harm (np.unique is 10x slower on millions: NumPy 2.4's hashing)
    points = np.sort(np.concatenate(points)) if points else np.zeros(0, dtype=np.int64)

    def read(offset, size):
        if np.any((starts < offset + size) & (ends > offset)):
            return True
        j = np.searchsorted(points, offset)
        return bool(j < points.size and points[j] < offset + size)

    return read


def mark_regions(code: np.ndarray, ins: np.ndarray, aux: np.ndarray, protected, fuse_min=None):
    """Write the fused regions of a tape into its code (in place).  ``protected``: the (offset, size)
    runs the caller reads after a sweep (the outputs and aux values)."""
    fuse_min = K.FUSE_MIN if fuse_min is None else fuse_min
    if ins.shape[0] < 2 or ins[:, K.C_N].max() < fuse_min or not _eligible(ins, fuse_min).any():
        return
    regions = _regions(ins, fuse_min)
    if not regions:
        return
    read, read_in_sweeps = _read_outside(ins, aux, regions, protected)
    rows = code.reshape(-1, 4)
    init_bits = (K.F_INIT_A, K.F_INIT_B)
    for start, sources in regions:
        gzero = set()
        for p, pair in enumerate(sources):
            flags = int(ins[start + p, K.C_FLAGS])
            for k, q in enumerate(pair):
                if q != K.NO_SOURCE and flags & init_bits[k]:
                    gzero.add(q)
        rows_ops = ins[start : start + len(sources), K.C_OP].tolist()
        rows_flags = ins[start : start + len(sources), K.C_FLAGS].tolist()
        needed = _needed_in_reverse(rows_ops, rows_flags, sources)
        sizes = ins[start : start + len(sources), [K.C_NA, K.C_NB, K.C_N]].tolist()
        tangents = _tangents_needed(rows_ops, rows_flags, sizes, sources)
        outputs = [(int(ins[start + p, K.C_OUT]), int(ins[start + p, K.C_N])) for p in range(len(sources))]
        local = not any(read_in_sweeps(o, n) for o, n in outputs)
        for p, (sa, sb) in enumerate(sources):
            i = start + p
            o, n = int(ins[i, K.C_OUT]), int(ins[i, K.C_N])
            word = int(ins[i, K.C_OP]) | (int(ins[i, K.C_FLAGS]) << K.S_FLAGS_SHIFT) | K.S_FUSED
            if p == 0:
                word |= K.S_START | (K.S_LOCAL if local else 0)
            if read(o, n):
                word |= K.S_STORE
            if p in gzero:
                word |= K.S_GZERO
            if needed[p]:
                word |= K.S_RECOMPUTE
            if tangents[p]:
                word |= K.S_TANGENT
            rows[i] = (word, p, sa, sb)
