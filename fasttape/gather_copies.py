"""Per-tape kernels: a gather that copies a few contiguous runs (a stack, a concatenation) written out.

The gather family's kernels read every position from the index pool, one element at a time; when a
row's positions form at most ``MAX_GATHER_RUNS`` runs of consecutive positions (for a loop body
recorded K times, the same runs in every iteration, each from one position or one that moves with
the iterations), ``fasttape.tape_source`` writes each run out instead, moved as the family declares
its sweeps (``families.gather.AS_RUNS``: copied forward and in a tangent pass, scatter-added in the
reverse, to the second-order adjoints too forward-over-reverse).
"""

from __future__ import annotations

import numpy as np

from .families import FAMILY_BY_OPCODE, gather

MAX_GATHER_RUNS = 8  # a gather copying this many contiguous runs or fewer is written out as copies
_ARRAYS = {"value": "buf[{}]", "tangent": "tangents[{}]", "adjoint2": "adj2[{}]"}  # ("adjoint": buf[N + p])
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
        base = " + base" if self.plan.period(i) is not None else ""
        return [line for at, source, moves, size in runs
                for line in self.run_lines(sweep, f"{self.plan.outs[i] + at}{base}",
                                           f"{source}{' + base' if moves else ''}", size)]  # fmt: skip

    def run_lines(self, sweep: str, out_at: str, in_at: str, size: int) -> list[str]:
        """One run of ``size`` positions from ``in_at`` to ``out_at`` (index expressions) in ``sweep``, as the
        gather family declares its sweeps (``gather.AS_RUNS``)."""
        if size > 1:
            out_at, in_at = out_at + " + j", in_at + " + j"
        lines = []
        for array, how in gather.AS_RUNS[sweep]:
            at = _ARRAYS[array] if array != "adjoint" else f"buf[{self.N} + {{}}]"
            target, source = (out_at, in_at) if how == "copy" else (in_at, out_at)
            line = f"{at.format(target)} {'=' if how == 'copy' else '+='} {at.format(source)}"
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
        positions = gather.positions(self.ins, rows, self.aux)  # (iterations, n)
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
