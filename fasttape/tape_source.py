"""Per-tape kernels, the code: the writer of a tape's own sweeps as Numba source.

From a ``fasttape.tape_plan.Plan`` the writer (``_Writer``) writes the bodies of a tape's ``forward``,
``value_and_grad``, ``jvp`` and ``hvp``; ``fasttape.tape_modules`` puts them into the two generated modules.
Every offset, length and flag of the tape is a constant of
the source, so there is no dispatch per instruction: an elementwise row is its declaration's
formula written out, a loop block one ``for j`` loop, a one-element row a line of straight-line
code on locals, a period one loop over its iterations (offsets ``+ base``), and every other row a
call of its family's compiled kernel by address (``fasttape.kernel_calls``).  The rules are the
declarations' and the families' own; nothing is restated.

The reverse follows the tape's adjoint plan (``fasttape.adjoint_plan``): the same runs are zeroed
and a row with ``F_INIT`` assigns, except where a loop block writes one adjoint through two
different views.  Views a few elements apart (``x[1:]`` and ``x[:-1]``, outside periods) are
written one element per iteration from delay lines (``shifted_views``), assigned when one of them
is the adjoint's first write; other overlapping views: the assigning view is zeroed before the
loop and accumulates, since the loop interleaves the two.  Adjoints kept in locals reach the
buffer just before a family kernel adds to them.  A loop that adds up sums (a fused ``sum``, a
scalar operand's adjoint) adds to them with ``generated_loops.sum_add``, an addition (and nothing
else) that LLVM may reassociate, so that it vectorises them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numba
import numpy as np

from . import kernel_calls
from .codegen import scalar
from .families import FAMILY_BY_OPCODE
from .gather_copies import GatherCopies
from .generated_loops import indent as _indent
from .generated_loops import loop as _loop
from .generated_loops import sum_add
from .input_refs import MATMUL, product_call, reads_reference, reference
from .kernel_pipeline import LeanPipeline
from .layout import (
    C_A,
    C_B,
    C_FLAGS,
    C_OP,
    CURVATURE,
    F_ACTIVE,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    M_NZEROS,
    M_ZEROS,
)
from .primitives import PRIMITIVE_BY_OPCODE
from .runs import second_terms
from .tangent_pass import TangentPass, direct_results
from .tape_plan import Plan

_GRAD = (F_GRAD_A, F_GRAD_B)
_INIT = (F_INIT_A, F_INIT_B)
_NAMES = ("x", "y")
# the arrays' names in the generated code ("tan" is a formula's function): adjoints live in buf[N + p]
_ARRAYS = {"adj": "buf", "tan": "tangents"}
# adjoint runs to zero written as one loop over a table of (offset, length) from this many on: each loop
# written out is a few basic blocks, and Numba's control-flow analysis recurses once per block (an ODE's
# HVP zeroed 600 runs, past Python's recursion limit)
ZERO_TABLE_MIN = 8
MERGE_MAX = 2**17  # a value_and_grad's last fused-sum block of at most this many elements is one pass
MAX_SHIFT = 4  # views of one adjoint at most this many elements apart are written one element per iteration


# what the generated module finds besides the declarations' vocabulary
HELPERS = {
    # runs.second_terms compiled and called, not inlined by Numba: its IR copied and typed at every call took 3
    # of a GMM HVP kernel's 11 s of compilation; LLVM inlines the call and folds the constant flags
    "second_terms": numba.njit(nogil=True, error_model="numpy", cache=False)(second_terms.py_func),
    "sum_add": sum_add,
    "unsigned": np.uint64,
    "LeanPipeline": LeanPipeline,
}


@dataclass
class _Plane:
    """One order of adjoints in the reverse: its local names and its array.  The first order's live in
    ``buf[N + p]`` (``g``: a one-element row's pending local, ``h``: a loop block's, ``t``: a row's
    total, ``s``: a scalar operand's sum over a loop); the second order's (forward-over-reverse) in
    ``adj2[p]``, named ``gg``, ``hh``, ``tt``, ``ss``."""

    g: str
    h: str
    t: str
    s: str
    array: str
    pending: set = field(default_factory=set)  # rows whose local ``g`` holds contributions
    in_buf: set = field(default_factory=set)  # non-carried rows whose buffer entry holds contributions


class _Writer(TangentPass, GatherCopies):
    def __init__(self, plan: Plan, ins, aux, n_values: int, written, out: int, second: bool = False,
                 tangent_pass: bool = False, partials=None, hv_only: bool = False):  # fmt: skip
        self.plan = plan
        # an HVP whose caller reads H v alone: the first-order adjoints of inputs (the gradient) are read by
        # nothing, so they are not written (a family kernel's reverse may still add to them)
        self.hv_only = hv_only
        self.aux = aux
        self.N = n_values
        self.written = written  # per family row: the (offset, size) operand ranges its reverse writes
        self.out = out
        self.second = second or tangent_pass  # tangents in the forward (forward-over-reverse: a second plane)
        # a JVP's tangent pass, one direction at a time after the forward: values read back or computed
        # again (as a reverse does), only tangents written
        self.tangent_pass = tangent_pass
        self.inputs: dict = {}  # (offset, size) of a differentiated input range -> its flag in a tangent pass
        self.partials = partials or {}  # (row, operand) -> offset in ``part`` of a JVP's kept costly partials
        self.tables: dict = {}  # module-level int64 tables (see ``zero_runs``): their rows -> name
        self.shifted: dict = {}  # in a reverse loop: (offset, size) of an adjoint view -> (group, shift)
        self.groups: dict = {}  # group -> (first offset, largest shift, assigns)
        # in a JVP's tangent pass, a loop written in variants (``variants``): the skipped blocks whose
        # tangents it leaves out, and those it reads as they are
        self.dead: set = set()
        self.live: set = set()
        self.zeroed: set = set()  # the tangent locals of such a variant that no term is left in
        self.ins = ins
        self.merged = None  # a value_and_grad's last block, computed by its reverse loop alone (merge_last_block)
        # a JVP's tangent pass: the rows whose whole output the caller alone reads -> their place in results
        self.direct = direct_results(plan) if tangent_pass else {}
        self.flags = ins[:, C_FLAGS].tolist()
        self.ops = ins[:, C_OP].tolist()
        self.families: set = set()
        self.calls = 0  # family kernel calls written so far
        self.refs: dict = {}  # argument -> (offset, size): read where the caller holds it (fasttape.input_refs)
        self.tangent_refs: dict = {}  # (an HVP's) the same for the argument's tangents, the direction

    # -- positions ---------------------------------------------------------
    def at(self, row: int, p: int, k: int | None, loop: bool, array: str = "buf") -> str:
        """``array[...]`` of position ``p`` read or written by ``row`` (operand ``k``, or its output for
        None): ``+ base`` where it moves with a period's iterations, ``+ j`` along a loop block.
        ``array``: "buf" (values), "adj" (first-order adjoints, buf[N + p]), "tan" or "adj2"."""
        refs = self.refs if array == "buf" else self.tangent_refs if array == "tan" else None
        if refs:
            ref = reference(refs, p, "in" if array == "buf" else "tn")
            if ref is not None:  # (never one that moves: input_refs.by_reference)
                return f"{ref[0]}[{ref[1]}{' + j' if loop else ''}]"
        index = str(self.N + p if array == "adj" else p)
        if self.plan.period(row) is not None and (k is None or self.plan.strided(row, k)):  # (it moves)
            index += " + base"
        if loop:
            index += " + j"
        return f"{_ARRAYS.get(array, array)}[{index}]"

    # -- values ------------------------------------------------------------
    def operand(self, i: int, k: int, loop: bool, array: str = "buf") -> str:
        """The value (or tangent) of operand k of elementwise row i: a local, or a read of the buffer."""
        q = self.plan.value_local(i, k)
        if q >= 0:
            return f"{'v' if array == 'buf' else 'u'}{q}"
        p, m = self.plan.operands[i][k]
        return self.at(i, p, k, loop and m > 1, array)

    def names(self, i: int, loop: bool) -> dict:
        names = {"z": f"v{i}"}
        for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            names[name] = f"{name}{i}" if _read(src) else src
        return names

    def value_lines(self, i: int, loop: bool, again: bool = False) -> list[str]:
        """``v{i} = formula`` with its operands loaded (buffer reads into locals first); in a
        forward-over-reverse kernel also its tangent ``u{i}`` when the row is active.  ``again``: in a
        reverse, which reads a stored value (and tangent) back instead of computing it again."""
        lines = []
        if self.plan.fused[i]:  # (a sum of the block: its total is written after the loop)
            return lines
        active = self.second and self.flags[i] & F_ACTIVE
        if again and (self.plan.stored[i] or not self.plan.elementwise[i] or self.plan.written_by_call[i]):
            # (a family, or the forward's library call, wrote the latter two)
            lines.append(f"v{i} = {self.at(i, self.plan.outs[i], None, loop)}")
            if active and not self.tangent_pass:
                lines.append(f"u{i} = {self.at(i, self.plan.outs[i], None, loop, 'tan')}")
            # (the operands as the formulas below name them)
            for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
                src = self.operand(i, k, loop)
                if _read(src):
                    lines.append(f"{name}{i} = {src}")
            return lines + (self.tangent_line(i, loop) if active and self.tangent_pass else [])
        for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            if _read(src):
                lines.append(f"{name}{i} = {src}")
        prim = PRIMITIVE_BY_OPCODE[self.ops[i]]
        lines.append(f"v{i} = {scalar(prim.value, self.names(i, loop))}")
        return lines + (self.tangent_line(i, loop) if active else [])

    def tangent_line(self, i: int, loop: bool) -> list[str]:
        """``u{i} = f_x x' + f_y y'`` over the differentiated operands (their values loaded as
        ``value_lines`` loads them)."""
        prim = PRIMITIVE_BY_OPCODE[self.ops[i]]
        names = self.names(i, loop)
        terms = []
        for k in range(len(self.plan.operands[i])):
            if not self.flags[i] & _GRAD[k]:
                continue
            tangent = self.operand(i, k, loop, "tan")
            if tangent in self.zeroed:  # (a local left without terms in this variant)
                continue
            live = self.live_source(i, self.plan.operands[i][k][0]) if self.tangent_pass else None
            if live in self.dead:  # (a variant of a loop for the directions where that block was skipped)
                continue
            if live not in (None, "input", "same", *self.live) and tangent.startswith("tangents"):  # (maybe skipped)
                if loop:  # read from the zeros instead (an array chosen before the loop: no branch in it)
                    terms.append(f"{live.replace('l', 'g')} = tangents if {live} else zeros")
                    tangent = tangent.replace("tangents[", f"{live.replace('l', 'g')}[", 1)
                else:
                    tangent = f"({tangent} if {live} else 0.0)"
            offset = self.partials.get((i, k))
            partial = f"part[{offset}{' + j' if loop else ''}]" if offset is not None else scalar(prim.d1[k], names)
            terms.append(f"({partial}) * {tangent}")
        chosen = [term for term in terms if " else zeros" in term]
        terms = [term for term in terms if " else zeros" not in term]
        if not terms and self.dead:
            self.zeroed.add(f"u{i}")
        return chosen + [f"u{i} = {' + '.join(terms) or '0.0'}"]

    def call_lines(self, i: int, sweep: str, args: str) -> list[str]:
        """A family row's sweep (``GatherCopies.call_lines``), or a product by the matmul family's kernels of
        operands anywhere (``direct_product``)."""
        if self.direct_product(i, sweep):
            self.families.add(FAMILY_BY_OPCODE[self.ops[i]])
            self.calls += 1
            a, b = int(self.ins[i, C_A]), int(self.ins[i, C_B])
            first = (not self.unread(a, "adj"), not self.unread(b, "adj"))
            flat = bool(self.flags[i] & F_CONST_ADJOINT)
            return [product_call(self.refs, self.ins, i, sweep, first, flat) + "  # matmul"]
        return GatherCopies.call_lines(self, i, sweep, args)

    def direct_product(self, i: int, sweep: str) -> bool:
        """Whether row i's ``sweep`` calls ``families.matmul.DIRECT``: a product outside periods that reads an
        argument in place (fasttape.input_refs), or any product of an HVP outside periods (whose kernels leave
        out the first-order adjoints of inputs, which nothing reads, and read operands in place)."""
        if FAMILY_BY_OPCODE[self.ops[i]] is not MATMUL or self.plan.period(i) is not None:
            return False
        if self.second and not self.tangent_pass:
            return sweep in ("forward", "tangent", "second")
        return bool(self.refs) and sweep in ("forward", "reverse") and reads_reference(self.refs, i, self.plan)

    def call(self, i: int, sweep: str, args: str) -> str:
        family = FAMILY_BY_OPCODE[self.ops[i]]
        self.families.add(family)
        self.calls += 1
        row = f"r0 + {i}" + (" + rb" if self.plan.period(i) is not None else "")
        # by address (fasttape.kernel_calls); the row a run-time int, as the kernel was compiled for
        address = f"fns[{kernel_calls.slot(family, sweep)}]"
        return f"call_{sweep}({address}, {args.format(i=row)})  # {PRIMITIVE_BY_OPCODE[self.ops[i]].name}"

    def items(self):
        """The blocks outside periods and the periods, in row order."""
        plan, b = self.plan, 0
        while b < len(plan.blocks):
            block = plan.blocks[b]
            period = plan.period(block.start)
            if period is None:
                yield block
                b += 1
                continue
            body = []
            while b < len(plan.blocks) and plan.blocks[b].start < period.stop:
                if plan.blocks[b].start < period.start + period.length:
                    body.append(plan.blocks[b])
                b += 1
            yield period, body

    @staticmethod
    def period_loop(period, reverse: bool) -> list[str]:
        count = period.count
        iterations = f"range({count} - 1, -1, -1)" if reverse else f"range({count})"
        return [f"for it in {iterations}:", f"    base = it * {period.stride}", f"    rb = it * {period.length}"]

    def forward(self) -> list[str]:
        """The forward sweep (with tangents when ``second``); a tangent pass: the tangents alone."""
        out = []
        for item in self.items():
            block_lines = self.tangent_block if self.tangent_pass else self.forward_block
            if isinstance(item, tuple):
                period, body = item
                out += self.period_loop(period, reverse=False)
                out += _indent([line for block in body for line in block_lines(block, in_period=True)])
            else:
                out += block_lines(item, in_period=False)
        if self.tangent_pass:
            out = self.input_flags() + out + self.zero_dead_results()
        else:
            for p, outcome in self.plan.guards:
                out += [f"if (buf[{p}] != 0.0) != {outcome}:", "    return False"]
        return out

    def merge_last_block(self):
        """A value_and_grad whose output is the fused sum ending the tape's last loop block, outside periods:
        that block's forward is left out and its reverse loop, the first of the reverse and seeded with 1
        before it, computes its values (which it would otherwise read back or compute again) and adds up the
        sum, so the block is one pass over memory instead of two.  Not when a guard or the caller reads
        another of its values, nor for more than ``MERGE_MAX`` elements (the loop's sums are not added up
        in chunks: LLVM's vectorised sum keeps a few dozen partial sums, each of up to n / 32 terms)."""
        plan = self.plan
        if self.second or self.tangent_pass or not plan.blocks:
            return
        block, last = plan.blocks[-1], len(plan.outs) - 1
        if block.is_call or not 1 < block.n <= MERGE_MAX or block.stop != len(plan.outs) or plan.period_of[last] >= 0:
            return
        if not plan.fused[last] or plan.outs[last] != self.out or not self.flags[last] & F_ACTIVE:
            return
        values = [(plan.outs[i], plan.sizes[i]) for i in block.rows[:-1]]
        read = [(p, 1) for p, _ in plan.guards] + [r for r in plan.caller_reads if r != (self.out, 1)]
        if any(a < p + m and p < a + n for a, n in values for p, m in read):
            return
        self.merged = block

    def forward_block(self, block, in_period: bool = False) -> list[str]:
        if block is self.merged:
            return []
        i = block.start
        active = self.second and self.flags[i] & F_ACTIVE
        if block.is_call and self.tangent_pass and self.plan.operands[i]:
            # an elementwise row run by its family (LIBRARY): its tangent is a loop on its stored value
            if not active:
                return []
            body = self.value_lines(i, True, again=True)
            body.append(f"{self.at(i, self.plan.outs[i], None, True, 'tan')} = u{i}")
            return _loop(self.plan.sizes[i], body)
        if block.is_call:
            tangent_call = self.call_lines(i, "tangent", "ins, {i}, aux, buf, tangents, N, r0 + 1")
            if self.tangent_pass:
                return tangent_call if active else []
            lines = self.call_lines(i, "forward", "ins, {i}, aux, buf") + (tangent_call if active else [])
            kept = [line for k in range(len(self.plan.operands[i])) for line in self.keep_partial(i, k, True)]
            if kept:  # a JVP's forward keeps the costly partials of a LIBRARY row for every direction
                lines += _loop(self.plan.sizes[i], self.value_lines(i, True, again=True) + kept)
            return lines
        loop = block.n > 1
        body, before, after = [], [], []
        writes = False  # does the loop write anything (a value, a tangent, a kept partial)?
        for i in block.rows:
            active = self.second and self.flags[i] & F_ACTIVE
            if self.plan.fused[i]:  # a sum: added up in the loop (unless nothing reads it: an HVP's output)
                needed = i in self.plan.read_sums
                for total, array, operand, on in (("acc", "buf", "buf", not self.tangent_pass),
                                                  ("uacc", "tan", "tan", active)):  # fmt: skip
                    if on and needed:
                        before.append(f"{total}{i} = 0.0")
                        body.append(f"{total}{i} += {self.operand(i, 0, loop, operand)}")
                        after.append(f"{self.at(i, self.plan.outs[i], None, False, array)} = {total}{i}")
                continue
            if not self.tangent_pass:
                body += self.value_lines(i, loop)
                if self.plan.stored[i]:
                    body.append(f"{self.at(i, self.plan.outs[i], None, loop)} = v{i}")
                kept = [line for k in range(len(self.plan.operands[i])) for line in self.keep_partial(i, k, loop)]
                body += kept
                writes = writes or bool(self.plan.stored[i] or kept)
            elif loop or in_period:  # values read back or computed again, as a reverse does
                body += self.value_lines(i, loop, again=True)
            elif active:  # a one-element value outside periods: still the forward's local
                body += self.tangent_line(i, loop)
            if active and (self.plan.read_elsewhere if self.tangent_pass else self.plan.stored)[i]:
                target = self.at(i, self.plan.outs[i], None, loop, "tan")
                if i in self.direct:  # (read by the caller alone: to its results, not through the plane)
                    target = f"results[dR + {self.direct[i]}{' + j' if loop else ''}]"
                body.append(f"{target} = u{i}")
                writes = True
        if block.n == 0 or (self.tangent_pass and not any(self.flags[i] & F_ACTIVE for i in block.rows)):
            return []
        if not loop:
            return body
        totals = [line.split(" = ")[0] for line in before]
        if not totals and not writes:
            return []  # (values the reverse computes again, nothing kept: an HVP's loop ending in its output)
        return before + _loop(block.n, body, totals) + after

    def keep_partial(self, i: int, k: int, loop: bool) -> list[str]:
        """``part[...] = f_x``: a costly partial a JVP's forward keeps for every direction's tangent pass."""
        offset = self.partials.get((i, k))
        if offset is None:
            return []
        formula = scalar(PRIMITIVE_BY_OPCODE[self.ops[i]].d1[k], self.names(i, loop))
        return [f"part[{offset}{' + j' if loop else ''}] = {formula}"]

    # -- adjoints ------------------------------------------------------------
    def reverse(self) -> list[str]:
        out = []
        zeros, n_zeros = int(self.aux[M_ZEROS]), int(self.aux[M_NZEROS])
        runs = [(int(self.aux[zeros + 2 * z]), int(self.aux[zeros + 2 * z + 1])) for z in range(n_zeros)]
        for array in ("adj", "adj2") if self.second else ("adj",):
            out += self.zero_runs([part for run in runs for part in self.read_parts(*run, array)], array)
        out.append(f"buf[{self.N + self.out}] = 1.0")
        self.planes = [_Plane("g", "h", "t", "s", "adj")]
        if self.second:
            self.planes.append(_Plane("gg", "hh", "tt", "ss", "adj2"))
        for item in reversed(list(self.items())):
            if isinstance(item, tuple):
                period, body = item
                lines = [line for block in body if not block.is_call and block.n == 1 for i in block.rows
                         for line in self.value_lines(i, False, again=True)]  # fmt: skip
                for block in reversed(body):
                    lines += self.reverse_block(block)
                out += self.period_loop(period, reverse=True) + _indent(lines)
            else:
                out += self.reverse_block(item)
        return out

    def reverse_block(self, block) -> list[str]:
        if block.is_call:
            return self.reverse_call(block.start)
        if block.n == 1:
            return [line for i in reversed(block.rows) for line in self.reverse_row(i, False, None, None)]
        if block.n > 1:
            return self.reverse_loop(block)
        return []

    def unread(self, p: int, array: str) -> bool:
        """Whether the adjoints of ``array`` at the range starting at ``p`` are read by nothing: a first-order
        adjoint of an input or a constant (no row writes its value) in an HVP that returns H v alone.  (A
        range an operand or a view names lies inside one slot; runs to zero do not: ``read_parts``.)"""
        return self.hv_only and array == "adj" and self.plan.row_of(p) < 0

    def read_parts(self, p: int, m: int, array: str) -> list:
        """The parts of a run of adjoints to zero (which may span several slots: the adjoint plan joins
        neighbours) that something reads (see ``unread``)."""
        if not (self.hv_only and array == "adj"):
            return [(p, m)]
        return [(a, n) for a, n in self.plan.pieces(p, m) if not self.unread(a, array)]

    def zero_runs(self, runs: list, array: str) -> list[str]:
        """Zero the adjoints of ``array`` in ``runs`` (offset, length): written out one by one, or from
        ``ZERO_TABLE_MIN`` runs on as one loop over a module-level table of them."""
        if len(runs) < ZERO_TABLE_MIN:
            return [line for p, m in runs for line in self.zero(p, m, array)]
        rows = tuple(runs)
        table = self.tables.setdefault(rows, f"zero_runs_{len(self.tables)}")
        first = str(self.N) + " + " if array == "adj" else ""
        return [f"for z in range({len(rows)}):",
                f"    for j in range({table}[z, 1]):",
                f"        {_ARRAYS.get(array, array)}[{first}{table}[z, 0] + j] = 0.0"]  # fmt: skip

    def zero(self, start: int, length: int, array: str, moves: bool = False) -> list[str]:
        """Zero ``length`` adjoints from ``start`` (``+ base`` in a period; LLVM makes the loop a memset)."""
        if self.unread(start, array):
            return []
        index = str(self.N + start if array == "adj" else start) + (" + base" if moves else "")
        name = _ARRAYS.get(array, array)
        if length == 1:
            return [f"{name}[{index}] = 0.0"]
        return [f"for j in range({length}):", f"    {name}[{index} + j] = 0.0"]

    def reverse_call(self, i: int) -> list[str]:
        if not self.flags[i] & F_ACTIVE:
            return []
        out, touched = [], []
        first = self.planes[0]
        for p, m in self.written[i]:
            q = self.plan.producer_of(p)
            if q < 0 or m == 0 or self.plan.carried[self.plan.body(q)]:
                continue
            # local contributions reach the buffer before the kernel adds to it
            earlier = q in first.pending
            for plane in self.planes:
                target = self.at(q, p, None, False, plane.array)
                if q in plane.pending:
                    out.append(f"{target} {'+=' if q in plane.in_buf else '='} {plane.g}{q}")
                    plane.pending.discard(q)
                elif earlier and q not in plane.in_buf:  # (every contribution of this order was a structural zero)
                    out.append(f"{target} = 0.0")
            touched.append(q)
        if self.second:
            out += self.call_lines(i, "second", "ins, {i}, aux, buf, tangents, adj2, N, r0 + 1, r0 == 0")
        else:
            out += self.call_lines(i, "reverse", "ins, {i}, aux, buf, N")
        for plane in self.planes:
            plane.in_buf.update(touched)
        return out

    def total_adjoint(self, i: int, loop: bool, plane: _Plane, local_terms: set) -> str | None:
        terms = []
        if self.plan.carried[i] or i in plane.in_buf:
            terms.append(self.at(i, self.plan.outs[i], None, loop, plane.array))
        if i in local_terms:
            terms.append(f"{plane.h if loop else plane.g}{i}")
        return " + ".join(terms) if terms else None

    def reverse_row(self, i: int, loop: bool, block_rows, accumulators) -> list[str]:
        """Row i's contributions to its operands' adjoints (of every plane).  In a loop block:
        ``block_rows[plane]`` are the rows whose in-loop adjoint is defined so far, ``accumulators``
        the scalar operands' sums ((position, moves, plane) -> name) and the assignments demoted to
        accumulation."""
        flags = self.flags[i]
        if not flags & F_ACTIVE:
            return []
        if self.plan.fused[i]:  # d sum / d x_j = 1: the sum's adjoint (read before the loop) to every element
            out = self.deliver(i, 0, f"ts{i}", self.planes[0], loop, block_rows, accumulators)
            if self.second:  # (linear: x̄' += z̄', a structural zero when z̄ is a constant of the sweep)
                second = None if flags & F_CONST_ADJOINT else f"tts{i}"
                out += self.deliver(i, 0, second, self.planes[1], loop, block_rows, accumulators)
            return out
        totals = [self.total_adjoint(i, loop, plane, block_rows[n] if loop else plane.pending)
                  for n, plane in enumerate(self.planes)]  # fmt: skip
        if totals[0] is None:
            return []
        out = [f"{plane.t}{i} = {total}" for plane, total in zip(self.planes, totals) if total is not None]
        prim = PRIMITIVE_BY_OPCODE[self.ops[i]]
        names = self.names(i, loop)  # the operands as value_lines loaded them (same scope)
        arity = len(self.plan.operands[i])
        partials = [f"d{k}_{i}" for k in range(arity)]
        # (forward-over-reverse: every partial, which the second derivatives' formulas may name)
        out += [f"{partials[k]} = {scalar(prim.d1[k], names)}" for k in range(arity) if flags & _GRAD[k] or self.second]
        for k in range(arity):
            if not flags & _GRAD[k]:
                continue
            out += self.deliver(i, k, f"t{i} * {partials[k]}", self.planes[0], loop, block_rows, accumulators)
            if self.second:
                out += self.deliver(i, k, self.second_term(i, k, totals[1], partials, names, loop),
                                    self.planes[1], loop, block_rows, accumulators)  # fmt: skip
        return out

    def second_term(self, i, k, total2, partials, names, loop) -> str | None:
        """x̄' += z̄' f_x + z̄ (f_xx x' + f_xy y') as a call of ``runs.second_terms`` with constant flags
        (LLVM folds them): z̄' f_x is a structural zero when z̄' is a constant (F_CONST_ADJOINT) or has no
        contribution, f_xx / f_xy where the declaration's curvature says so or the other operand is not
        differentiated (JAX's symbolic zeros).  None when every term is one."""
        op, flags = self.ops[i], self.flags[i]
        prim = PRIMITIVE_BY_OPCODE[op]
        flat = total2 is None or bool(flags & F_CONST_ADJOINT)
        names = dict(names, d1=partials[0], dx=partials[0], dy=partials[-1])
        arity = len(self.plan.operands[i])
        own, cross = (0, None) if arity == 1 else ((0, 1) if k == 0 else (2, 1))
        other = 1 - k
        curved = bool(CURVATURE[op, own])
        crossed = cross is not None and bool(CURVATURE[op, cross]) and bool(flags & _GRAD[other])
        if flat and not curved and not crossed:
            return None
        d_own = f"({scalar(prim.d2[own], names)})" if curved else "0.0"
        t_own = self.operand(i, k, loop, "tan") if curved else "0.0"
        d_cross = f"({scalar(prim.d2[cross], names)})" if crossed else "0.0"
        t_other = self.operand(i, other, loop, "tan") if crossed else "0.0"
        gd = "0.0" if flat else f"tt{i}"
        return (f"second_terms({flat}, {gd}, {partials[k]}, t{i}, {curved}, {d_own}, {t_own}, "
                f"{crossed}, {d_cross}, {t_other})")  # fmt: skip

    def deliver(self, i, k, contribution, plane, loop, block_rows, accumulators) -> list[str]:
        """Add ``contribution`` (None: a structural zero) to operand k's adjoint of ``plane``."""
        q = self.plan.adjoint_local(i, k)
        p, m = self.plan.operands[i][k]
        n = self.planes.index(plane)
        if loop and q >= 0 and not self.plan.is_scalar(q):  # an adjoint of the loop block itself
            if contribution is None:
                return []
            line = f"{plane.h}{q} {'+=' if q in block_rows[n] else '='} {contribution}"
            block_rows[n].add(q)
            return [line]
        if loop and m == 1:  # a scalar operand sums the loop's contributions
            key = (p, self.plan.strided(i, k), n)
            if contribution is None:
                return []
            accumulators["used"].add(key)
            return [f"{accumulators[key]} += {contribution}"]
        if q >= 0:  # a one-element row of this scope
            if contribution is None:
                return []
            line = f"{plane.g}{q} {'+=' if q in plane.pending else '='} {contribution}"
            plane.pending.add(q)
            return [line]
        if self.unread(p, plane.array):
            return []
        if loop and (p, m) in self.shifted:  # this iteration's contribution to a shifted view (see shifted_views)
            group, c = self.shifted[p, m]
            return [] if contribution is None else [f"{_stream(group, n, c)} += {contribution}"]
        assign = self.flags[i] & _INIT[k] and not (loop and (p, m) in accumulators["demoted"])
        if contribution is None:  # a first write still starts the adjoint
            return [f"{self.at(i, p, k, loop, plane.array)} = 0.0"] if assign else []
        return [f"{self.at(i, p, k, loop, plane.array)} {'=' if assign else '+='} {contribution}"]

    def reverse_loop(self, block) -> list[str]:
        plan = self.plan
        # the buffer adjoints this loop writes: (row, operand, offset, size, assigns)
        targets = []
        for i in block.rows:
            if not self.flags[i] & F_ACTIVE:
                continue
            for k, (p, m) in enumerate(plan.operands[i]):
                q = plan.adjoint_local(i, k)
                if self.flags[i] & _GRAD[k] and not (q >= 0 and not plan.is_scalar(q)):
                    targets.append((i, k, p, m, bool(self.flags[i] & _INIT[k])))
        accumulators: dict = {"demoted": set(), "used": set()}
        before, after, sums = [], [], []
        self.shifted = self.shifted_views(block, targets)
        for i, k, p, m, assigns in targets:
            moves = plan.period(i) is not None and plan.strided(i, k)
            if (p, m) in self.shifted:
                continue
            if m == 1:
                for n, plane in enumerate(self.planes):
                    key = (p, plan.strided(i, k), n)
                    if key not in accumulators:
                        accumulators[key] = f"{plane.s}{len(accumulators) - 2}"
                        sums.append(accumulators[key])
                continue
            overlapped = any((p2, m2) != (p, m) and p2 < p + m and p < p2 + m2 for _, _, p2, m2, _ in targets)
            if assigns and overlapped and (p, m) not in accumulators["demoted"]:
                accumulators["demoted"].add((p, m))
                for plane in self.planes:
                    before += self.zero(p, m, plane.array, moves)
        for i in block.rows:  # a fused sum's adjoint, in the buffer (its readers are outside the block)
            if plan.fused[i] and self.flags[i] & F_ACTIVE:
                before.append(f"ts{i} = {self.at(i, plan.outs[i], None, False, 'adj')}")
                if self.second:
                    before.append(f"tts{i} = {self.at(i, plan.outs[i], None, False, 'adj2')}")
        merged = block is self.merged
        body = [line for i in block.rows for line in self.value_lines(i, loop=True, again=not merged)]
        if merged:  # (see merge_last_block: the values computed here, the sum added up too)
            total = block.stop - 1
            body.append(f"acc{total} += {self.operand(total, 0, True)}")
            sums.append(f"acc{total}")
            after.append(f"{self.at(total, plan.outs[total], None, False)} = acc{total}")
        delay_lines, streams, written, tail = self.gathered_writes(block.n)
        body = streams + body
        block_rows = [set() for _ in self.planes]
        for i in reversed(block.rows):
            body += self.reverse_row(i, True, block_rows, accumulators)
        body += written
        # the scalar operands' sums, after the loop
        for i, k, p, m, _ in targets:
            for n, plane in enumerate(self.planes):
                key = (p, plan.strided(i, k), n)
                if m != 1 or key not in accumulators:
                    continue
                name = accumulators.pop(key)
                used = key in accumulators["used"]
                q = plan.adjoint_local(i, k)
                if q >= 0:
                    if used:
                        after.append(f"{plane.g}{q} {'+=' if q in plane.pending else '='} {name}")
                        plane.pending.add(q)
                    continue
                assigns = any(a for _, _, p2, m2, a in targets if p2 == p and m2 == 1)
                target = self.at(i, p, k, False, plane.array)
                if assigns and any(m2 > 1 and p2 <= p < p2 + m2 for _, _, p2, m2, _ in targets):
                    before.append(f"{target} = 0.0")  # the loop adds to it through a view as well
                    assigns = False
                if (used or assigns) and not self.unread(p, plane.array):
                    after.append(f"{target} {'=' if assigns else '+='} {name}")
        # (a merged loop's sums are not added up in chunks: LLVM vectorises a delay line and a sum in one flat
        # loop, not in chunks; merge_last_block keeps such loops short)
        loop = [f"{name} = 0.0" for name in sums] + delay_lines + _loop(block.n, body, sums, not merged) + tail
        self.shifted, self.groups = {}, {}
        return before + loop + after

    def shifted_views(self, block, targets) -> dict:
        """Adjoints a loop block (outside periods) writes through views of one array shifted by a few
        elements (``x[1:]``, ``x[:-1]``): (offset, size) -> (group, shift).  Written one element per
        iteration instead (``gathered_writes``): accumulating through both views would make each
        iteration read what the one before wrote, which keeps LLVM from vectorising the loop."""
        if self.plan.period(block.start) is not None:
            return {}
        views = sorted({(p, m) for _, _, p, m, _ in targets if m == block.n and m > 1})
        shifted, g, run = {}, 0, []
        for view in views + [None]:
            if run and (view is None or view[0] - run[-1][0] >= min(MAX_SHIFT + 1, block.n)):
                if len(run) > 1 and run[-1][0] - run[0][0] <= MAX_SHIFT:
                    assigns = any(a for _, _, p, m, a in targets if (p, m) in run)
                    self.groups[g] = (run[0][0], run[-1][0] - run[0][0], assigns)
                    shifted.update({v: (g, v[0] - run[0][0]) for v in run})
                    g += 1
                run = []
            if view is not None:
                run.append(view)
        return shifted

    def gathered_writes(self, n: int):
        """For each group of shifted views: (lines before the loop: empty delay lines; lines starting an
        iteration: the per-view sums of its contributions; lines ending it: element ``start + j`` written
        once, from view 0's sum and view c's of c iterations ago, kept in a delay line; lines after the
        loop: the last ``span`` elements, from what the delay lines still hold)."""
        init, starts, ends, tail = [], [], [], []
        for g, (start, span, assigns) in self.groups.items():
            shifts = sorted({c for (group, c) in self.shifted.values() if group == g})
            op = "=" if assigns else "+="
            for n_plane, plane in enumerate(self.planes):
                if self.unread(start, plane.array):
                    continue
                name = functools.partial(_stream, g, n_plane)
                first = self.N + start if plane.array == "adj" else start
                array = _ARRAYS.get(plane.array, plane.array)
                starts += [f"{name(c)} = 0.0" for c in shifts]
                delayed = " + ".join([name(0)] + [name(c, c) for c in shifts[1:]])
                ends.append(f"{array}[{first} + j] {op} {delayed}")
                for c in shifts[1:]:
                    init += [f"{name(c, k)} = 0.0" for k in range(1, c + 1)]  # (nothing before iteration 0)
                    ends += [f"{name(c, k)} = {name(c, k - 1)}" for k in range(c, 1, -1)]
                    ends.append(f"{name(c, 1)} = {name(c)}")
                for t in range(span):  # elements start + n + t: from the views c > t, iteration n + t - c
                    tail.append(f"{array}[{first + n + t}] {op} {' + '.join(name(c, c - t) for c in shifts if c > t)}")
        return init, starts, ends, tail


def _read(src: str) -> bool:
    """Whether an operand is read from an array (the buffer, an argument): loaded into a local first."""
    return src.endswith("]")


def _stream(group: int, plane: int, shift: int, delay: int = 0) -> str:
    """The local summing one iteration's contributions to a shifted view (``delay`` > 0: as it was that
    many iterations ago)."""
    return f"gs{group}_{shift}_{plane}" + (f"_{delay}" if delay else "")
