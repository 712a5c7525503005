"""The slots of a recording: what each names in the tape's buffer (its offset, shape, kind, activity and
origin), and the table of them by id that the recorder fills and a frozen tape keeps.

A scalar loop records one row per Python operation, and each row writes a slot of its own: 10⁵ slots
and more, most never read again.  The table makes the output slot of a row recorded by the scalar path
(:mod:`fasttape.scalar_recording`) only when something first asks for it, from the row itself: tracing
then keeps no object per row (an object costs its allocation, and the cyclic collector walks it after the
trace).
"""

from __future__ import annotations

import math
import weakref

import numpy as np


class _Slot:
    """What every slot has: a place in the tape's buffer and whether it depends on a differentiated input."""

    __slots__ = ("offset", "active")

    def __repr__(self):
        return f"Slot(offset={self.offset}, shape={self.shape}, kind={self.kind!r}, origin={self.origin[0]!r})"

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.kind]


class Slot(_Slot):
    """A contiguous run of values in the tape's buffer."""

    __slots__ = ("shape", "kind", "origin", "size", "level", "ref")

    def __init__(self, offset: int, shape: tuple, active: bool, kind: str, origin: tuple, level=None, size=None):
        self.offset = offset
        self.shape = shape
        self.active = active  # depends on a differentiated input
        self.kind = kind  # the dtype it stands for: "f" float64, "b" bool, "i" int64 (each held as a float64)
        self.origin = origin  # ("input", name) | ("const", value) | ("view", parent) | ("op", row)
        self.size = math.prod(shape) if size is None else size
        self.level = level  # the nesting.Level of the deepest transformation it depends on; None: the trace's own
        self.ref = None  # a weak reference to a tracer of it, for its value (nested transformations)

    def remember(self, tracer) -> None:
        """Keep a weak reference to ``tracer``, a tracer of this slot, unless a live one is kept already."""
        if self.ref is None or self.ref() is None:
            self.ref = weakref.ref(tracer)

    def value(self):
        """The slot's value, from a live tracer of it (None if there is none)."""
        tracer = self.ref() if self.ref is not None else None
        return None if tracer is None else tracer._value

    def hold(self, value) -> None:
        """Keep ``value`` itself, for a slot read often whose tracers live briefly (an element ``A[i, j]``):
        ``remember`` need not be called for each of them."""
        self.ref = _Held(value)


class _Held:
    """Stands where a weak reference to a tracer would: calling it gives back an object with the value."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def __call__(self):
        return self


class ScalarSlot(_Slot):
    """The 0-d float64 output of row ``row``, recorded by the scalar path (:mod:`fasttape.scalar_recording`)
    while no nested transformation was open: its shape, kind, size and level are those of every such slot
    (class attributes), and it keeps its value as a Python float.  Four fields and no weak reference: a
    scalar loop records 10⁵ rows, and each object and byte kept per row costs tracing time (memory first
    touched costs a page fault; the cyclic collector walks every container)."""

    __slots__ = ("row", "kept")
    shape, kind, size, level = (), "f", 1, None

    def __init__(self, offset: int, active: bool, row: int, kept: float):
        self.offset, self.active, self.row, self.kept = offset, active, row, kept

    @property
    def origin(self):
        return ("op", self.row)

    def remember(self, tracer) -> None:
        pass

    def value(self):
        return np.asarray(self.kept)


# the dtypes a slot stands for, by kind; integers are held exactly in the float64 buffer up to 2**53
DTYPES = {"f": np.dtype(np.float64), "b": np.dtype(bool), "i": np.dtype(np.int64)}


TYPE_NAMES = {"f": "f64", "b": "bool", "i": "i64"}  # in listings and reprs


def kind_of(dtype) -> str:
    """The slot kind of a NumPy dtype: "b", "i" (any integer) or "f"."""
    kind = np.dtype(dtype).kind
    return "b" if kind == "b" else "i" if kind in "iu" else "f"


class SlotTable(dict):
    """The slots of a recording by id, read as a sequence: ``table[sid]``, ``len(table)`` and iteration in
    id order.  ``add`` appends a slot; the scalar path only counts its rows' output slots (``count``), which
    are made the first time they are read, from ``source.scalar_output(sid)`` (the row log while
    recording, its frozen columns afterwards) -> (row, offset, active, value)."""

    __slots__ = ("count", "source")

    def __init__(self, source):
        super().__init__()
        self.count = 0
        self.source = source

    def add(self, slot) -> int:
        sid = self.count
        self[sid] = slot
        self.count = sid + 1
        return sid

    def __missing__(self, sid):
        if not -self.count <= sid < self.count:
            raise IndexError(f"slot {sid} of a recording of {self.count} slots")
        if sid < 0:
            return self[sid + self.count]
        row, offset, active, value = self.source.scalar_output(sid)
        slot = self[sid] = ScalarSlot(offset, active, row, value)
        return slot

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return (self[sid] for sid in range(self.count))
