"""What the sweeps may assume about each row's adjoint, decided once per tape from its rows.

* ``unreached_rows_inactive``: rows with no differentiable path to an output run in no sweep
  (their adjoint is JAX's symbolic zero);
* ``plan_adjoint_initialisation``: which row writes each adjoint first (and assigns instead of
  accumulating), and which adjoints need zeroing before a reverse sweep;
* ``mark_constant_adjoints``: rows whose output adjoint is a constant of the sweep, whose
  second-order term is a structural zero (``F_CONST_ADJOINT``).
"""

from __future__ import annotations

import numpy as np

from . import families
from . import kernels as K
from .recorder import Recorder


def _roots(slots) -> list[int]:
    """Per slot, the slot whose buffer it is: itself, or for a view its parent's root."""
    root = list(range(len(slots)))
    for sid, s in enumerate(slots):
        if s.origin[0] == "view":
            root[sid] = root[s.origin[1]]  # parents are created before their views
    return root


def differentiated_operands(ins: np.ndarray, slots, row_operands):
    """Per row, the (position, slot id) of the operands that carry derivatives: by the row's F_GRAD
    bits, but every active source of a gather, whose reverse scatters into its sources by index."""
    scatters = [f.scatters for f in families.FAMILY_BY_OPCODE]
    grad_bits = (K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C)
    out = []
    for op, flags, operands in zip(ins[:, K.C_OP].tolist(), ins[:, K.C_FLAGS].tolist(), row_operands):
        if scatters[op]:
            out.append([(k, sid) for k, sid in enumerate(operands) if slots[sid].active])
        else:
            out.append([(k, sid) for k, sid in enumerate(operands[:3]) if flags & grad_bits[k]])
    return out


def unreached_rows_inactive(rec: Recorder, ins: np.ndarray, output_slots):
    """Clear the activity bits of the rows from which no differentiable path leads to an output.

    A value read only by rows whose derivative is zero wherever it exists (``sign(tanh(x))``, a
    comparison) has an adjoint that is a structural zero, as in JAX (its cotangent is symbolic): no
    sweep runs its rule, so 0 x NaN (tanh' at a NaN) never reaches the gradient.  Mutates
    ``ins[:, C_FLAGS]``; runs before the adjoint plan, which then never counts on such a row.  Returns
    the slots' roots and the rows' differentiated operands, which the later passes reuse (their
    activity is unchanged on every row that stays active, the only rows those passes read).
    """
    slots = rec.slots
    root = _roots(slots)
    reached = {root[sid] for sid in output_slots}
    all_flags = ins[:, K.C_FLAGS].tolist()
    differentiated = differentiated_operands(ins, slots, rec.row_operands)
    activity = K.F_ACTIVE | K.F_GRAD_A | K.F_GRAD_B | K.F_GRAD_C
    for i in range(ins.shape[0] - 1, -1, -1):
        flags = all_flags[i]
        if not flags & K.F_ACTIVE:
            continue
        if root[rec.slots_by_row[i]] not in reached:
            all_flags[i] = flags & ~activity
            continue
        for _, sid in differentiated[i]:
            reached.add(root[sid])
    ins[:, K.C_FLAGS] = all_flags
    return root, differentiated


def plan_adjoint_initialisation(rec: Recorder, ins: np.ndarray, output_slots, root=None) -> list[tuple[int, int]]:
    """Decide which adjoints the reverse sweep assigns instead of accumulating.

    Walks the tape in reverse-sweep order.  The first instruction to write a
    slot's adjoint gets an ``F_INIT_*`` bit and assigns instead of adding, so
    that adjoint needs no zeroing -- or, when it writes only part of the slot
    (an operand that is a view), only the rest needs zeroing.  Adjoints first
    written by a scatter (gather), shared with another operand of the same
    instruction, never written, or seeded by the caller (the outputs) are zeroed
    whole.  Returns the (offset, length) runs to zero before the sweep; mutates
    ``ins[:, C_FLAGS]``.  ``root``: the slots' roots, when already known.
    """
    slots = rec.slots
    root = _roots(slots) if root is None else root
    # per slot, as Python lists (attribute lookups per operand cost more than the walk itself)
    empty = [s.size == 0 for s in slots]
    covers = [s.offset == slots[r].offset and s.size == slots[r].size for s, r in zip(slots, root)]
    grad_bits = (K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C)
    init_bits = (K.F_INIT_A, K.F_INIT_B, K.F_INIT_C)
    first_writer: dict[int, tuple[int, int]] = {}  # root -> (row, operand position or -1)
    zero_whole = {root[sid] for sid in output_slots}  # seeded by the caller
    read = set(zero_whole) | {sid for sid, s in enumerate(slots) if s.origin[0] == "input" and s.active}
    all_flags = ins[:, K.C_FLAGS].tolist()  # Python ints: indexing the array per row costs more than the loop
    opcodes = ins[:, K.C_OP].tolist()
    scatters = [f.scatters for f in families.FAMILY_BY_OPCODE]  # a scatter-add never assigns a first write
    row_operands, slots_by_row = rec.row_operands, rec.slots_by_row
    for i in range(ins.shape[0] - 1, -1, -1):
        flags = all_flags[i]
        if not flags & K.F_ACTIVE:
            continue
        read.add(slots_by_row[i])
        operands = row_operands[i]
        gather = scatters[opcodes[i]]
        for k, sid in enumerate(operands):
            if empty[sid]:
                continue  # an empty adjoint needs no initialisation (and the sweeps would write one element)
            r = root[sid]
            if r in first_writer:
                continue  # written later in tape order: this instruction accumulates
            if gather or k >= 3:
                first_writer[r] = (i, -1)
            elif flags & grad_bits[k]:
                # overlapping views of one slot in the same instruction: zero it whole instead
                shared = not covers[sid] and sum(root[other] == r for other in operands) > 1
                first_writer[r] = (i, -1 if shared else k)
    runs: list[tuple[int, int]] = []
    for r, (i, k) in first_writer.items():
        if r in zero_whole or k < 0:
            zero_whole.add(r)
            continue
        all_flags[i] |= init_bits[k]
        part = slots[row_operands[i][k]]
        whole = slots[r]
        runs.append((whole.offset, part.offset - whole.offset))  # zero only what it leaves out
        runs.append((part.offset + part.size, whole.offset + whole.size - part.offset - part.size))
    ins[:, K.C_FLAGS] = all_flags
    zero_whole |= {r for r in read if r not in first_writer}
    runs += [(slots[r].offset, slots[r].size) for r in zero_whole]
    merged: list[tuple[int, int]] = []
    for offset, size in sorted(run for run in runs if run[1] > 0):
        if merged and merged[-1][0] + merged[-1][1] >= offset:
            end = max(merged[-1][0] + merged[-1][1], offset + size)
            merged[-1] = (merged[-1][0], end - merged[-1][0])
        else:
            merged.append((offset, size))
    return merged


def mark_constant_adjoints(ins: np.ndarray, slots, row_operands, output_slots, known=None) -> None:
    """Set ``F_CONST_ADJOINT`` on the rows whose output's adjoint is a constant of the sweep.

    Walking backwards from the outputs (whose seeds are constants), an operand's adjoint varies with
    the differentiated inputs when its consumer's adjoint does, or when the consumer's partial with
    respect to it does: a second partial with an active operand (``K.CURVATURE``) is not structurally
    zero.  Derived, never trusted from a file: a saved bit is cleared and recomputed.  ``known``: the
    (roots, differentiated operands) that ``unreached_rows_inactive`` returned for this tape, if any.
    """
    root, differentiated = known if known is not None else (_roots(slots), None)
    out_slot = [-1] * ins.shape[0]
    for sid, s in enumerate(slots):
        if s.origin[0] == "op":
            out_slot[s.origin[1]] = sid
    varying = set()  # roots whose adjoint varies
    all_flags = (ins[:, K.C_FLAGS] & ~K.F_CONST_ADJOINT).tolist()
    curvature = K.CURVATURE[ins[:, K.C_OP]].tolist()
    if differentiated is None:
        differentiated = differentiated_operands(ins, slots, row_operands)
    pair = ((0, 1), (1, 2))  # the CURVATURE entry of operands (k, m): xx, xy / xy, yy
    for i in range(ins.shape[0] - 1, -1, -1):
        flags = all_flags[i]
        if not flags & K.F_ACTIVE:
            continue
        out_varies = out_slot[i] >= 0 and root[out_slot[i]] in varying
        if not out_varies:
            all_flags[i] = flags | K.F_CONST_ADJOINT
        active = {k for k, _ in differentiated[i]}
        for k, sid in differentiated[i]:
            if out_varies or (k < 2 and any(curvature[i][pair[k][m]] and m in active for m in range(2))):
                varying.add(root[sid])
    ins[:, K.C_FLAGS] = all_flags
