"""Per-tape kernels, the code: a tape's own forward and ``value_and_grad`` as Numba source.

From a ``fasttape.tape_plan.Plan`` this writes one module with two functions,
``forward(ins, aux, buf)`` and ``value_and_grad(ins, aux, buf)``, each returning False when a
recorded branch is not taken.  Every offset, length and flag of the tape is a constant of the
source, so there is no dispatch per instruction: an elementwise row is its declaration's formula
written out (``fasttape.codegen.scalar``), a loop block one ``for j`` loop, a one-element row a
line of straight-line code on locals, and every other row a call of its family's compiled kernel
with its row number.  The rules are the declarations' and the families' own; nothing is restated.

The reverse follows the tape's adjoint plan (``fasttape.adjoint_plan``): the same runs are zeroed
and a row with ``F_INIT`` assigns, except where a loop block writes one adjoint through two
different views (``x[1:]`` and ``x[:-1]``): there the assigning view is zeroed before the loop
and accumulates, since the loop interleaves the two.  Adjoints kept in locals reach the buffer
just before a family kernel adds to them.
"""

from __future__ import annotations

import ast

from .codegen import _Conditionals
from .families import FAMILY_BY_OPCODE
from .layout import C_FLAGS, C_OP, C_OUT, F_ACTIVE, F_GRAD_A, F_GRAD_B, F_INIT_A, F_INIT_B, M_NZEROS, M_ZEROS
from .primitives import PRIMITIVE_BY_OPCODE
from .tape_plan import Plan

_GRAD = (F_GRAD_A, F_GRAD_B)
_INIT = (F_INIT_A, F_INIT_B)
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


class _Writer:
    def __init__(self, plan: Plan, ins, aux, n_values: int, written, out: int):
        self.plan = plan
        self.ins = ins
        self.aux = aux
        self.N = n_values
        self.written = written  # per family row: the (offset, size) operand ranges its reverse writes
        self.out = out
        self.flags = ins[:, C_FLAGS].tolist()
        self.ops = ins[:, C_OP].tolist()
        self.outs = ins[:, C_OUT].tolist()
        self.families: set = set()

    # -- values ------------------------------------------------------------
    def operand(self, i: int, k: int, loop: bool) -> str:
        """The value of operand k of elementwise row i: a local, or a read of the buffer."""
        q = self.plan.reads_local(i, k)
        if q >= 0:
            return f"v{q}"
        p, m = self.plan.operands[i][k]
        return f"buf[{p} + j]" if loop and m > 1 else f"buf[{p}]"

    def value_lines(self, i: int, loop: bool) -> list[str]:
        """``v{i} = formula`` with its operands loaded (buffer reads into locals first)."""
        lines, names = [], {}
        for k, name in enumerate(("x", "y")[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            if src.startswith("buf"):
                lines.append(f"{name}{i} = {src}")
                src = f"{name}{i}"
            names[name] = src
        lines.append(f"v{i} = {_formula(PRIMITIVE_BY_OPCODE[self.ops[i]].value, names)}")
        return lines

    def forward(self, store: bool = True) -> list[str]:
        out = []
        for block in self.plan.blocks:
            if block.is_call:
                out.append(self.call(block.start, "forward", "ins, {i}, aux, buf"))
                continue
            loop = block.n > 1
            body = []
            for i in block.rows:
                body += self.value_lines(i, loop)
                if store and self.plan.stored[i]:
                    body.append(f"buf[{self.outs[i]} + j] = v{i}" if loop else f"buf[{self.outs[i]}] = v{i}")
            if block.n == 0:
                continue
            out += [f"for j in range({block.n}):"] + [f"    {line}" for line in body] if loop else body
        for p, outcome in self.plan.guards:
            out += [f"if (buf[{p}] != 0.0) != {outcome}:", "    return False"]
        return out

    def call(self, i: int, sweep: str, args: str) -> str:
        family = FAMILY_BY_OPCODE[self.ops[i]]
        self.families.add(family)
        return f"{family.name}_{sweep}({args.format(i=i)})  # {PRIMITIVE_BY_OPCODE[self.ops[i]].name}"

    # -- adjoints ------------------------------------------------------------
    def reverse(self) -> list[str]:
        N, plan = self.N, self.plan
        out = []
        zeros, n_zeros = int(self.aux[M_ZEROS]), int(self.aux[M_NZEROS])
        for z in range(n_zeros):
            out.append(f"zero(buf, {N + int(self.aux[zeros + 2 * z])}, {int(self.aux[zeros + 2 * z + 1])})")
        out.append(f"buf[{N + self.out}] = 1.0")
        self.in_buf: set = set()  # elementwise rows whose adjoint in the buffer holds contributions
        self.pending: set = set()  # local rows whose ``g{row}`` holds contributions not in the buffer
        seeded = plan.producer_of(self.out)
        if seeded >= 0:
            self.in_buf.add(seeded)
        for block in reversed(plan.blocks):
            if block.is_call:
                out += self.reverse_call(block.start)
            elif block.n == 1:
                for i in reversed(block.rows):
                    out += self.reverse_row(i, loop=False, block_rows=None, accumulators=None)
            elif block.n > 1:
                out += self.reverse_loop(block)
        return out

    def reverse_call(self, i: int) -> list[str]:
        if not self.flags[i] & F_ACTIVE:
            return []
        out = []
        touched = []
        for p, m in self.written[i]:
            q = self.plan.producer_of(p)
            if q < 0 or m == 0:
                continue
            if q in self.pending:  # its local contributions reach the buffer before the kernel adds to them
                out.append(f"buf[{self.N + p}] {'+=' if q in self.in_buf else '='} g{q}")
                self.pending.discard(q)
            touched.append(q)
        out.append(self.call(i, "reverse", "ins, {i}, aux, buf, " + str(self.N)))
        self.in_buf.update(touched)
        return out

    def total_adjoint(self, i: int, loop: bool, local_terms: set) -> str | None:
        terms = []
        if i in self.in_buf:
            terms.append(f"buf[{self.N + self.outs[i]} + j]" if loop else f"buf[{self.N + self.outs[i]}]")
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
        names = {"z": f"v{i}"}  # the operands as value_lines loaded them (same scope)
        for k, name in enumerate(("x", "y")[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            names[name] = f"{name}{i}" if src.startswith("buf") else src
        for k in range(len(self.plan.operands[i])):
            if not flags & _GRAD[k]:
                continue
            contribution = f"t{i} * ({_formula(prim.d1[k], names)})"
            out += self.deliver(i, k, contribution, loop, block_rows, accumulators)
        return out

    def deliver(self, i, k, contribution, loop, block_rows, accumulators) -> list[str]:
        q = self.plan.reads_local(i, k)
        p, m = self.plan.operands[i][k]
        if loop and q >= 0 and not self.plan.is_local(q):  # an adjoint of the loop block itself
            line = f"h{q} {'+=' if q in block_rows else '='} {contribution}"
            block_rows.add(q)
            return [line]
        if loop and m == 1:  # a scalar operand sums the loop's contributions
            return [f"{accumulators[p]} += {contribution}"]
        if q >= 0:  # a local row (one element)
            line = f"g{q} {'+=' if q in self.pending else '='} {contribution}"
            self.pending.add(q)
            return [line]
        producer = self.plan.producer_of(p)
        if producer >= 0:
            self.in_buf.add(producer)
        assign = self.flags[i] & _INIT[k] and not (loop and (p, m) in accumulators.get("demoted", ()))
        target = f"buf[{self.N + p} + j]" if loop else f"buf[{self.N + p}]"
        return [f"{target} {'=' if assign else '+='} {contribution}"]

    def reverse_loop(self, block) -> list[str]:
        plan, N = self.plan, self.N
        active = [i for i in block.rows if self.flags[i] & F_ACTIVE]
        # the buffer adjoints this loop writes: (row, operand, offset, size, assigns)
        targets = []
        for i in active:
            for k, (p, m) in enumerate(plan.operands[i]):
                q = plan.reads_local(i, k)
                if self.flags[i] & _GRAD[k] and not (q >= 0 and not plan.is_local(q)):
                    targets.append((i, k, p, m, bool(self.flags[i] & _INIT[k])))
        accumulators: dict = {"demoted": set()}
        before, after = [], []
        for i, k, p, m, assigns in targets:
            overlapped = any(
                (p2, m2) != (p, m) and p2 < p + m and p < p2 + m2 for i2, k2, p2, m2, _ in targets if (i2, k2) != (i, k)
            )
            if m == 1:
                if p not in accumulators:
                    accumulators[p] = f"s{len(accumulators) - 1}"
                    before.append(f"{accumulators[p]} = 0.0")
                continue
            if assigns and overlapped and (p, m) not in accumulators["demoted"]:
                accumulators["demoted"].add((p, m))
                before.append(f"zero(buf, {N + p}, {m})")
        body = [line for i in block.rows for line in self.value_lines(i, loop=True)]
        block_rows: set = set()
        for i in reversed(block.rows):
            body += self.reverse_row(i, True, block_rows, accumulators)
        # the scalar operands' sums, after the loop
        for i, k, p, m, assigns in targets:
            if m != 1 or p not in accumulators:
                continue
            name = accumulators.pop(p)
            q = plan.reads_local(i, k)
            if q >= 0:
                after.append(f"g{q} {'+=' if q in self.pending else '='} {name}")
                self.pending.add(q)
                continue
            assigns = any(a for _, _, p2, m2, a in targets if p2 == p and m2 == 1)
            if assigns and any(m2 > 1 and p2 <= p < p2 + m2 for _, _, p2, m2, _ in targets):
                before.append(f"buf[{N + p}] = 0.0")  # the loop adds to it through a view as well
                assigns = False
            after.append(f"buf[{N + p}] {'=' if assigns else '+='} {name}")
            producer = plan.producer_of(p)
            if producer >= 0:
                self.in_buf.add(producer)
        return before + [f"for j in range({block.n}):"] + [f"    {line}" for line in body] + after


def tape_source(plan: Plan, ins, aux, n_values: int, written, out: int, name: str = "tape") -> tuple[str, set]:
    """The module's source and the families it calls.  ``written``: per row, the operand ranges a
    family row's reverse writes; ``out``: the position of the scalar output (-1: no gradient)."""
    w = _Writer(plan, ins, aux, n_values, written, out)
    lines = [f'"""Generated by fasttape.tape_source for a tape of {name!r}: do not edit."""', ""]
    lines += ["", _DECORATOR, "def forward(ins, aux, buf):"]
    lines += [f"    {line}" for line in w.forward()] + ["    return True", ""]
    if out >= 0:
        lines += ["", _DECORATOR, "def value_and_grad(ins, aux, buf):"]
        lines += [f"    {line}" for line in w.forward() + w.reverse()] + ["    return True", ""]
    return "\n".join(lines), w.families
