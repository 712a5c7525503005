"""What the sweeps may assume about each row's adjoint, decided once per tape from its rows.

* ``unreached_rows_inactive``: rows with no differentiable path to an output run in no sweep
  (their adjoint is JAX's symbolic zero);
* ``plan_adjoint_initialisation``: which row writes each adjoint first (and assigns instead of
  accumulating), and which adjoints need zeroing before a reverse sweep;
* ``mark_constant_adjoints``: rows whose output adjoint is a constant of the sweep, whose
  second-order term is a structural zero (``F_CONST_ADJOINT``).

Each pass is array arithmetic over the tape's operand lists, and the two backward walks are
reachability in the graph from a row's output to its differentiated operands (SciPy's breadth-first
search): a tape of 30 000 scalar rows is planned in milliseconds, not a Python loop per row.  The
walks need no order: a row's operands are older than its output, so what reaches an output never
comes from a later row.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np

from . import families
from . import kernels as K
from .recorder import Recorder

_GRAD_BITS = np.array([K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C], dtype=np.int64)
_INIT_BITS = np.array([K.F_INIT_A, K.F_INIT_B, K.F_INIT_C], dtype=np.int64)
_SLOT_FIELDS = operator.attrgetter("offset", "size", "active", "origin")
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_SCATTERS = np.array([f.scatters for f in families.FAMILY_BY_OPCODE], dtype=bool)  # reverse scatters by index


class _Operands:
    """A tape's slots and operand lists as arrays: per slot its offset, size, activity, root (the slot
    whose buffer it is: itself, or for a view its parent's root) and writing row; per operand entry
    its row, position in the row and slot."""

    def __init__(self, slots, row_operands, n_rows):
        n = len(slots)
        fields = list(map(_SLOT_FIELDS, slots))  # (C-level gets: a Python loop per slot costs more than the pass)
        offset, size, active, origins = zip(*fields) if fields else ((), (), (), ())
        self.offset = np.array(offset, dtype=np.int64)
        self.size = np.array(size, dtype=np.int64)
        self.active = np.array(active, dtype=bool)
        kinds = np.array(list(map(_FIRST, origins)))
        links = list(map(_SECOND, origins))  # a view's parent, an op's row (a name or a constant otherwise)
        is_view, is_op = kinds == "view", kinds == "op"
        linked = np.flatnonzero(is_view | is_op)
        link = np.array([links[i] for i in linked.tolist()], dtype=np.int64)
        parent = np.arange(n, dtype=np.int64)
        parent[linked[is_view[linked]]] = link[is_view[linked]]
        root = parent
        while True:  # (views of views: parents are older, so this ends)
            deeper = root[root]
            if np.array_equal(deeper, root):
                break
            root = deeper
        self.root = root
        self.is_input = kinds == "input"
        self.out_slot = np.full(n_rows, -1, dtype=np.int64)  # per row, the slot it writes
        ops = is_op[linked]
        self.out_slot[link[ops]] = linked[ops]
        counts = np.fromiter(map(len, row_operands), np.int64, n_rows)
        self.row = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
        starts = np.cumsum(counts) - counts
        self.position = np.arange(self.row.size, dtype=np.int64) - np.repeat(starts, counts)
        self.slot = np.fromiter(itertools.chain.from_iterable(row_operands), np.int64, self.row.size)

    def differentiated(self, flags, opcodes):
        """Per operand entry, whether it carries a derivative: by the row's F_GRAD bits, but every active
        source of a gather, whose reverse scatters into its sources by index."""
        scatters = _SCATTERS[opcodes][self.row]
        bit = _GRAD_BITS[np.minimum(self.position, 2)]
        by_bits = (self.position < 3) & ((flags[self.row] & bit) != 0)
        return np.where(scatters, self.active[self.slot], by_bits)


def _reachable(n_nodes, sources, targets, starts) -> np.ndarray:
    """Per node, whether a path of edges (sources[e] -> targets[e]) leads to it from one of ``starts``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order

    hub = n_nodes  # one extra node with an edge to every start
    starts = np.unique(np.asarray(starts, dtype=np.int64))
    src = np.concatenate([sources, np.full(starts.size, hub, dtype=np.int64)])
    dst = np.concatenate([targets, starts])
    graph = csr_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n_nodes + 1, n_nodes + 1))
    reached = np.zeros(n_nodes + 1, dtype=bool)
    reached[breadth_first_order(graph, hub, directed=True, return_predecessors=False)] = True
    return reached[:n_nodes]


def _flow_edges(ops: _Operands, flags, opcodes):
    """(entries that carry a derivative in an active row, edges from each such row's output root to the
    entry's root)."""
    carried = ops.differentiated(flags, opcodes) & ((flags[ops.row] & K.F_ACTIVE) != 0)
    out_root = ops.root[np.maximum(ops.out_slot, 0)]
    entries = np.flatnonzero(carried & (ops.out_slot[ops.row] >= 0))
    return carried, out_root[ops.row[entries]], ops.root[ops.slot[entries]]


def operands(slots, row_operands, n_rows) -> _Operands:
    """The arrays the passes share (built once per tape, passed to each as ``ops``)."""
    return _Operands(slots, row_operands, n_rows)


def unreached_rows_inactive(rec: Recorder, ins: np.ndarray, output_slots, ops=None) -> None:
    """Clear the activity bits of the rows from which no differentiable path leads to an output.

    A value read only by rows whose derivative is zero wherever it exists (``sign(tanh(x))``, a
    comparison) has an adjoint that is a structural zero, as in JAX (its cotangent is symbolic): no
    sweep runs its rule, so 0 x NaN (tanh' at a NaN) never reaches the gradient.  Mutates
    ``ins[:, C_FLAGS]``; runs before the adjoint plan, which then never counts on such a row.
    """
    ops = ops or _Operands(rec.slots, rec.row_operands, ins.shape[0])
    flags = ins[:, K.C_FLAGS]
    _, sources, targets = _flow_edges(ops, flags, ins[:, K.C_OP])
    reached = _reachable(len(rec.slots), sources, targets, ops.root[np.asarray(output_slots, dtype=np.int64)])
    out = ops.out_slot
    unreached = ((flags & K.F_ACTIVE) != 0) & ((out < 0) | ~reached[ops.root[np.maximum(out, 0)]])
    activity = K.F_ACTIVE | K.F_GRAD_A | K.F_GRAD_B | K.F_GRAD_C
    ins[unreached, K.C_FLAGS] = flags[unreached] & ~activity


def plan_adjoint_initialisation(rec: Recorder, ins: np.ndarray, output_slots, ops=None) -> list[tuple[int, int]]:
    """Decide which adjoints the reverse sweep assigns instead of accumulating.

    In reverse-sweep order, the first instruction to write a slot's adjoint gets an ``F_INIT_*``
    bit and assigns instead of adding, so that adjoint needs no zeroing -- or, when it writes only
    part of the slot (an operand that is a view), only the rest needs zeroing.  Adjoints first
    written by a scatter (gather), shared with another operand of the same instruction, never
    written, or seeded by the caller (the outputs) are zeroed whole.  Returns the (offset, length)
    runs to zero before the sweep; mutates ``ins[:, C_FLAGS]``.
    """
    slots = rec.slots
    ops = ops or _Operands(slots, rec.row_operands, ins.shape[0])
    flags = ins[:, K.C_FLAGS].copy()
    opcodes = ins[:, K.C_OP]
    row, position, slot, root = ops.row, ops.position, ops.slot, ops.root
    active_row = (flags & K.F_ACTIVE) != 0
    scatter_row = _SCATTERS[opcodes]
    entry_root = root[slot]
    # the entries that write an adjoint: a scatter's operands and those past the third accumulate by
    # index (never a first write that assigns); the others when the row differentiates them
    whole_only = scatter_row[row] | (position >= 3)
    by_bits = (position < 3) & ((flags[row] & _GRAD_BITS[np.minimum(position, 2)]) != 0)
    writes = active_row[row] & (ops.size[slot] > 0) & (whole_only | by_bits)
    candidates = np.flatnonzero(writes)
    # per root, its first writer in reverse order: the latest row, and in it the first position
    order = np.lexsort((position[candidates], -row[candidates], entry_root[candidates]))
    ranked = candidates[order]
    first = ranked[np.r_[True, entry_root[ranked][1:] != entry_root[ranked][:-1]]] if ranked.size else ranked
    first_root = entry_root[first]
    # overlapping views of one slot in the same instruction: zero it whole instead
    pair_keys = row * (len(slots) + 1) + entry_root
    keys, counts = np.unique(pair_keys, return_counts=True)
    sharing = counts[np.searchsorted(keys, pair_keys[first])] > 1
    covers = (ops.offset[slot[first]] == ops.offset[first_root]) & (ops.size[slot[first]] == ops.size[first_root])
    output_roots = np.unique(root[np.asarray(output_slots, dtype=np.int64)])
    assigns = ~whole_only[first] & ~(sharing & ~covers) & ~np.isin(first_root, output_roots)
    assigning = first[assigns]
    np.bitwise_or.at(flags, row[assigning], _INIT_BITS[position[assigning]])
    ins[:, K.C_FLAGS] = flags
    # what the assigning writes leave out of their slot's buffer, then every adjoint zeroed whole: the
    # outputs (seeded by the caller), those first written by accumulation, and those read but never written
    part_start, part_size = ops.offset[slot[assigning]], ops.size[slot[assigning]]
    whole_start, whole_size = ops.offset[root[slot[assigning]]], ops.size[root[slot[assigning]]]
    read = np.zeros(len(slots), dtype=bool)
    read[output_roots] = True
    read[ops.is_input & ops.active] = True
    written_by_active = ops.out_slot[active_row]
    read[written_by_active[written_by_active >= 0]] = True
    read[first_root] = False
    zero_whole = np.union1d(np.union1d(first_root[~assigns], output_roots), np.flatnonzero(read))
    starts = np.concatenate([whole_start, part_start + part_size, ops.offset[zero_whole]])
    ends = np.concatenate([part_start, whole_start + whole_size, ops.offset[zero_whole] + ops.size[zero_whole]])
    return _merged_runs(starts, ends)


def _merged_runs(starts, ends) -> list[tuple[int, int]]:
    """The (offset, length) runs covering the non-empty [start, end) intervals, merged where they touch."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if not starts.size:
        return []
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    new_run = np.r_[True, starts[1:] > reach[:-1]]
    run_starts = starts[new_run]
    run_ends = reach[np.r_[np.flatnonzero(new_run)[1:] - 1, starts.size - 1]]
    return list(zip(run_starts.tolist(), (run_ends - run_starts).tolist()))


def mark_constant_adjoints(ins: np.ndarray, slots, row_operands, output_slots, ops=None) -> None:
    """Set ``F_CONST_ADJOINT`` on the rows whose output's adjoint is a constant of the sweep.

    Walking backwards from the outputs (whose seeds are constants), an operand's adjoint varies with
    the differentiated inputs when its consumer's adjoint does, or when the consumer's partial with
    respect to it does: a second partial with an active operand (``K.CURVATURE``) is not structurally
    zero.  Derived, never trusted from a file: a saved bit is cleared and recomputed.
    """
    n_rows = ins.shape[0]
    ops = ops or _Operands(slots, row_operands, n_rows)
    flags = ins[:, K.C_FLAGS] & ~K.F_CONST_ADJOINT
    opcodes = ins[:, K.C_OP]
    carried, sources, targets = _flow_edges(ops, flags, opcodes)
    # per row, whether its first and second operands carry derivatives
    carries = np.zeros((n_rows, 2), dtype=bool)
    low = carried & (ops.position < 2)
    carries[ops.row[low], ops.position[low]] = True
    curvature = K.CURVATURE[opcodes]  # xx, xy, yy
    c_row, k = ops.row[low], ops.position[low]
    # operand k's partial varies with operand m when their second partial is not zero and m carries a derivative
    seeds = (curvature[c_row, k] & carries[c_row, 0]) | (curvature[c_row, k + 1] & carries[c_row, 1])
    varying = _reachable(len(slots), sources, targets, ops.root[ops.slot[np.flatnonzero(low)[seeds]]])
    out = ops.out_slot
    out_varies = (out >= 0) & varying[ops.root[np.maximum(out, 0)]]
    constant = ((flags & K.F_ACTIVE) != 0) & ~out_varies
    ins[:, K.C_FLAGS] = np.where(constant, flags | K.F_CONST_ADJOINT, flags)
