"""Per-tape kernels, the analysis: a tape's rows in blocks, and where each value and adjoint lives.

``fasttape.tape_source`` writes a tape's own compiled sweeps from this plan:

* a **loop** block is a run of consecutive elementwise rows of one length ``n``: one loop over
  ``j`` computes all of them, their values held in locals of the loop body (one pass over memory
  instead of one per row); its reverse is one loop too, which recomputes those values and keeps
  the block's own adjoints in locals.  An operand read from inside the block must be exactly the
  output of an earlier row of the block (a view into the middle of one ends the block).  A ``sum``
  of all of one such output (outside periods) ends the block as its last row, *fused*: added up in
  the loop, and its adjoint handed to every element in the reverse loop;
* a **call** block is one row of any other family, run by that family's compiled kernel (and a long
  run of a function NumPy computes with SIMD loops, ``LIBRARY``, run by the elementwise family's);
* a row of one element (the arithmetic of a Python loop) keeps its value and its adjoint in
  locals: straight-line code, nothing read from or written to the buffer unless another scope
  reads it;
* a **period** (``fasttape.tape_periods``) is a loop body recorded K times: its first iteration's
  rows (the *body*) are written once, inside a loop over the iterations.

A *scope* is the whole function for rows outside periods, one iteration of its period for the
others.  A value read from another scope, by a family kernel, a guard or the caller is *stored*
(written to the buffer by the forward); an adjoint written from another scope is *carried*: it
lives in the buffer and every write to it follows the tape's adjoint plan (``F_INIT`` assigns,
the rest accumulates), as in the interpreter.  Facts about a body row hold for all its iterations.
"""

from __future__ import annotations

import ast
import bisect
from dataclasses import dataclass, field

import numpy as np

from .layout import (
    BINARY,
    C_A,
    C_B,
    C_FLAGS,
    C_N,
    C_NA,
    C_NB,
    C_OP,
    C_OUT,
    F_ACTIVE,
    F_GRAD_A,
    F_GRAD_B,
    M_GUARDS,
    M_NGUARDS,
    UNARY,
    group,
    opcode,
)
from .primitives import PRIMITIVE_BY_OPCODE
from .runs import VECTOR_BINARY, VECTOR_RUN, VECTOR_UNARY
from .tape_periods import Period, find_periods
from .vector_math import KERNEL_FUNCTIONS

OP_SUM = opcode("sum")

ELEMENTWISE = UNARY | BINARY


_CHEAP_CALLS = {"where", "abs", "sign", "sqrt", "floor", "ceil", "rint", "maximum", "minimum"}  # a few instructions


def _calls_and_power(expr: str) -> tuple[set, bool]:
    """The names a formula calls, and whether it raises to a power."""
    nodes = list(ast.walk(ast.parse(expr or "0", mode="eval")))
    calls = {getattr(node.func, "id", "") for node in nodes if isinstance(node, ast.Call)}
    return calls, any(isinstance(node, ast.Pow) for node in nodes)


def costly(expr: str) -> bool:
    """A formula that calls a library function or raises to a power (tens of cycles per element, or more)."""
    calls, power = _calls_and_power(expr)
    return bool(calls - _CHEAP_CALLS) or power


COSTLY = group(lambda p: p.kind in ("unary", "binary", "comparison") and costly(p.value))


def vectorised(expr: str) -> bool:
    """A formula LLVM vectorises in a generated loop: no power, and no call but cheap ones and the functions
    the kernels write in vector form (fasttape.vector_math)."""
    calls, power = _calls_and_power(expr)
    return calls <= _CHEAP_CALLS | set(KERNEL_FUNCTIONS) and not power


# functions whose long runs NumPy computes with SIMD library loops (the interpreter calls them, fasttape.runs),
# which a generated loop (a scalar libm call per element) cannot match: a row of VECTOR_RUN elements or more
# of one of these runs as a call of the elementwise family, outside loop blocks; those the kernels write in
# vector form (exp, log, tanh...) are loop rows like the others
VECTORISED = group(lambda p: vectorised(p.value))
LIBRARY = (VECTOR_UNARY | VECTOR_BINARY) & ~VECTORISED
# A costly value the reverse reads is kept (stored by the forward), except, in an HVP, a vectorised one (exp,
# log, tanh...) of this many elements or more: beyond the caches, computing it and its tangent again (a few
# nanoseconds per element) costs less than storing and loading both (32 bytes of memory traffic per element).
# lse of 1.28 M: an HVP 14.3 -> 7.3 ms; a gradient, which keeps the value alone, lost 4.5 -> 5.2 ms
RECOMPUTED_FROM = 1 << 20
_GRAD = (F_GRAD_A, F_GRAD_B)


@dataclass(frozen=True)
class Block:
    start: int  # first row
    stop: int  # one past the last row
    n: int  # elements per row of a loop block; -1 for a family call

    @property
    def rows(self) -> range:
        return range(self.start, self.stop)

    @property
    def is_call(self) -> bool:
        return self.n < 0


@dataclass
class Plan:
    ops: list[int]  # per row: its opcode
    outs: list[int]  # per row: its output's offset
    sizes: list[int]  # per row: its output's size
    elementwise: np.ndarray  # per row
    guards: list[tuple[int, bool]]  # (position, outcome) of each recorded branch condition
    periods: list[Period]
    operands: list = field(default_factory=list)  # per elementwise row: its (offset, size) operands
    producer: list = field(default_factory=list)  # per elementwise row's operand: the producing elementwise row, or -1
    blocks: list = field(default_factory=list)
    block_of: np.ndarray = None  # per row: the index of its block
    fused: np.ndarray = None  # per row: a sum added up in its loop block's loop (the block's last row)
    period_of: np.ndarray = None  # per row: the index of its period, or -1
    stored: np.ndarray = None  # per row: the forward writes its value to the buffer
    read_elsewhere: np.ndarray = None  # per row: stored because another scope, a family, a guard or the caller reads it
    # (not only kept: a costly value); a JVP's tangent pass writes only these rows' tangents
    carried: np.ndarray = None  # per row: its adjoint lives in the buffer (see the module docstring)
    caller_reads: list = field(default_factory=list)  # the (offset, size) ranges the caller reads after a sweep
    family_reads: list = field(default_factory=list)  # per row: the (offset, size) ranges a family row reads
    read_sums: set = field(default_factory=set)  # the fused sums whose total a row, a guard or the caller reads
    written_by_call: np.ndarray = None  # per row: its value is in the buffer (``library=False``: see plan_tape)
    _starts: list = field(default_factory=list)  # the elementwise rows' output offsets, sorted
    _order: list = field(default_factory=list)  # the elementwise rows in that order
    _all_starts: list = field(default_factory=list)  # every row's output offset, sorted
    _all_order: list = field(default_factory=list)  # the rows in that order
    _scopes: list = field(default_factory=list)  # per row: scope(row), computed once (the planner asks ~10^5 times)
    _bodies: list = field(default_factory=list)  # per row: body(row)

    def producer_of(self, p: int) -> int:
        """The elementwise row whose output holds position ``p``, or -1."""
        return self._holder(self._starts, self._order, p)

    def row_of(self, p: int) -> int:
        """The row (of any family) whose output holds position ``p``, or -1 (an input or a constant)."""
        return self._holder(self._all_starts, self._all_order, p)

    def pieces(self, p: int, m: int):
        """(offset, size) of the parts of positions p .. p + m that lie in one row's output each (or between
        rows' outputs: inputs, constants), in order."""
        stop = p + m
        while p < stop:
            q = self.row_of(p)
            if q >= 0:
                end = self.outs[q] + self.sizes[q]
            else:
                k = bisect.bisect_right(self._all_starts, p)
                end = self._all_starts[k] if k < len(self._all_starts) else stop
            end = min(end, stop)
            yield p, end - p
            p = end

    def _holder(self, starts, order, p: int) -> int:
        k = bisect.bisect_right(starts, p) - 1
        if k >= 0:
            q = order[k]
            if p < self.outs[q] + self.sizes[q]:
                return q
        return -1

    def period(self, row: int) -> Period | None:
        k = self.period_of[row]
        return self.periods[k] if k >= 0 else None

    def strided(self, row: int, k: int) -> bool:
        """Operand k of a body row moves by the period's stride from one iteration to the next."""
        period = self.period(row)
        return period is not None and period.strided[row - period.start][k]

    def scope(self, row: int) -> tuple:
        """(period, iteration) of ``row``; (-1, 0) outside periods."""
        return self._scopes[row]

    def body(self, row: int) -> int:
        """The row of its period's first iteration that ``row`` repeats (``row`` outside periods)."""
        return self._bodies[row]

    def is_scalar(self, row: int) -> bool:
        """A one-element elementwise row: value and adjoint in locals of its scope."""
        return self.sizes[row] == 1 and bool(self.elementwise[row])

    def value_local(self, row: int, k: int) -> int:
        """The row whose local is operand k of elementwise ``row`` (a body row or a row outside periods;
        the operand its exact output, in the same scope), else -1: read from the buffer."""
        q = self.producer[row][k]
        if q < 0:
            return -1
        p, m = self.operands[row][k]
        if p != self.outs[q] or m != self.sizes[q]:
            return -1
        if self.scope(q) == self.scope(row) and (self.is_scalar(q) or self.block_of[q] == self.block_of[row]):
            return q
        # a one-element value from outside every period, read whole by every iteration: a local of the function
        if self.period_of[q] < 0 and self.is_scalar(q) and not self.strided(row, k):
            return q
        return -1

    def adjoint_local(self, row: int, k: int) -> int:
        """The row whose local adjoint operand k of ``row`` adds to, else -1 (the buffer)."""
        q = self.value_local(row, k)
        return q if q >= 0 and not self.carried[q] and self.scope(q) == self.scope(row) else -1


def _operands(ins: np.ndarray, i: int) -> tuple[tuple[int, int], ...]:
    op = ins[i, C_OP]
    a = (int(ins[i, C_A]), int(ins[i, C_NA]))
    if UNARY[op]:
        return (a,)
    return (a, (int(ins[i, C_B]), int(ins[i, C_NB])))


def plan_tape(
    ins, aux, family_reads, family_writes, caller_reads, seeded=-1, periods=None, library=True, recompute=False
) -> Plan:
    """The plan of ``ins``.  ``family_reads`` / ``family_writes``: per row, the (offset, size) ranges a
    family row reads / whose adjoints its reverse writes; ``caller_reads``: the ranges the caller reads
    after a sweep; ``seeded``: the position whose adjoint the caller seeds (-1: none); ``periods``: the
    periodic regions (found here when None); ``library``: long runs of ``LIBRARY`` functions are family
    calls (else loop rows like the others, their values stored: a JVP's tangent pass, whose forward ran
    them as calls); ``recompute``: long vectorised values are computed again, not kept (``RECOMPUTED_FROM``:
    an HVP's plan)."""
    n_rows = ins.shape[0]
    ops = ins[:, C_OP]
    long_library = LIBRARY[ops] & (ins[:, C_N] >= VECTOR_RUN) if n_rows else np.zeros(0, bool)
    elementwise = ELEMENTWISE[ops] & ~long_library if library else ELEMENTWISE[ops]
    outs = ins[:, C_OUT].tolist()
    sizes = ins[:, C_N].tolist()
    flags = ins[:, C_FLAGS].tolist()
    guard_start, n_guards = int(aux[M_GUARDS]), int(aux[M_NGUARDS])
    guards = [(int(aux[guard_start + 2 * g]), bool(aux[guard_start + 2 * g + 1])) for g in range(n_guards)]
    plan = Plan(ops.tolist(), outs, sizes, elementwise, guards, find_periods(ins) if periods is None else periods)
    ew_rows = [i for i in range(n_rows) if elementwise[i]]
    plan._order = sorted(ew_rows, key=lambda i: outs[i])
    plan._starts = [outs[i] for i in plan._order]
    plan.operands = [()] * n_rows
    plan.producer = [()] * n_rows
    for i in range(n_rows):  # (a LIBRARY row's too: a tangent pass writes its loop, fasttape.tape_source)
        if ELEMENTWISE[ops[i]]:
            plan.operands[i] = _operands(ins, i)
    plan._all_order = sorted(range(n_rows), key=lambda i: (outs[i], sizes[i]))  # (an empty row first)
    plan._all_starts = [outs[i] for i in plan._all_order]
    plan.caller_reads = list(caller_reads)
    plan.family_reads = family_reads
    for i in range(n_rows):
        plan.producer[i] = tuple(plan.producer_of(p) for p, _ in plan.operands[i])
    plan.period_of = np.full(n_rows, -1, dtype=np.int64)
    bodies, iterations = np.arange(n_rows), np.zeros(n_rows, dtype=np.int64)
    breaks = set()  # rows that start a block: every iteration of a period, and the row after it
    for k, period in enumerate(plan.periods):
        plan.period_of[period.start : period.stop] = k
        within = np.arange(period.length * period.count)
        bodies[period.start : period.stop] = period.start + within % period.length
        iterations[period.start : period.stop] = within // period.length
        breaks.update(range(period.start, period.stop + 1, period.length))
    plan._bodies = bodies.tolist()
    plan._scopes = list(zip(plan.period_of.tolist(), iterations.tolist()))
    plan.fused = np.zeros(n_rows, dtype=bool)
    _blocks(plan, breaks, ins)
    _storage(plan, flags, family_reads, family_writes, caller_reads, recompute)
    # values a forward leaves in the buffer whatever this plan stores: a library call's, when it is a loop row
    plan.written_by_call = long_library if not library else np.zeros(n_rows, bool)
    plan.read_sums = _read_sums(plan, family_reads, caller_reads)
    if seeded >= 0 and plan.producer_of(seeded) >= 0:
        plan.carried[plan.body(plan.producer_of(seeded))] = True  # its adjoint starts as the seed, in the buffer
    return plan


def _blocks(plan: Plan, breaks, ins):
    n_rows = len(plan.outs)
    blocks = plan.blocks
    start, n = 0, None  # the open loop block
    for i in range(n_rows):
        if n is not None and n > 1 and _ends_with_sum(plan, ins, i, start, breaks):
            # the sum of a value of the open block: added up in its loop (and its adjoint a local of the reverse)
            plan.fused[i] = True
            plan.operands[i] = (_operands(ins, i)[0],)
            plan.producer[i] = (plan.producer_of(plan.operands[i][0][0]),)
            blocks.append(Block(start, i + 1, n))
            n = None
            continue
        if not plan.elementwise[i]:
            if n is not None:
                blocks.append(Block(start, i, n))
                n = None
            blocks.append(Block(i, i + 1, -1))
            continue
        size = plan.sizes[i]
        fits = (
            n == size
            and i not in breaks
            and all(
                q < start or (p == plan.outs[q] and m == size) for (p, m), q in zip(plan.operands[i], plan.producer[i])
            )
        )
        if not fits:
            if n is not None:
                blocks.append(Block(start, i, n))
            start, n = i, size
    if n is not None:
        blocks.append(Block(start, n_rows, n))
    plan.block_of = np.full(n_rows, -1, dtype=np.int64)
    for b, block in enumerate(blocks):
        plan.block_of[block.start : block.stop] = b


def _ends_with_sum(plan: Plan, ins, i: int, start: int, breaks) -> bool:
    """Row i sums every element of the output of a row of the open loop block (from ``start``), outside
    periods."""
    if plan.ops[i] != OP_SUM or plan.sizes[i] != 1 or i in breaks or plan.period_of[i] >= 0:
        return False
    q = plan.producer_of(int(ins[i, C_A]))
    return start <= q < i and int(ins[i, C_A]) == plan.outs[q] and int(ins[i, C_NA]) == plan.sizes[q]


def _storage(plan: Plan, flags, family_reads, family_writes, caller_reads, recompute):
    """``stored`` and ``carried``, decided on every row (every iteration) and held by the body rows."""
    n_rows = len(plan.outs)
    stored = np.zeros(n_rows, dtype=bool)
    kept = np.zeros(n_rows, dtype=bool)
    carried = np.zeros(n_rows, dtype=bool)
    costly = COSTLY

    def read_from_buffer(p: int, m: int):
        q = plan.producer_of(p)
        if q >= 0 and m > 0:
            stored[plan.body(q)] = True
        return q

    for i in range(n_rows):
        scope = plan.scope(i)
        if plan.elementwise[i] or plan.fused[i]:
            active = flags[i] & F_ACTIVE
            body = plan.body(i)
            for k in range(len(plan.operands[i])):
                q = plan.producer[i][k]
                if q < 0:
                    continue
                # does the body row read its local? (in iteration terms: the same decision for row i)
                local = plan.value_local(body, k) if body != i else plan.value_local(i, k)
                if local < 0:
                    stored[plan.body(q)] = True
                if active and flags[i] & _GRAD[k] and (local < 0 or plan.scope(q) != scope):
                    carried[plan.body(q)] = True
        else:
            for p, m in family_reads[i]:
                read_from_buffer(p, m)
            for p, m in family_writes[i]:
                q = plan.producer_of(p)
                if q >= 0 and m > 0 and plan.scope(q) != scope:
                    carried[plan.body(q)] = True
        # a costly value (a function call, a power) that a reverse would compute again is kept instead
        # (an HVP's long vectorised value is computed again: RECOMPUTED_FROM)
        if plan.elementwise[i] and costly[plan.ops[i]] and (plan.sizes[i] > 1 or plan.period_of[i] >= 0):
            kept[plan.body(i)] = not (recompute and VECTORISED[plan.ops[i]] and plan.sizes[i] >= RECOMPUTED_FROM)
    for p, _ in plan.guards:
        read_from_buffer(p, 1)
    for p, m in caller_reads:
        read_from_buffer(p, m)
    plan.stored, plan.carried, plan.read_elsewhere = stored | kept, carried, stored


def _read_sums(plan: Plan, family_reads, caller_reads) -> set:
    """The fused sums whose one-element total is read after its loop: by a row (elementwise or a family's),
    a guard or the caller.  (A sum that only the caller of a value_and_grad reads is not needed by an
    HVP, whose caller reads the second-order adjoints alone.)"""
    totals = {plan.outs[i]: i for i in np.flatnonzero(plan.fused).tolist()}
    if not totals:
        return set()
    ranges = [r for operands in plan.operands for r in operands] + [r for reads in family_reads for r in reads]
    ranges += [(p, 1) for p, _ in plan.guards] + list(caller_reads)
    return {i for position, i in totals.items() if any(p <= position < p + m for p, m in ranges)}


def slow(expr: str) -> bool:
    """Tens of cycles per element or more: a library call, a power, a square root or a division."""
    nodes = list(ast.walk(ast.parse(expr or "0", mode="eval")))
    return costly(expr) or any(isinstance(n, ast.Div) or getattr(getattr(n, "func", None), "id", "") == "sqrt"
                               for n in nodes)  # fmt: skip


def kept_partials(plan: Plan, ins) -> tuple[dict, int]:
    """The partials that are slow to compute again (sin's cos, sqrt's 1 / 2z; or a product's partial when
    it is the other factor and that factor is a slow value of the same loop, not stored) of the rows of
    more than one element outside periods, which a JVP computes once instead of once per direction:
    (row, operand) -> offset in its scratch array, and the array's size."""
    flags = ins[:, C_FLAGS].tolist()
    partials, size = {}, 0  # (a fact of the plan, like ``stored``: fasttape.tape_source writes the JVP by it)
    for i, operands in enumerate(plan.operands):
        if not operands or plan.fused[i] or plan.sizes[i] < 2 or plan.period_of[i] >= 0 or not flags[i] & F_ACTIVE:
            continue
        prim = PRIMITIVE_BY_OPCODE[plan.ops[i]]
        recomputed = {"z": plan.elementwise[i] and not plan.stored[i] and slow(prim.value)}
        for k, name in enumerate(("x", "y")[: len(operands)]):
            q = plan.value_local(i, k)
            recomputed[name] = q >= 0 and plan.sizes[q] > 1 and not plan.stored[q] and slow(
                PRIMITIVE_BY_OPCODE[plan.ops[q]].value)  # fmt: skip
        for k in range(len(operands)):
            if not flags[i] & _GRAD[k]:
                continue
            named = {n.id for n in ast.walk(ast.parse(prim.d1[k], mode="eval")) if isinstance(n, ast.Name)}
            if slow(prim.d1[k]) or any(recomputed.get(name) for name in named):
                partials[i, k] = size
                size += plan.sizes[i]
    return partials, size
