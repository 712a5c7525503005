"""Loop bodies recorded again and again: the periodic regions of a tape, found in its rows.

A Python loop over floats (an Euler integrator, a pendulum, a recurrence) records its body once per
iteration: rows ``s .. s + P - 1`` and ``s + P .. s + 2P - 1`` are the same instructions, their
outputs ``D`` values further on, each operand either the same value (a parameter, a constant) or
the one ``D`` values further on (what the previous iteration computed).  A *period* is such a run of
``K`` iterations; ``fasttape.tape_source`` writes it once, as a loop over the iterations, instead
of ``K`` copies (straight-line code of thousands of rows takes minutes to compile).

The search compares each row with the row ``P`` further on, for the few ``P`` that separate equal
rows most often, all rows at once (NumPy), and keeps the periods that cover the most rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import C_A, C_B, C_C, C_FLAGS, C_N, C_NA, C_NB, C_NC, C_OP, C_OUT

MIN_ITERATIONS = 4
MIN_ROWS = 64  # rows a period must cover to be worth a loop (fewer compile fast as straight lines)
CANDIDATES = 6  # body lengths tried: the most frequent distances between equal rows
OPERANDS = (C_A, C_B, C_C)


@dataclass(frozen=True)
class Period:
    start: int  # first row of the first iteration
    length: int  # rows per iteration (P)
    count: int  # iterations (K)
    stride: int  # values per iteration (D): an iteration's outputs are D positions after the previous one's
    strided: tuple  # per body row: per operand column, True when it moves by ``stride`` each iteration

    @property
    def stop(self) -> int:
        return self.start + self.length * self.count


def find_periods(ins: np.ndarray) -> list[Period]:
    """The periodic regions of ``ins``, disjoint, in row order."""
    n = ins.shape[0]
    if n < 2 * MIN_ITERATIONS:
        return []
    signature = np.ascontiguousarray(ins[:, [C_OP, C_FLAGS, C_N, C_NA, C_NB, C_NC]])
    _, ids = np.unique(signature, axis=0, return_inverse=True)
    ids = ids.ravel()
    found, tried = [], _candidate_lengths(ids)
    for length in tried:
        found += _periods_of_length(ins, ids, length)
    if 2 * max((p.length * p.count for p in found), default=0) < n:  # most rows in no period yet
        for length in _self_similar(ids):
            if length not in tried:
                found += _periods_of_length(ins, ids, length)
    chosen: list[Period] = []
    taken = np.zeros(n, dtype=bool)
    for period in sorted(found, key=lambda p: -(p.length * p.count)):
        if not taken[period.start : period.stop].any():
            chosen.append(period)
            taken[period.start : period.stop] = True
    return sorted(chosen, key=lambda p: p.start)


def _candidate_lengths(ids: np.ndarray) -> list[int]:
    """The body lengths worth trying first: the distances at which equal rows recur most often."""
    order = np.lexsort((np.arange(ids.size), ids))
    same = ids[order[1:]] == ids[order[:-1]]
    distances = (order[1:] - order[:-1])[same]
    distances = distances[distances * MIN_ITERATIONS <= ids.size]
    if distances.size == 0:
        return []
    values, counts = np.unique(distances, return_counts=True)
    return [int(v) for v in values[np.argsort(-counts, kind="stable")][:CANDIDATES]]


def _self_similar(ids: np.ndarray) -> list[int]:
    """The shifts d (up to a 1 / MIN_ITERATIONS of the rows) at which ids[i] == ids[i + d] for the largest
    share of rows, best first.  A body whose rows repeat inside it (a Runge-Kutta step evaluates one
    right-hand side four times) recurs at short distances more often than at its own length, which this
    finds: every class of rows gets a random phase, and the autocorrelation of the phases (one FFT)
    counts the equal pairs at every shift at once (pairs of different classes add noise of mean zero)."""
    n = ids.size
    longest = n // MIN_ITERATIONS
    if longest < 2:
        return []
    rng = np.random.default_rng(0)  # (the same candidates every time for the same rows)
    score = np.zeros(longest + 1)
    size = 1 << (2 * n - 1).bit_length()  # (a power of two: a fast FFT; zero padding, no wrap-around)
    for _ in range(2):
        phases = np.exp(2j * np.pi * rng.random(int(ids.max()) + 1))[ids]
        spectrum = np.fft.fft(phases, size)
        score += np.fft.ifft(spectrum * np.conj(spectrum)).real[: longest + 1]
    share = score[1:] / (2 * (n - np.arange(1, longest + 1)))
    return [int(d) + 1 for d in np.argsort(-share, kind="stable")[:CANDIDATES]]


def _periods_of_length(ins: np.ndarray, ids: np.ndarray, length: int) -> list[Period]:
    n = ins.shape[0]
    a, b = slice(0, n - length), slice(length, n)
    stride = ins[b, C_OUT] - ins[a, C_OUT]
    match = (ids[a] == ids[b]) & (stride > 0)
    moves = []
    for col in OPERANDS:
        rel = ins[b, col] - ins[a, col]
        match &= (rel == 0) | (rel == stride)
        moves.append(rel == stride)
    moves = np.stack(moves, axis=1) if moves else np.zeros((n - length, 0), dtype=bool)
    # each pair (i, i + P) holds; the stride is one for the whole period, and each operand moves (or stays)
    # the same way from every iteration to the next
    m = n - length
    same_next = np.zeros(m, dtype=bool)
    if m > length:
        same_stride = stride[: m - length] == stride[length:]
        same_next[: m - length] = same_stride & (moves[: m - length] == moves[length:]).all(1)
    periods = []
    i = 0
    while i < m:
        if not match[i]:
            i += 1
            continue
        start = i
        # pairs start .. end-1 match, with one stride, and the moves repeat between consecutive pairs
        end = start + 1
        while end < m and match[end] and stride[end] == stride[start]:
            if end - start >= length and not same_next[end - length]:
                break
            end += 1
        count = (end - start + length) // length
        if count >= MIN_ITERATIONS and count * length >= MIN_ROWS:
            body = range(start, start + length)
            strided = tuple(tuple(bool(moves[r, c]) for c in range(len(OPERANDS))) for r in body)
            periods.append(Period(start, length, count, int(stride[start]), strided))
        i = max(end, i + 1)
    return periods
