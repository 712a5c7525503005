"""What the sweeps may assume about each row's adjoint, decided once per tape from its rows.

* ``unreached_rows_inactive``: rows with no differentiable path to an output run in no sweep
  (their adjoint is JAX's symbolic zero);
* ``plan_adjoint_initialisation``: which row writes each adjoint first (and assigns instead of
  accumulating), and which adjoints need zeroing before a reverse sweep;
* ``mark_constant_adjoints``: rows whose output adjoint is a constant of the sweep, whose
  second-order term is a structural zero (``F_CONST_ADJOINT``).

Each is one walk over the rows in reverse-sweep order, compiled: a scalar loop traced for 10⁵ steps
records 10⁵ rows, and these walks are part of recording it.  They read the tape as a :class:`Graph` of
flat arrays (rows' operands, slots' roots and extents), built once per tape.  Tapes of fewer than
``COMPILED_FROM`` rows take the same walks uncompiled (no compiled code to load for a small trace).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba.extending import register_jitable

from . import families
from . import kernels as K
from .jit import jit
from .row_log import RowOperands

COMPILED_FROM = 2000  # rows: below, the walks run as Python (loading compiled code would cost more)

# per opcode: whether its reverse scatters into every active source (a gather's), never assigning
_SCATTERS = np.array([f.scatters for f in families.FAMILY_BY_OPCODE], dtype=np.bool_)
_ACTIVITY = K.F_ACTIVE | K.F_GRAD_A | K.F_GRAD_B | K.F_GRAD_C
# operand k's bits are F_GRAD_A << k and F_INIT_A << k
assert (K.F_GRAD_B, K.F_GRAD_C) == (K.F_GRAD_A << 1, K.F_GRAD_A << 2)
assert (K.F_INIT_B, K.F_INIT_C) == (K.F_INIT_A << 1, K.F_INIT_A << 2)


class Graph(NamedTuple):
    """A tape's rows and slots as flat arrays: what the walks read."""

    row_out: np.ndarray  # per row, its output slot
    operand_start: np.ndarray  # per row (and one past the last), where its operands start in operand_slot
    operand_slot: np.ndarray  # the operands' slot ids, row after row
    root: np.ndarray  # per slot, the slot whose buffer it is (itself, or for a view its parent's root)
    offset: np.ndarray  # per slot
    size: np.ndarray  # per slot
    active: np.ndarray  # per slot: depends on a differentiated input
    active_input: np.ndarray  # per slot: a differentiated input


def graph(slots, row_operands: RowOperands, ins: np.ndarray, row_out=None) -> Graph:
    """The flat arrays of a tape's slots and rows' operands.  ``row_out``: each row's output slot, given
    for a tape just recorded, whose rows' outputs have the extent and activity the rows say (the recorder
    wrote both), so only the other slots (inputs, constants, views) are read one by one; else (a loaded
    tape) read from the slots' origins, and every slot read."""
    n_slots = len(slots)
    if row_out is None:
        row_out = np.full(len(row_operands), -1, dtype=np.int64)
        for sid, s in enumerate(slots):
            if s.origin[0] == "op":
                row_out[s.origin[1]] = sid
        others = range(n_slots)
    else:
        others = np.ones(n_slots, dtype=np.bool_)
        others[row_out] = False
        others = np.flatnonzero(others).tolist()
    offset = np.empty(n_slots, dtype=np.int64)
    size = np.empty(n_slots, dtype=np.int64)
    active = np.empty(n_slots, dtype=np.bool_)
    if len(others) < n_slots:
        offset[row_out] = ins[:, K.C_OUT]
        size[row_out] = ins[:, K.C_N]
        active[row_out] = ins[:, K.C_FLAGS] != 0
    other_slots = [slots[sid] for sid in others]
    offset[others] = [s.offset for s in other_slots]
    size[others] = [s.size for s in other_slots]
    active[others] = [s.active for s in other_slots]
    root = np.arange(n_slots, dtype=np.int64)
    active_input = np.zeros(n_slots, dtype=np.bool_)
    for sid, s in zip(others, other_slots):
        kind = s.origin[0]
        if kind == "view":
            root[sid] = root[s.origin[1]]  # parents are created before their views
        elif kind == "input":
            active_input[sid] = s.active
    return Graph(
        row_out=row_out,
        operand_start=row_operands.start,
        operand_slot=row_operands.slot,
        root=root,
        offset=offset,
        size=size,
        active=active,
        active_input=active_input,
    )


def differentiated_operands(ins: np.ndarray, slots, row_operands):
    """Per row, the (position, slot id) of the operands that carry derivatives (``_differentiated``)."""
    active = [s.active for s in slots]
    return [
        [(k, sid) for k, sid in enumerate(operands) if _differentiated(_SCATTERS[op], flags, k, sid, active)]
        for op, flags, operands in zip(ins[:, K.C_OP].tolist(), ins[:, K.C_FLAGS].tolist(), row_operands)
    ]


def _walk(kernel, ins, *args):
    """Run a walk on the tape's flags (written back into ``ins``): compiled for a long tape."""
    flags = np.ascontiguousarray(ins[:, K.C_FLAGS])
    ops = np.ascontiguousarray(ins[:, K.C_OP])
    run = kernel if ins.shape[0] >= COMPILED_FROM else kernel.py_func
    result = run(ops, flags, _SCATTERS, *args)
    ins[:, K.C_FLAGS] = flags
    return result


def unreached_rows_inactive(g: Graph, ins: np.ndarray, output_slots) -> None:
    """Clear the activity bits of the rows from which no differentiable path leads to an output.

    A value read only by rows whose derivative is zero wherever it exists (``sign(tanh(x))``, a
    comparison) has an adjoint that is a structural zero, as in JAX (its cotangent is symbolic): no
    sweep runs its rule, so 0 x NaN (tanh' at a NaN) never reaches the gradient.  Mutates
    ``ins[:, C_FLAGS]``; runs before the adjoint plan, which then never counts on such a row.
    """
    outputs = np.asarray(output_slots, dtype=np.int64)
    _walk(_unreached, ins, g.row_out, g.operand_start, g.operand_slot, g.root, g.active, outputs)


@register_jitable  # (a plain function too: the uncompiled walks call it as Python)
def _differentiated(scatters, flags, k, sid, active):
    """Whether operand k (slot sid) of a row carries a derivative: by the row's F_GRAD bits, but every
    active source of a gather."""
    if scatters:
        return active[sid]
    return k < 3 and flags & (K.F_GRAD_A << k) != 0


@jit
def _unreached(ops, flags, scatters, row_out, start, operand, root, active, outputs):
    reached = np.zeros(root.size, dtype=np.bool_)
    for sid in outputs:
        reached[root[sid]] = True
    for i in range(ops.size - 1, -1, -1):
        f = flags[i]
        if not f & K.F_ACTIVE:
            continue
        if not reached[root[row_out[i]]]:
            flags[i] = f & ~_ACTIVITY
            continue
        for k in range(start[i + 1] - start[i]):
            sid = operand[start[i] + k]
            if _differentiated(scatters[ops[i]], f, k, sid, active):
                reached[root[sid]] = True


def plan_adjoint_initialisation(g: Graph, ins: np.ndarray, output_slots) -> np.ndarray:
    """Decide which adjoints the reverse sweep assigns instead of accumulating.

    Walks the tape in reverse-sweep order.  The first instruction to write a
    slot's adjoint gets an ``F_INIT_*`` bit and assigns instead of adding, so
    that adjoint needs no zeroing -- or, when it writes only part of the slot
    (an operand that is a view), only the rest needs zeroing.  Adjoints first
    written by a scatter (gather), shared with another operand of the same
    instruction, never written, or seeded by the caller (the outputs) are zeroed
    whole.  Returns the (offset, length) runs to zero before the sweep, sorted and
    merged, as rows of an int64 array; mutates ``ins[:, C_FLAGS]``.
    """
    outputs = np.asarray(output_slots, dtype=np.int64)
    slots = (g.root, g.offset, g.size, g.active_input)
    return _walk(_first_writers, ins, g.row_out, g.operand_start, g.operand_slot, *slots, outputs)


@jit
def _first_writers(ops, flags, scatters, row_out, start, operand, root, offset, size, active_input, outputs):
    n_slots = root.size
    writer_row = np.full(n_slots, -1, dtype=np.int64)  # per root: the row that writes its adjoint first
    writer_operand = np.full(n_slots, -1, dtype=np.int64)  # and the operand it writes (-1: none assigns)
    zero_whole = np.zeros(n_slots, dtype=np.bool_)
    read = active_input.copy()
    for sid in outputs:
        zero_whole[root[sid]] = True  # seeded by the caller
        read[root[sid]] = True
    for i in range(ops.size - 1, -1, -1):
        f = flags[i]
        if not f & K.F_ACTIVE:
            continue
        read[row_out[i]] = True
        gather = scatters[ops[i]]
        first, last = start[i], start[i + 1]
        for k in range(last - first):
            sid = operand[first + k]
            if size[sid] == 0:
                continue  # an empty adjoint needs no initialisation (and the sweeps would write one element)
            r = root[sid]
            if writer_row[r] >= 0:
                continue  # written later in tape order: this instruction accumulates
            if gather or k >= 3:
                writer_row[r] = i
            elif f & (K.F_GRAD_A << k):
                writer_row[r] = i
                covers = offset[sid] == offset[r] and size[sid] == size[r]
                shared = 0
                for j in range(first, last):
                    shared += root[operand[j]] == r
                if covers or shared == 1:  # overlapping views of one slot in one instruction: zeroed whole
                    writer_operand[r] = k
    runs = np.empty((2 * n_slots, 2), dtype=np.int64)
    n = 0
    for r in range(n_slots):  # (in the order of the roots, which is their offsets' for a recorded tape)
        i = writer_row[r]
        k = writer_operand[r]
        if zero_whole[r] or (i < 0 and read[r]) or (i >= 0 and k < 0):
            runs[n, 0], runs[n, 1] = offset[r], size[r]
            n += 1
        elif i >= 0:
            flags[i] |= K.F_INIT_A << k
            part = operand[start[i] + k]
            runs[n, 0], runs[n, 1] = offset[r], offset[part] - offset[r]  # zero only what it leaves out
            runs[n + 1, 0] = offset[part] + size[part]
            runs[n + 1, 1] = offset[r] + size[r] - offset[part] - size[part]
            n += 2
    return _merged(runs[:n])


@register_jitable
def _merged(runs):
    """The runs (offset, length) of positive length, sorted, overlapping or touching ones joined."""
    ordered = True
    for j in range(1, runs.shape[0]):
        if runs[j, 0] < runs[j - 1, 0]:
            ordered = False
            break
    order = np.arange(runs.shape[0]) if ordered else np.argsort(runs[:, 0], kind="mergesort")
    out = np.empty_like(runs)
    n = 0
    for j in order:
        begin, end = runs[j, 0], runs[j, 0] + runs[j, 1]
        if begin == end:
            continue
        if n > 0 and out[n - 1, 0] + out[n - 1, 1] >= begin:
            out[n - 1, 1] = max(out[n - 1, 0] + out[n - 1, 1], end) - out[n - 1, 0]
        else:
            out[n, 0], out[n, 1] = begin, end - begin
            n += 1
    return out[:n]


def mark_constant_adjoints(g: Graph, ins: np.ndarray) -> None:
    """Set ``F_CONST_ADJOINT`` on the rows whose output's adjoint is a constant of the sweep.

    Walking backwards from the outputs (whose seeds are constants), an operand's adjoint varies with
    the differentiated inputs when its consumer's adjoint does, or when the consumer's partial with
    respect to it does: a second partial with an active operand (``K.CURVATURE``) is not structurally
    zero.  Derived, never trusted from a file: a saved bit is cleared and recomputed.
    """
    _walk(_constant_adjoints, ins, g.row_out, g.operand_start, g.operand_slot, g.root, g.active, K.CURVATURE)


@jit
def _constant_adjoints(ops, flags, scatters, row_out, start, operand, root, active, curvature):
    varying = np.zeros(root.size, dtype=np.bool_)  # per root: its adjoint varies
    for i in range(ops.size - 1, -1, -1):
        f = flags[i] & ~K.F_CONST_ADJOINT
        flags[i] = f
        if not f & K.F_ACTIVE:
            continue
        out_varies = row_out[i] >= 0 and varying[root[row_out[i]]]
        if not out_varies:
            flags[i] = f | K.F_CONST_ADJOINT
        first, n = start[i], start[i + 1] - start[i]
        op = ops[i]
        # operands 0 and 1 carry derivatives (m in active)? the CURVATURE entries of (k, m): xx, xy / xy, yy
        d0 = n > 0 and _differentiated(scatters[op], f, 0, operand[first], active)
        d1 = n > 1 and _differentiated(scatters[op], f, 1, operand[first + 1], active)
        for k in range(n):
            sid = operand[first + k]
            if not _differentiated(scatters[op], f, k, sid, active):
                continue
            curved = (k == 0 and ((curvature[op, 0] and d0) or (curvature[op, 1] and d1))) or (
                k == 1 and ((curvature[op, 1] and d0) or (curvature[op, 2] and d1))
            )
            if out_varies or curved:
                varying[root[sid]] = True
