"""Per-tape kernels, a JVP's tangent pass: what ``fasttape.tape_source`` writes once per direction.

After the forward, the tangent pass runs once per direction in one plane of tangents.  A direction
skips every block that none of its sources reaches: each block outside periods gets a flag
(``l{b}``), set from its sources' flags and the seed (``n{p}_{m}``); a loop reading at most
``MAX_VARIANT_FLAGS`` such blocks is written once per combination of them, without the skipped ones'
terms (one reading more reads a plane of zeros for them), and a family kernel's operands from a
skipped block are zeroed before it reads them.  A gather's copies take one flag per row they copy
from.  A row whose whole output only the caller reads writes its tangents to ``results`` directly;
the rest are copied there after the direction.
"""

from __future__ import annotations

import itertools

from .generated_loops import copy
from .generated_loops import indent as _indent
from .layout import F_ACTIVE, F_GRAD_A, F_GRAD_B
from .tape_plan import Plan

MAX_VARIANT_FLAGS = 2  # a JVP's loop reading this many skippable blocks or fewer is written in variants
_GRAD = (F_GRAD_A, F_GRAD_B)


class TangentPass:
    """The tangent pass's part of ``fasttape.tape_source``'s writer (a mixin: it uses the writer's plan,
    flags, ``forward_block``, ``zero`` and ``gather_runs``)."""

    def live_source(self, row: int, p: int) -> str | None:
        """The flag that says whether the tangent at position ``p``, read by ``row``, may be nonzero in
        this direction: its block's ``l{b}`` (a block outside periods, other than row's), "input" (an
        input's flag, ``n{p}_{m}``, is set at the start of the direction), "same" (row's own block) or
        None (a period's row: computed whatever the direction)."""
        q = self.plan.row_of(p)
        if q < 0:
            return "input"
        if self.plan.block_of[q] == self.plan.block_of[row]:
            return "same"
        if self.plan.period_of[q] >= 0:
            return None
        return f"l{self.plan.block_of[q]}"

    def block_sources(self, block) -> list:
        """(offset, size, flag) of every differentiated operand range a block's tangents read from outside it."""
        sources = []
        for i in block.rows:
            if not self.flags[i] & F_ACTIVE:
                continue
            if block.is_call:
                ranges = self.written[i]
            else:
                ranges = [r for k, r in enumerate(self.plan.operands[i]) if self.flags[i] & _GRAD[k]]
            for p, m in ranges:
                live = self.live_source(i, p)
                if live == "input":
                    live = self.inputs.setdefault((p, m), f"n{p}_{m}")
                if live != "same":
                    sources.append((p, m, live))
        return sources

    def liveness(self, block) -> list[str]:
        """``l{b} = ...``: whether a block outside periods has a nonzero tangent in this direction."""
        flags = {live for _, _, live in self.block_sources(block)}
        expr = "True" if None in flags else " or ".join(sorted(flags)) or "False"
        return [f"l{self.plan.block_of[block.start]} = {expr}"]

    def zero_dead_operands(self, block) -> list[str]:
        """Before a family kernel reads its operands' tangents: zero those of blocks skipped in this direction."""
        lines = []
        for p, m, live in self.block_sources(block):
            if live is not None and live.startswith("l") and m > 0:
                lines += [f"if not {live}:"] + _indent(self.zero(p, m, "tan"))
        return lines

    def input_flags(self) -> list[str]:
        """``n{p}_{m}``: whether a differentiated input range's seed in this direction has a nonzero."""
        lines = []
        for (p, m), name in self.inputs.items():
            if m == 1:
                lines.append(f"{name} = tangents[{p}] != 0.0")
                continue
            lines += [f"{name} = False", f"for j in range({m}):", f"    if tangents[{p} + j] != 0.0:",
                      f"        {name} = True", "        break"]  # fmt: skip
        return lines

    def zero_dead_results(self) -> list[str]:
        """After a direction: the caller reads zeros where a skipped block's tangents are results."""
        lines = []
        for p, m in self.plan.caller_reads:
            q = self.plan.row_of(p)
            if m > 0 and q >= 0 and self.plan.period_of[q] < 0 and self.flags[q] & F_ACTIVE:
                zeros = self.zero(p, m, "tan")
                if q in self.direct:
                    zeros = [f"results[dR + {self.direct[q]}{' + j' if m > 1 else ''}] = 0.0"]
                    zeros = _loop_lines(m, zeros)
                lines += [f"if not l{self.plan.block_of[q]}:"] + _indent(zeros)
        return lines

    def tangent_block(self, block, in_period: bool) -> list[str]:
        """A block's tangent pass: outside periods, skipped (its one-element locals zero) when none of its
        sources has a nonzero tangent in this direction."""
        body = self.forward_block(block, in_period)
        if not body:
            return []
        runs = None if in_period or not block.is_call else self.gather_runs(block.start)
        if runs is not None:  # copies written out: a run whose block was skipped is zeros, no copy
            body = [line for run in runs for line in self.tangent_run(block.start, run)]
        elif block.is_call and not self.plan.operands[block.start]:  # (a family kernel reads the buffer)
            body = self.zero_dead_operands(block) + body
        if in_period:
            return body
        if block.n > 1 or (block.is_call and self.plan.operands[block.start]):
            body = self.variants(block) or body
        lines = self.liveness(block) + [f"if l{self.plan.block_of[block.start]}:"] + _indent(body)
        if block.n == 1:  # the locals later blocks read
            zeros = [f"u{i} = 0.0" for i in block.rows if self.flags[i] & F_ACTIVE]
            lines += ["else:"] + _indent(zeros)
        return lines

    def variants(self, block) -> list[str]:
        """A loop's tangent pass written once per combination of the skipped-or-not blocks it reads (at most
        ``MAX_VARIANT_FLAGS`` of them), each variant without the terms of the skipped ones: no reads of
        zeros, no products by them (a chain ``m2 = m1 + w * s`` whose ``s`` is zero in this direction is a
        copy).  Empty when the loop reads more blocks than that (it reads zeros for the skipped ones)."""
        sources = [live for _, _, live in self.block_sources(block)]
        flags = sorted({live for live in sources if live is not None and live.startswith("l")})
        others = any(live is None or not live.startswith("l") for live in sources)  # inputs, periods' rows
        if not flags or len(flags) > MAX_VARIANT_FLAGS:
            return []
        lines = []
        cases = [c for r in range(len(flags), -1, -1) for c in itertools.combinations(flags, r) if c or others]
        for n, case in enumerate(cases):
            self.live, self.dead, self.zeroed = set(case), set(flags) - set(case), set()
            try:
                body = self.forward_block(block) or ["pass"]
            finally:
                self.live, self.dead, self.zeroed = set(), set(), set()
            head = "else:" if n == len(cases) - 1 else f"{'if' if n == 0 else 'elif'} {' and '.join(case)}:"
            lines += ([head] + _indent(body)) if len(cases) > 1 else body
        return lines

    def tangent_run(self, i: int, run) -> list[str]:
        """A JVP direction's copy of one run of a gather outside periods, or zeros where its source's block
        was skipped in this direction."""
        at, source, _, size = run
        lines = []
        for p, m, differentiated in self.run_parts(i, source, size):
            target = self.plan.outs[i] + at + p - source
            zeros = self.zero(target, m, "tan")
            if not differentiated:  # (a constant, or no function of the inputs: a zero tangent)
                lines += zeros
                continue
            live = self.live_source(i, p)
            copied = self.run_lines("tangent", str(target), str(p), m)
            if live is None or not live.startswith("l"):
                lines += copied
            else:
                lines += [f"if {live}:"] + _indent(copied) + ["else:"] + _indent(zeros)
        return lines

    def run_parts(self, i: int, source: int, size: int):
        """(offset, size, differentiated) of the parts of a gather's run that lie in one row's output each
        (one flag each) and are all inside, or all outside, the ranges whose tangents the gather reads."""
        for p, m in self.plan.pieces(source, size):
            cuts = {p, p + m}
            for a, n in self.written[i]:
                cuts.update(c for c in (a, a + n) if p < c < p + m)
            edges = sorted(cuts)
            for a, b in zip(edges, edges[1:]):
                yield a, b - a, any(c <= a and b <= c + n for c, n in self.written[i])


def _loop_lines(size: int, body: list[str]) -> list[str]:
    return body if size == 1 else [f"for j in range({size}):"] + _indent(body)


def direct_results(plan: Plan) -> dict:
    """row -> offset in a JVP's ``results`` of the rows outside periods, elementwise and not fused sums, whose
    whole output is one range the caller reads and nothing else reads (no row, family kernel or guard):
    their tangent pass writes there, not to the plane."""
    read = [r for operands in plan.operands for r in operands] + [r for rs in plan.family_reads for r in rs]
    read += [(p, 1) for p, _ in plan.guards]
    rows = [plan.row_of(p) for p, _ in plan.caller_reads]
    direct, q = {}, 0
    for (p, m), row in zip(plan.caller_reads, rows):
        if (m and row >= 0 and rows.count(row) == 1 and plan.elementwise[row] and not plan.fused[row]
                and plan.period_of[row] < 0 and plan.outs[row] == p and plan.sizes[row] == m
                and not any(a < p + m and p < a + b for a, b in read)):  # fmt: skip
            direct[row] = q
        q += m
    return direct


def results_out(caller_reads, direct) -> list[list[str]]:
    """A JVP direction's tangents that the caller reads, copied to its row of ``results`` (the ranges one
    after another; those ``direct`` rows wrote there already): a small array that stays in cache from call
    to call, where the rows of ``tangents_all`` at the same positions are one plane of N apart."""
    copies, q = [], 0
    written = {q for q in direct.values()}
    for p, m in caller_reads:
        if m and q not in written:
            copies.append(copy(f"results[dR + {q} + j]", f"plane[{p} + j]", m))
        q += m
    return copies
