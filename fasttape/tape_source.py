"""Per-tape kernels, the code: a tape's own forward, ``value_and_grad`` and HVP as Numba source.

From a ``fasttape.tape_plan.Plan`` this writes one module: ``forward(ins, aux, buf, fns)``,
``value_and_grad(ins, aux, buf, fns)`` and ``hvp(ins, aux, buf, tangents, adj2, fns)`` (one
direction, forward-over-reverse), each returning False when a recorded branch is not taken, and
for a tape of one array argument the same two with that argument (and the direction) copied in
and the result copied out.  Every offset, length and flag of the tape is a constant of
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
from dataclasses import dataclass, field

from . import kernel_calls
from .codegen import _Conditionals
from .families import FAMILY_BY_OPCODE
from .layout import (
    C_FLAGS,
    C_OP,
    CURVATURE,
    F_ACTIVE,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    M_NVALS,
    M_NZEROS,
    M_ZEROS,
)
from .primitives import PRIMITIVE_BY_OPCODE
from .tape_plan import Plan

_GRAD = (F_GRAD_A, F_GRAD_B)
_INIT = (F_INIT_A, F_INIT_B)
_NAMES = ("x", "y")
# the arrays' names in the generated code ("tan" is a formula's function): adjoints live in buf[N + p]
_ARRAYS = {"adj": "buf", "tan": "tangents"}
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


class _Writer:
    def __init__(self, plan: Plan, ins, aux, n_values: int, written, out: int, second: bool = False):
        self.plan = plan
        self.aux = aux
        self.N = n_values
        self.written = written  # per family row: the (offset, size) operand ranges its reverse writes
        self.out = out
        self.second = second  # forward-over-reverse: tangents in the forward, a second-order plane
        self.flags = ins[:, C_FLAGS].tolist()
        self.ops = ins[:, C_OP].tolist()
        self.families: set = set()

    # -- positions ---------------------------------------------------------
    def at(self, row: int, p: int, k: int | None, loop: bool, array: str = "buf") -> str:
        """``array[...]`` of position ``p`` read or written by ``row`` (operand ``k``, or its output for
        None): ``+ base`` where it moves with a period's iterations, ``+ j`` along a loop block.
        ``array``: "buf" (values), "adj" (first-order adjoints, buf[N + p]), "tan" or "adj2"."""
        index = str(self.N + p if array == "adj" else p)
        moves = self.plan.period(row) is not None and (k is None or self.plan.strided(row, k))
        if moves:
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
            names[name] = f"{name}{i}" if src.startswith("buf") else src
        return names

    def value_lines(self, i: int, loop: bool, again: bool = False) -> list[str]:
        """``v{i} = formula`` with its operands loaded (buffer reads into locals first); in a
        forward-over-reverse kernel also its tangent ``u{i}`` when the row is active.  ``again``: in a
        reverse, which reads a stored value (and tangent) back instead of computing it again."""
        lines = []
        active = self.second and self.flags[i] & F_ACTIVE
        if again and self.plan.stored[i]:
            lines.append(f"v{i} = {self.at(i, self.plan.outs[i], None, loop)}")
            if active:
                lines.append(f"u{i} = {self.at(i, self.plan.outs[i], None, loop, 'tan')}")
            # (the operands as the formulas below name them)
            for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
                src = self.operand(i, k, loop)
                if src.startswith("buf"):
                    lines.append(f"{name}{i} = {src}")
            return lines
        for k, name in enumerate(_NAMES[: len(self.plan.operands[i])]):
            src = self.operand(i, k, loop)
            if src.startswith("buf"):
                lines.append(f"{name}{i} = {src}")
        prim = PRIMITIVE_BY_OPCODE[self.ops[i]]
        names = self.names(i, loop)
        lines.append(f"v{i} = {_formula(prim.value, names)}")
        if active:
            # z' = f_x x' + f_y y' over the differentiated operands
            terms = [f"({_formula(prim.d1[k], names)}) * {self.operand(i, k, loop, 'tan')}"
                     for k in range(len(self.plan.operands[i])) if self.flags[i] & _GRAD[k]]  # fmt: skip
            lines.append(f"u{i} = {' + '.join(terms) or '0.0'}")
        return lines

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
        i = block.start
        if block.is_call:
            lines = [self.call(i, "forward", "ins, {i}, aux, buf")]
            if self.second and self.flags[i] & F_ACTIVE:
                lines.append(self.call(i, "tangent", "ins, {i}, aux, buf, tangents, N, r0 + 1"))
            return lines
        loop = block.n > 1
        body = []
        for i in block.rows:
            body += self.value_lines(i, loop)
            if self.plan.stored[i]:
                body.append(f"{self.at(i, self.plan.outs[i], None, loop)} = v{i}")
                if self.second and self.flags[i] & F_ACTIVE:
                    body.append(f"{self.at(i, self.plan.outs[i], None, loop, 'tan')} = u{i}")
        if block.n == 0:
            return []
        return [f"for j in range({block.n}):"] + _indent(body) if loop else body

    # -- adjoints ------------------------------------------------------------
    def reverse(self) -> list[str]:
        out = []
        zeros, n_zeros = int(self.aux[M_ZEROS]), int(self.aux[M_NZEROS])
        for z in range(n_zeros):
            offset, length = int(self.aux[zeros + 2 * z]), int(self.aux[zeros + 2 * z + 1])
            out += self.zero(offset, length, "adj")
            if self.second:
                out += self.zero(offset, length, "adj2")
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

    def zero(self, start: int, length: int, array: str, moves: bool = False) -> list[str]:
        """Zero ``length`` adjoints from ``start`` (``+ base`` in a period; LLVM makes the loop a memset)."""
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
            out.append(self.call(i, "second", "ins, {i}, aux, buf, tangents, adj2, N, r0 + 1, r0 == 0"))
        else:
            out.append(self.call(i, "reverse", "ins, {i}, aux, buf, N"))
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
        out += [
            f"{partials[k]} = {_formula(prim.d1[k], names)}" for k in range(arity) if flags & _GRAD[k] or self.second
        ]
        for k in range(arity):
            if not flags & _GRAD[k]:
                continue
            out += self.deliver(i, k, f"t{i} * {partials[k]}", self.planes[0], loop, block_rows, accumulators)
            if self.second:
                out += self.deliver(i, k, self.second_term(i, k, totals[1], partials, names, loop),
                                    self.planes[1], loop, block_rows, accumulators)  # fmt: skip
        return out

    def second_term(self, i, k, total2, partials, names, loop) -> str | None:
        """x̄' += z̄' f_x + z̄ (f_xx x' + f_xy y'), without the structural zeros: z̄' f_x when z̄' is a
        constant (F_CONST_ADJOINT) or has no contribution, f_xx / f_xy where the declaration's
        curvature says so or the other operand is not differentiated (JAX's symbolic zeros)."""
        op, flags = self.ops[i], self.flags[i]
        prim = PRIMITIVE_BY_OPCODE[op]
        parts = []
        if total2 is not None and not flags & F_CONST_ADJOINT:
            parts.append(f"tt{i} * {partials[k]}")
        names = dict(names, d1=partials[0], dx=partials[0], dy=partials[-1])
        arity = len(self.plan.operands[i])
        own, cross = (0, None) if arity == 1 else ((0, 1) if k == 0 else (2, 1))
        curvature = []
        if CURVATURE[op, own]:
            curvature.append(f"({_formula(prim.d2[own], names)}) * {self.operand(i, k, loop, 'tan')}")
        other = 1 - k
        if cross is not None and CURVATURE[op, cross] and flags & _GRAD[other]:
            curvature.append(f"({_formula(prim.d2[cross], names)}) * {self.operand(i, other, loop, 'tan')}")
        if curvature:
            parts.append(f"t{i} * ({' + '.join(curvature)})")
        return " + ".join(parts) if parts else None

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
        before, after = [], []
        for i, k, p, m, assigns in targets:
            moves = plan.period(i) is not None and plan.strided(i, k)
            if m == 1:
                for n, plane in enumerate(self.planes):
                    key = (p, plan.strided(i, k), n)
                    if key not in accumulators:
                        accumulators[key] = f"{plane.s}{len(accumulators) - 2}"
                        before.append(f"{accumulators[key]} = 0.0")
                continue
            overlapped = any((p2, m2) != (p, m) and p2 < p + m and p < p2 + m2 for _, _, p2, m2, _ in targets)
            if assigns and overlapped and (p, m) not in accumulators["demoted"]:
                accumulators["demoted"].add((p, m))
                for plane in self.planes:
                    before += self.zero(p, m, plane.array, moves)
        body = [line for i in block.rows for line in self.value_lines(i, loop=True, again=True)]
        block_rows = [set() for _ in self.planes]
        for i in reversed(block.rows):
            body += self.reverse_row(i, True, block_rows, accumulators)
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
                if used or assigns:
                    after.append(f"{target} {'=' if assigns else '+='} {name}")
        return before + [f"for j in range({block.n}):"] + _indent(body) + after


def tape_source(plan: Plan, ins, aux, n_values: int, written, out: int, name: str = "tape", single=None):
    """The module's source and the families it calls.  ``written``: per row, the operand ranges a
    family row's reverse writes; ``out``: the position of the scalar output (-1: no gradient, no HVP);
    ``single``: (offset, size) of the one array argument of a tape that has only that one, which gets
    ``value_and_grad_io(ins, aux, buf, fns, x, g)`` (x copied in, its gradient copied out to g) and
    ``hvp_io(ins, aux, buf, tangents, adj2, fns, x, v, hv)`` (x and v in, H v out to hv)."""
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
        # one Hessian-vector product, forward-over-reverse: tangents holds the direction at the inputs
        h = _Writer(plan, ins, aux, n_values, written, out, second=True)
        lines += ["", _DECORATOR, "def hvp(ins, aux, buf, tangents, adj2, fns):"]
        lines += _indent(start + h.forward() + h.reverse() + ["return True"]) + [""]
        w.families |= h.families
        if single is not None:
            offset, size = single
            lines += ["", _DECORATOR, "def value_and_grad_io(ins, aux, buf, fns, x, g):"]
            copy_in = [f"xs = x.reshape({size})", f"for j in range({size}):", f"    buf[{offset} + j] = xs[j]"]
            gradient = f"buf[{n_values + offset} + j]"
            copy_out = [f"gs = g.reshape({size})", f"for j in range({size}):", f"    gs[j] = {gradient}"]
            lines += _indent(copy_in + ["ok = value_and_grad(ins, aux, buf, fns)"] + copy_out + ["return ok"])
            # and an HVP: x and the direction v in, H v out
            lines += ["", _DECORATOR, "def hvp_io(ins, aux, buf, tangents, adj2, fns, x, v, hv):"]
            seed = [f"vs = v.reshape({size})", f"for j in range({size}):", f"    tangents[{offset} + j] = vs[j]"]
            result = [f"hs = hv.reshape({size})", f"for j in range({size}):", f"    hs[j] = adj2[{offset} + j]"]
            lines += _indent(copy_in + seed + ["ok = hvp(ins, aux, buf, tangents, adj2, fns)"] + result + ["return ok"])
            lines += [""]
    return "\n".join(lines), w.families
