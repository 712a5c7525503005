"""The rows a recording appends, in one flat buffer: each row's integers (the instruction table's
layout, :mod:`fasttape.layout`), its output's slot id and its operands'.

A scalar loop records one row per Python operation, 10⁵ rows and more, so what a row keeps is part of
the cost of tracing it.  Here a row is one ``RECORD`` appended to a ``bytearray``: the row, its output
slot, its number of operands and the first ``INLINE`` of them (a row with more keeps them all in
``more``, by row).  No object per row for the allocator to place (memory first touched costs a page
fault) or for the cyclic collector to walk, one ``struct`` call to append it, and freezing the tape
copies columns instead of converting tuples.  While recording, nested transformations read rows back
(``row``, ``operands``, ``out``); a frozen tape keeps its rows' operands as :class:`RowOperands`.

A row recorded by the scalar path (two operands at most) keeps its output's value, a float64, where a
third operand would be (``VALUE``): its output slot is made from the row when first read
(:class:`fasttape.slots.SlotTable`), by ``scalar_output`` here or, once frozen, by
:class:`ScalarOutputs`.
"""

from __future__ import annotations

import bisect
import struct

import numpy as np

from .layout import C_FLAGS, C_OUT
from .layout import ROW as ROW_LENGTH

INLINE = 3  # operands kept in a row's record (more: in RowLog.more)
OUT, COUNT, FIRST = ROW_LENGTH, ROW_LENGTH + 1, ROW_LENGTH + 2  # a record's columns after the row's
WIDTH = FIRST + INLINE
RECORD = struct.Struct(f"={WIDTH}q")  # native int64s, as the frozen arrays hold them
VALUE = WIDTH - 1  # a scalar-path row's output value (float64 bits), where a third operand would be
_VALUE = struct.Struct("=d")
_PADDING = (0,) * INLINE


class RowLog:
    """The rows of a recording, appended in order."""

    __slots__ = ("table", "more")

    def __init__(self):
        self.table = bytearray()  # the records, RECORD.size bytes each
        self.more: dict[int, tuple] = {}  # the operands of the rows that have more than INLINE

    def __len__(self) -> int:
        return len(self.table) // RECORD.size

    def append(self, row, operands, out: int) -> None:
        n = len(operands)
        if n > INLINE:
            self.more[len(self)] = tuple(operands)
            inline = _PADDING
        else:
            inline = (*operands, *_PADDING)[:INLINE]
        self.table += RECORD.pack(*row, out, n, *inline)

    def _record(self, i: int) -> tuple:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        return RECORD.unpack_from(self.table, i * RECORD.size)

    def row(self, i: int) -> tuple:
        return self._record(i)[:ROW_LENGTH]

    def operands(self, i: int) -> tuple:
        record = self._record(i)
        n = record[COUNT]
        return record[FIRST : FIRST + n] if n <= INLINE else self.more[i]

    def out(self, i: int) -> int:
        return self._record(i)[OUT]

    def scalar_output(self, sid: int) -> tuple[int, int, bool, float]:
        """(row, offset, active, value) of ``sid``, the output slot of a row the scalar path recorded."""
        n = len(self)
        with memoryview(self.table).cast("q") as columns:  # (released: the table may grow again)
            # rows' output slots increase with the rows: each row's is made just before it is appended
            row = bisect.bisect_left(range(n), sid, key=lambda r: columns[r * WIDTH + OUT])
            if row == n or columns[row * WIDTH + OUT] != sid:
                raise KeyError(f"slot {sid} is not the output of a row")
            offset, flags = columns[row * WIDTH + C_OUT], columns[row * WIDTH + C_FLAGS]
        value = _VALUE.unpack_from(self.table, (row * WIDTH + VALUE) * 8)[0]
        return row, offset, flags != 0, value

    def frozen(self) -> tuple[np.ndarray, RowOperands, np.ndarray, ScalarOutputs]:
        """The rows as an int64 array of shape (n, ROW_LENGTH), their operands, their output slots and
        what makes the scalar path's output slots (copies: the log may grow again)."""
        records = np.frombuffer(self.table, dtype=np.int64).reshape(len(self), WIDTH)
        counts = records[:, COUNT]
        start = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=start[1:])
        slot = np.empty(int(start[-1]), dtype=np.int64)
        for k in range(INLINE):  # the k-th operand of every row that has one, kept inline
            rows = np.flatnonzero((counts > k) & (counts <= INLINE))
            slot[start[rows] + k] = records[rows, FIRST + k]
        for i, operands in self.more.items():
            slot[start[i] : start[i + 1]] = operands
        row_out = records[:, OUT].copy()
        outputs = ScalarOutputs(
            row_out, records[:, C_OUT].copy(), records[:, C_FLAGS] != 0, records[:, VALUE].copy().view(np.float64)
        )
        return records[:, :ROW_LENGTH].copy(), RowOperands(start, slot), row_out, outputs


class ScalarOutputs:
    """A frozen log's ``scalar_output``: per row, its output slot (increasing), offset, activity as
    recorded (the tape's flags change as it is planned) and ``VALUE`` column."""

    __slots__ = ("row_out", "offset", "active", "value")

    def __init__(self, row_out: np.ndarray, offset: np.ndarray, active: np.ndarray, value: np.ndarray):
        self.row_out, self.offset, self.active, self.value = row_out, offset, active, value

    def scalar_output(self, sid: int) -> tuple[int, int, bool, float]:
        row = int(np.searchsorted(self.row_out, sid))
        if row == self.row_out.size or self.row_out[row] != sid:
            raise KeyError(f"slot {sid} is not the output of a row")
        return row, int(self.offset[row]), bool(self.active[row]), float(self.value[row])


class RowOperands:
    """Each row's operand slot ids, read as a sequence of tuples; held as ``start`` (per row, and one
    past the last) and ``slot`` (row after row), the form the adjoint plan and saved tapes use."""

    __slots__ = ("start", "slot")

    def __init__(self, start: np.ndarray, slot: np.ndarray):
        self.start, self.slot = start, slot

    def __len__(self) -> int:
        return self.start.size - 1

    def __getitem__(self, i: int) -> tuple:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} of a tape of {n} rows")
        i %= n
        return tuple(self.slot[self.start[i] : self.start[i + 1]].tolist())

    def __iter__(self):
        slot, bounds = self.slot.tolist(), self.start.tolist()
        return (tuple(slot[begin:end]) for begin, end in zip(bounds, bounds[1:]))
