"""Per-tape kernels, the analysis: a tape's rows in blocks, and where each value and adjoint lives.

``fasttape.tape_source`` writes a tape's own compiled sweeps from this plan:

* a **loop** block is a run of consecutive elementwise rows of one length ``n``: one loop over
  ``j`` computes all of them, their values held in locals of the loop body (one pass over memory
  instead of one per row); its reverse is one loop too, which recomputes those values and keeps
  the block's own adjoints in locals.  An operand read from inside the block must be exactly the
  output of an earlier row of the block (a view into the middle of one ends the block);
* a **call** block is one row of any other family, run by that family's compiled kernel;
* a row of one element (the arithmetic of a Python loop) keeps its value and its adjoint in
  locals of the whole function: straight-line code, nothing read from or written to the buffer
  unless a family kernel, a guard or the caller reads it.

A value is *stored* (written to the buffer by the forward) when anything reads it from the buffer:
a family kernel, a guard, the caller, or an elementwise row of another block.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from .layout import BINARY, C_A, C_B, C_N, C_NA, C_NB, C_OP, C_OUT, M_GUARDS, M_NGUARDS, UNARY

ELEMENTWISE = UNARY | BINARY


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
    blocks: list[Block]
    operands: list[tuple[tuple[int, int], ...]]  # per elementwise row: its (offset, size) operands
    block_of: np.ndarray  # per row: the index of its block
    producer: list[int]  # per elementwise row's operand k: the elementwise row whose output it reads, or -1
    stored: np.ndarray  # per row: the forward writes its value to the buffer
    guards: list[tuple[int, bool]]  # (position, outcome) of each recorded branch condition
    outs: list[int]  # per row: its output's offset
    sizes: list[int]  # per row: its output's size
    _starts: list[int]  # the elementwise rows' output offsets, sorted
    _order: list[int]  # the elementwise rows in that order

    def producer_of(self, p: int) -> int:
        """The elementwise row whose output holds position ``p``, or -1."""
        k = bisect.bisect_right(self._starts, p) - 1
        if k >= 0:
            q = self._order[k]
            if p < self.outs[q] + self.sizes[q]:
                return q
        return -1

    def is_local(self, row: int) -> bool:
        """A one-element elementwise row: value and adjoint live in locals of the whole function."""
        return self.sizes[row] == 1 and not self.blocks[self.block_of[row]].is_call

    def reads_local(self, row: int, k: int) -> int:
        """The row whose local the operand k of elementwise ``row`` is (its exact output), else -1."""
        q = self.producer[row][k]
        if q < 0:
            return -1
        p, m = self.operands[row][k]
        if self.is_local(q):
            return q
        same_block = self.block_of[q] == self.block_of[row]
        return q if same_block and p == self.outs[q] and m == self.sizes[q] else -1


def _operands(ins: np.ndarray, i: int) -> tuple[tuple[int, int], ...]:
    op = ins[i, C_OP]
    a = (int(ins[i, C_A]), int(ins[i, C_NA]))
    if UNARY[op]:
        return (a,)
    return (a, (int(ins[i, C_B]), int(ins[i, C_NB])))


def plan_tape(ins: np.ndarray, aux: np.ndarray, family_reads, caller_reads) -> Plan:
    """The blocks of ``ins``.  ``family_reads``: per row, the (offset, size) ranges a family row reads
    (its operand slots); ``caller_reads``: the (offset, size) ranges the caller reads after a sweep."""
    n_rows = ins.shape[0]
    ops = ins[:, C_OP]
    elementwise = ELEMENTWISE[ops] if n_rows else np.zeros(0, dtype=bool)
    outs = ins[:, C_OUT].tolist()
    sizes = ins[:, C_N].tolist()
    # the elementwise rows' outputs, sorted by offset (disjoint): who produced a position
    ew_rows = [i for i in range(n_rows) if elementwise[i]]
    order = sorted(ew_rows, key=lambda i: outs[i])
    guard_start, n_guards = int(aux[M_GUARDS]), int(aux[M_NGUARDS])
    guards = [(int(aux[guard_start + 2 * g]), bool(aux[guard_start + 2 * g + 1])) for g in range(n_guards)]
    plan = Plan([], [()] * n_rows, np.full(n_rows, -1, dtype=np.int64), [()] * n_rows,
                np.zeros(n_rows, dtype=bool), guards, outs, sizes, [outs[i] for i in order], order)  # fmt: skip
    producer_of = plan.producer_of
    operands, producer = plan.operands, plan.producer
    for i in ew_rows:
        operands[i] = _operands(ins, i)
        producer[i] = tuple(producer_of(p) for p, _ in operands[i])

    blocks, block_of = plan.blocks, plan.block_of
    start, n = 0, None  # the open loop block
    for i in range(n_rows):
        if not elementwise[i]:
            if n is not None:
                blocks.append(Block(start, i, n))
                n = None
            blocks.append(Block(i, i + 1, -1))
            continue
        size = sizes[i]
        fits = n == size and all(
            q < start or (p == outs[q] and m == size) for (p, m), q in zip(operands[i], producer[i])
        )
        if not fits:
            if n is not None:
                blocks.append(Block(start, i, n))
            start, n = i, size
    if n is not None:
        blocks.append(Block(start, n_rows, n))
    for b, block in enumerate(blocks):
        block_of[block.start : block.stop] = b

    # stored: read from the buffer by a family row, a guard, the caller or another block's elementwise row
    def store(p: int, m: int):
        q = producer_of(p)
        if q >= 0 and m > 0:
            plan.stored[q] = True

    for i in range(n_rows):
        if elementwise[i]:
            for k, (p, m) in enumerate(operands[i]):
                if plan.reads_local(i, k) < 0:
                    store(p, m)
        else:
            for p, m in family_reads[i]:
                store(p, m)
    for p, _ in guards:
        store(p, 1)
    for p, m in caller_reads:
        store(p, m)
    return plan
