"""Per-tape kernels, the code: a tape's own forward and ``value_and_grad`` as Numba source.

From a ``fasttape.tape_plan.Plan`` this writes one module with two functions,
``forward(ins, aux, buf, fns)`` and ``value_and_grad(ins, aux, buf, fns)``, each returning False
when a recorded branch is not taken.  Every offset, length and flag of the tape is a constant of
the source, so there is no dispatch per instruction: an elementwise row is its declaration's
formula written out, a loop block one ``for j`` loop, a one-element row a line of straight-line
code on locals, a period one loop over its iterations (offsets ``+ base``), and every other row a
call of its family's compiled kernel by address (``fasttape.kernel_calls``).  The rules are the
declarations' and the families' own; nothing is restated.

The reverse follows the tape's adjoint plan (``fasttape.adjoint_plan``): the same runs are zeroed
and a row with ``F_INIT`` assigns, except where a loop block writes one adjoint through two
different views (``x[1:]`` and ``x[:-1]``): there the assigning view is zeroed before the loop
and accumulates, since the loop interleaves the two.  Adjoints kept in locals reach the buffer
just before a family kernel adds to them.
"""

from __future__ import annotations

import ast

from . import kernel_calls
from .codegen import _Conditionals
from .families import FAMILY_BY_OPCODE
from .layout import C_FLAGS, C_OP, F_ACTIVE, F_GRAD_A, F_GRAD_B, F_INIT_A, F_INIT_B, M_NVALS, M_NZEROS, M_ZEROS
from .primitives import PRIMITIVE_BY_OPCODE
from .tape_plan import Plan

_GRAD = (F_GRAD_A, F_GRAD_B)
_INIT = (F_INIT_A, F_INIT_B)
_NAMES = ("x", "y")
_DECORATOR = "@jit"


class _Rename(ast.NodeTransformer):
    """A formula's operand names (x, y, z) replaced by the generated code's names."""

    def __init__(self, names: dict):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return ast.copy_location(ast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def _formula(expr: str, names: dict) -> str:
    tree = _Conditionals().visit(ast.parse(expr, mode="eval"))
    return ast.unparse(_Rename(names).visit(tree))


def _indent(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


class _Writer:
    def __init__(self, plan: Plan, ins, aux, n_values: int, written, out: int):
        self.plan = plan
        self.aux = aux
        self.N = n_values
        self.written = written  # per family row: the (offset, size) operand ranges its reverse writes
        self.out = out
        self.flags = ins[:, C_FLAGS].tolist()
        self.ops = ins[:, C_OP].tolist()
        self.families: set = set()

    # -- positions ---------------------------------------------------------
    def at(self, row: int, p: int, k: int | None, loop: bool, adjoint: bool = False) -> str:
        """``buf[...]`` of position ``p`` read or written by ``row`` (operand ``k``, or its output for
        None): ``+ base`` where it moves with a period's iterations, ``+ j`` along a loop block."""
        index = str(self.N + p if adjoint else p)
        moves = self.plan.period(row) is not None and (k is None or self.plan.strided(row, k))
        if moves:
            index += " + base"
        if loop:
            index += " + j"
        return f"buf[{index}]"

    # -- values ------------------------------------------------------------
    def operand(self, i: int, k: int, loop: bool) -> str:
        """The value of operand k of elementwise row i: a local, or a read of the buffer."""
        q = self.plan.value_local(i, k)
        if q >= 0:
            return f"v{q}"
        p, m = self.plan.operands[i][k]
        return self.at(i, p, k, loop and m > 1)

    def names(self, i: int, loop: bool) -> dict:
        names = {"z": f"v{i}"}
        for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            names[name] = f"{name}{i}" if src.startswith("buf") else src
        return names

    def value_lines(self, i: int, loop: bool) -> list[str]:
        """``v{i} = formula`` with its operands loaded (buffer reads into locals first)."""
        lines = []
        for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            if src.startswith("buf"):
                lines.append(f"{name}{i} = {src}")
        formula = _formula(PRIMITIVE_BY_OPCODE[self.ops[i]].value, self.names(i, loop))
        return lines + [f"v{i} = {formula}"]

    def call(self, i: int, sweep: str, args: str) -> str:
        family = FAMILY_BY_OPCODE[self.ops[i]]
        self.families.add(family)
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
        out = []
        for item in self.items():
            if isinstance(item, tuple):
                period, body = item
                out += self.period_loop(period, reverse=False)
                out += _indent([line for block in body for line in self.forward_block(block)])
            else:
                out += self.forward_block(item)
        for p, outcome in self.plan.guards:
            out += [f"if (buf[{p}] != 0.0) != {outcome}:", "    return False"]
        return out

    def forward_block(self, block) -> list[str]:
        if block.is_call:
            return [self.call(block.start, "forward", "ins, {i}, aux, buf")]
        loop = block.n > 1
        body = []
        for i in block.rows:
            body += self.value_lines(i, loop)
            if self.plan.stored[i]:
                body.append(f"{self.at(i, self.plan.outs[i], None, loop)} = v{i}")
        if block.n == 0:
            return []
        return [f"for j in range({block.n}):"] + _indent(body) if loop else body

    # -- adjoints ------------------------------------------------------------
    def reverse(self) -> list[str]:
        out = []
        zeros, n_zeros = int(self.aux[M_ZEROS]), int(self.aux[M_NZEROS])
        for z in range(n_zeros):
            out += self.zero(self.N + int(self.aux[zeros + 2 * z]), int(self.aux[zeros + 2 * z + 1]))
        out.append(f"buf[{self.N + self.out}] = 1.0")
        self.in_buf: set = set()  # non-carried rows whose adjoint in the buffer holds contributions
        self.pending: set = set()  # rows whose local adjoint ``g{row}`` holds contributions
        for item in reversed(list(self.items())):
            if isinstance(item, tuple):
                period, body = item
                lines = [line for block in body if not block.is_call and block.n == 1 for i in block.rows
                         for line in self.value_lines(i, False)]  # fmt: skip
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

    @staticmethod
    def zero(start: int, length: int, moves: bool = False) -> list[str]:
        """Zero buf[start : start + length] (``+ base`` in a period; LLVM turns the loop into a memset)."""
        start = f"{start} + base" if moves else str(start)
        return [f"for j in range({length}):", f"    buf[{start} + j] = 0.0"] if length > 1 else [f"buf[{start}] = 0.0"]

    def reverse_call(self, i: int) -> list[str]:
        if not self.flags[i] & F_ACTIVE:
            return []
        out, touched = [], []
        for p, m in self.written[i]:
            q = self.plan.producer_of(p)
            if q < 0 or m == 0 or self.plan.carried[self.plan.body(q)]:
                continue
            if q in self.pending:  # its local contributions reach the buffer before the kernel adds to them
                out.append(f"{self.at(q, p, None, False, True)} {'+=' if q in self.in_buf else '='} g{q}")
                self.pending.discard(q)
            touched.append(q)
        out.append(self.call(i, "reverse", "ins, {i}, aux, buf, N"))
        self.in_buf.update(touched)
        return out

    def total_adjoint(self, i: int, loop: bool, local_terms: set) -> str | None:
        terms = []
        if self.plan.carried[i] or i in self.in_buf:
            terms.append(self.at(i, self.plan.outs[i], None, loop, adjoint=True))
        if i in local_terms:
            terms.append(f"h{i}" if loop else f"g{i}")
        return " + ".join(terms) if terms else None

    def reverse_row(self, i: int, loop: bool, block_rows, accumulators) -> list[str]:
        """Row i's contributions to its operands' adjoints.  In a loop block: ``block_rows`` are the
        rows whose in-loop adjoint ``h{row}`` is defined so far, ``accumulators`` the scalar
        operands' sums (position -> name) and the assignments demoted to accumulation."""
        flags = self.flags[i]
        if not flags & F_ACTIVE:
            return []
        total = self.total_adjoint(i, loop, block_rows if loop else self.pending)
        if total is None:
            return []
        out = [f"t{i} = {total}"]
        prim = PRIMITIVE_BY_OPCODE[self.ops[i]]
        names = self.names(i, loop)  # the operands as value_lines loaded them (same scope)
        for k in range(len(self.plan.operands[i])):
            if flags & _GRAD[k]:
                contribution = f"t{i} * ({_formula(prim.d1[k], names)})"
                out += self.deliver(i, k, contribution, loop, block_rows, accumulators)
        return out

    def deliver(self, i, k, contribution, loop, block_rows, accumulators) -> list[str]:
        q = self.plan.adjoint_local(i, k)
        p, m = self.plan.operands[i][k]
        if loop and q >= 0 and not self.plan.is_scalar(q):  # an adjoint of the loop block itself
            line = f"h{q} {'+=' if q in block_rows else '='} {contribution}"
            block_rows.add(q)
            return [line]
        if loop and m == 1:  # a scalar operand sums the loop's contributions
            return [f"{accumulators[(p, self.plan.strided(i, k))]} += {contribution}"]
        if q >= 0:  # a one-element row of this scope
            line = f"g{q} {'+=' if q in self.pending else '='} {contribution}"
            self.pending.add(q)
            return [line]
        assign = self.flags[i] & _INIT[k] and not (loop and (p, m) in accumulators["demoted"])
        return [f"{self.at(i, p, k, loop, adjoint=True)} {'=' if assign else '+='} {contribution}"]

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
        accumulators: dict = {"demoted": set()}
        before, after = [], []
        for i, k, p, m, assigns in targets:
            if m == 1:
                key = (p, plan.strided(i, k))
                if key not in accumulators:
                    accumulators[key] = f"s{len(accumulators) - 1}"
                    before.append(f"{accumulators[key]} = 0.0")
                continue
            overlapped = any((p2, m2) != (p, m) and p2 < p + m and p < p2 + m2 for _, _, p2, m2, _ in targets)
            if assigns and overlapped and (p, m) not in accumulators["demoted"]:
                accumulators["demoted"].add((p, m))
                before += self.zero(self.N + p, m, plan.period(i) is not None and plan.strided(i, k))
        body = [line for i in block.rows for line in self.value_lines(i, loop=True)]
        block_rows: set = set()
        for i in reversed(block.rows):
            body += self.reverse_row(i, True, block_rows, accumulators)
        # the scalar operands' sums, after the loop
        for i, k, p, m, _ in targets:
            key = (p, plan.strided(i, k))
            if m != 1 or key not in accumulators:
                continue
            name = accumulators.pop(key)
            q = plan.adjoint_local(i, k)
            if q >= 0:
                after.append(f"g{q} {'+=' if q in self.pending else '='} {name}")
                self.pending.add(q)
                continue
            assigns = any(a for _, _, p2, m2, a in targets if p2 == p and m2 == 1)
            target = self.at(i, p, k, False, adjoint=True)
            if assigns and any(m2 > 1 and p2 <= p < p2 + m2 for _, _, p2, m2, _ in targets):
                before.append(f"{target} = 0.0")  # the loop adds to it through a view as well
                assigns = False
            after.append(f"{target} {'=' if assigns else '+='} {name}")
        return before + [f"for j in range({block.n}):"] + _indent(body) + after


def tape_source(plan: Plan, ins, aux, n_values: int, written, out: int, name: str = "tape") -> tuple[str, set]:
    """The module's source and the families it calls.  ``written``: per row, the operand ranges a
    family row's reverse writes; ``out``: the position of the scalar output (-1: no gradient)."""
    w = _Writer(plan, ins, aux, n_values, written, out)
    lines = [f'"""Generated by fasttape.tape_source for a tape of {name!r}: do not edit."""', ""]
    # N (the number of values) and r0 (zero) read at run time: the family kernels' int arguments.
    # fns: the family kernels' addresses (fasttape.kernel_calls)
    start = [f"N = aux[{M_NVALS}]", "r0 = N - N"]
    lines += ["", _DECORATOR, "def forward(ins, aux, buf, fns):"]
    lines += _indent(start + w.forward() + ["return True"]) + [""]
    if out >= 0:
        lines += ["", _DECORATOR, "def value_and_grad(ins, aux, buf, fns):"]
        lines += _indent(start + w.forward() + w.reverse() + ["return True"]) + [""]
    return "\n".join(lines), w.families
