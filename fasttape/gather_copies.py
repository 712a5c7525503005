"""Per-tape kernels: a gather that copies a few contiguous runs (a stack, a concatenation) written out.

The gather family's kernels read every position from the index pool, one element at a time; when a
row's positions form at most ``MAX_GATHER_RUNS`` runs of consecutive positions (for a loop body
recorded K times, the same runs in every iteration, each from one position or one that moves with
the iterations), ``fasttape.tape_source`` writes the family's semantics out instead: the runs
copied forward and in a tangent pass, and scatter-added in the reverse (to the second-order
adjoints too, forward-over-reverse).
"""

from __future__ import annotations

import numpy as np

from .families import FAMILY_BY_OPCODE, gather

MAX_GATHER_RUNS = 8  # a gather copying this many contiguous runs or fewer is written out as copies
_GATHER = next(family for family in FAMILY_BY_OPCODE if family.module is gather)


class GatherCopies:
    """The gather part of ``fasttape.tape_source``'s writer (a mixin: it uses the writer's plan, ins, aux,
    N and ``call``)."""

    def call_lines(self, i: int, sweep: str, args: str) -> list[str]:
        """A family row's sweep: its kernel's call, or for a gather that copies a few contiguous runs (a
        stack, a concatenation), those copies written out (its kernel reads every position from the index
        pool, one element at a time)."""
        runs = self.gather_runs(i)
        if runs is None:
            return [self.call(i, sweep, args)]
        # (what the gather family's kernels do: copy the runs forward; the reverse scatter-adds, on the
        # first-order adjoints and, forward-over-reverse, on the second-order ones too)
        value, adjoint = "buf[{}]", f"buf[{self.N} + {{}}]"
        copies = {"forward": [(value, "=")], "tangent": [("tangents[{}]", "=")], "reverse": [(adjoint, "+=")],
                  "second": [(adjoint, "+="), ("adj2[{}]", "+=")]}[sweep]  # fmt: skip
        lines = []
        base = " + base" if self.plan.period(i) is not None else ""
        for at, source, moves, size in runs:
            for array, op in copies:
                out_at, in_at = f"{self.plan.outs[i] + at}{base}", f"{source}{' + base' if moves else ''}"
                if size > 1:
                    out_at, in_at = out_at + " + j", in_at + " + j"
                line = f"{array.format(out_at)} = {array.format(in_at)}"
                if op == "+=":
                    line = f"{array.format(in_at)} += {array.format(out_at)}"
                lines += [f"for j in range({size}):", "    " + line] if size > 1 else [line]
        return lines

    def gather_runs(self, i: int) -> list | None:
        """(offset in the output, source position, whether it moves with a period's iterations, length) of
        the contiguous runs a gather row copies, when there are at most ``MAX_GATHER_RUNS`` and, for a body
        row, every iteration copies the same runs, each from the same position or one ``stride`` further per
        iteration; else None."""
        n = self.plan.sizes[i]
        if FAMILY_BY_OPCODE[self.ops[i]] is not _GATHER or n < 1:
            return None
        period = self.plan.period(i)
        rows = [i] if period is None else range(i, period.stop, period.length)
        starts = self.ins[rows, gather.P_START].astype(np.int64)
        positions = np.asarray(self.aux, dtype=np.int64)[starts[:, None] + np.arange(n)]  # (iterations, n)
        cuts = np.flatnonzero(np.diff(positions[0]) != 1) + 1
        if len(cuts) >= MAX_GATHER_RUNS:
            return None
        shift = positions - positions[0]
        runs = []
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), n]):
            if not shift[:, a:b].any():
                moves = False
            elif period is not None and (shift[:, a:b] == period.stride * np.arange(len(rows))[:, None]).all():
                moves = True
            else:
                return None
            runs.append((a, int(positions[0, a]), moves, b - a))
        return runs
