"""The recorder: appends one row of the flat instruction table (:mod:`fasttape.layout`) per primitive
while a user's function runs on tracers (:mod:`fasttape.tracer`), and the slots those rows read and
write.  :func:`fasttape.tracing.record` freezes it into a :class:`fasttape.tape.Tape`.

It also keeps what nested transformations (:mod:`fasttape.nesting`) need: the level each slot depends
on, and, once one is open, every slot's value.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading

import numpy as np

from . import families
from . import kernels as K
from .errors import TracerLeakError
from .row_log import RowLog
from .slots import Slot, SlotTable, kind_of

Tracer = None  # the class of the values the recorder hands out: set by fasttape.tracer, which defines it


class Recorder:
    """Appends instructions while a function runs on tracers."""

    def __init__(self):
        self.log = RowLog()  # the rows, their operands' and outputs' slot ids
        self.pool: list[np.ndarray] = []
        self.pool_len = K.HEADER
        self.slots = SlotTable(self.log)  # by id; the scalar path's outputs made when first read
        self.n_values = 0
        self.constants: list[tuple[int, np.ndarray]] = []
        self._scalar_constants: dict[bytes, int] = {}
        self._float_constants: dict[float | str, int] = {}  # the scalar path's lookups for Python floats
        self._int_constants: dict[int, int] = {}  # and ints
        self._elements: dict[tuple, tuple] = {}  # (slot, index) -> (its 0-d view, its tracer): scalar_recording
        self._array_constants: dict[int, tuple[int, object]] = {}
        self.guards: list[tuple[int, bool]] = []
        self.closed = False
        self.name = "a traced function"  # the trace, in error messages
        # nested transformations (fasttape.nesting): the innermost open level, each slot's value while one
        # is open, and the rows that never pass a derivative (stop_gradient)
        self.level = None
        self.values: dict | None = None
        self.frozen_rows: set[int] = set()

    # -- slots -------------------------------------------------------------
    def _new_slot(self, shape, active, kind, origin, level=None) -> int:
        slot = Slot(self.n_values, tuple(shape), active, kind, origin, level=level)
        self.n_values += slot.size
        return self.slots.add(slot)

    def input(self, value: np.ndarray, active: bool, name: str) -> Tracer:
        """An input slot; ``value``'s dtype is its kind (integer inputs are never differentiated)."""
        sid = self._new_slot(value.shape, active, kind_of(value.dtype), ("input", name))
        return Tracer(self, sid, value)

    def constant(self, value) -> int:
        """Slot id of a constant (deduplicated for scalars and for array objects)."""
        arr = np.asarray(value)
        if arr.dtype.kind == "c":
            raise TypeError(
                f"fasttape differentiates real float64 programs; got a complex constant of dtype {arr.dtype}. "
                "Split it into real and imaginary parts."
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot use a constant of dtype {arr.dtype} in a traced computation; use float arrays.")
        if arr.ndim == 0:
            key = arr.astype(np.float64).tobytes() + kind_of(arr.dtype).encode()  # bits (0.0 and -0.0 apart), kind
            if key in self._scalar_constants:
                return self._scalar_constants[key]
        elif id(value) in self._array_constants and isinstance(value, np.ndarray):
            sid, _keepalive = self._array_constants[id(value)]
            if self.slots[sid].shape == value.shape:
                return sid
        flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1).copy()
        sid = self._new_slot(arr.shape, False, kind_of(arr.dtype), ("const", flat))
        self.constants.append((self.slots[sid].offset, flat))
        if arr.ndim == 0:
            self._scalar_constants[key] = sid
        elif isinstance(value, np.ndarray):
            self._array_constants[id(value)] = (sid, value)
        return sid

    def view(self, sid: int, offset: int, shape, value, kind=None) -> Tracer:
        """A new name for values already in the buffer: no instruction, no copy (``kind``: another dtype
        for the same values, as ``astype``)."""
        parent = self.slots[sid]
        kind = kind or parent.kind
        if parent.level is not None and parent.level.closed:
            raise self.leak_error(parent.level)
        if offset == parent.offset and tuple(shape) == parent.shape and kind == parent.kind:
            return Tracer(self, sid, value)
        return Tracer(self, self._view_slot(sid, offset, shape, kind, parent.level), value)

    def alias(self, x: Tracer, level) -> Tracer:
        """A second name for ``x``'s values at another nesting level (a transformation's result handed to
        the level that called it): no instruction, no copy."""
        s = self.slots[x._sid]
        return Tracer(self, self._view_slot(x._sid, s.offset, s.shape, s.kind, level), x._value)

    def _view_slot(self, sid, offset, shape, kind, level) -> int:
        """A slot over ``sid``'s memory (it takes no room of its own)."""
        new = self._new_slot(shape, self.slots[sid].active, kind, ("view", sid), level)
        self.n_values -= self.slots[new].size
        self.slots[new].offset = offset
        return new

    def as_tracer(self, x) -> Tracer:
        """``x`` itself if traced, else a (constant, inactive) tracer of its value."""
        if isinstance(x, Tracer):
            self.slot_of(x)
            return x
        sid = self.constant(x)
        return Tracer(self, sid, np.asarray(x, dtype=self.slots[sid].dtype))

    def reshape(self, x: Tracer, shape) -> Tracer:
        """Every slot is C-contiguous, so a reshape is always a free view."""
        value = np.reshape(x._value, shape)
        return self.view(x._sid, self.slots[x._sid].offset, value.shape, value)

    def slot_of(self, x) -> int:
        if isinstance(x, Tracer):
            if x._rec is not self:
                raise TracerLeakError(
                    f"a traced value of {x._rec.name} (another trace, or one that has finished) was mixed into "
                    f"{self.name}. Tracers must not outlive the traced function: return them (or pass them as "
                    "has_aux data) instead of storing them in globals."
                )
            return x._sid
        return self.constant(x)

    def where(self) -> str:
        """The current level, in error messages."""
        return self.level.name if self.level is not None else self.name

    def leak_error(self, level) -> TracerLeakError:
        """A tracer of ``level``, a transformation that has returned, used again."""
        return TracerLeakError(
            f"a traced value created inside {level.name} (level {level.depth}) was used after that "
            f"transformation returned, in {self.where()}. A tracer must not outlive the transformation that made "
            "it: return it from the function (or as has_aux data) instead of storing it."
        )

    # -- instructions --------------------------------------------------------
    def _emit(self, op, out_shape, operands, params=None, kind="f", value=None, grads=None, level=None):
        """Append one instruction writing a fresh slot; return its Tracer.  ``params``: the family's
        named parameters; a family's side store is allocated here, after the output.  The slot's level is
        the deepest of its operands' (or ``level``)."""
        if self.closed:
            raise TracerLeakError(
                f"this tracer belongs to {self.name}, a trace that has finished; tracers must not escape the traced "
                "function (return them instead of storing them in globals)."
            )
        prim = K.PRIMITIVE_BY_OPCODE[op]
        slots = [self.slots[s] for s in operands]
        values = self.values
        for s, slot in zip(operands, slots):
            lv = slot.level
            if lv is not None:
                if lv.closed:
                    raise self.leak_error(lv)
                if level is None or lv.serial > level.serial:
                    level = lv
            if values is not None and s not in values:
                value_of_operand = _value_of(slot)
                if value_of_operand is not None:
                    values[s] = value_of_operand
        if grads is None:
            grads = [s.active for s in slots]
        grads = [g and prim.differentiable for g in grads]
        active = any(grads)
        out = self._new_slot(out_shape, active, kind, ("op", len(self.log)), level)
        o = self.slots[out]
        family = families.of(op)
        named = dict(params or {})
        side = family.side_size(prim, named)
        if side:
            named["side"] = self.n_values
            self.n_values += side  # values no slot names: what the forward keeps for the other sweeps
        row = [op, o.offset, o.size, 0, 0, 0, 0, 0, 0, *family.pack(**named), 0]
        for k, s in enumerate(slots[:3]):
            row[K.C_A + 2 * k] = s.offset
            row[K.C_NA + 2 * k] = s.size
        flags = K.F_ACTIVE if active else 0
        for k, g in enumerate(grads[:3]):
            if g:
                flags |= (K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C)[k]
        row[K.C_FLAGS] = flags
        self.log.append(row, operands, out)
        return Tracer(self, out, value)

    def elementwise(self, op, args, value) -> Tracer:
        """An elementwise instruction; operands of another size are broadcast explicitly."""
        value = _as_value(value)
        shape = value.shape
        size = value.size
        operands = []
        for a in args:
            sid = self.slot_of(a)
            s = self.slots[sid]
            if s.size != 1 and s.size != size:
                if isinstance(a, Tracer):
                    sid = self.broadcast(a, shape)._sid
                else:
                    sid = self.constant(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))
            operands.append(sid)
        grads = [self.slots[s].active for s in operands]
        if op == K.OP_WHERE:
            grads[0] = False  # the condition is not differentiable
        return self._emit(op, shape, operands, kind=kind_of(value.dtype), value=value, grads=grads)

    def broadcast(self, x: Tracer, shape) -> Tracer:
        """Explicit broadcast; its reverse sweep sums the copies (unbroadcast)."""
        shape = tuple(shape)
        cur = list(np.shape(x._value))
        if len(cur) > len(shape):
            raise ValueError(f"cannot broadcast an array of shape {tuple(cur)} to shape {shape}")
        cur = [1] * (len(shape) - len(cur)) + cur
        for c, t in zip(cur, shape):
            if c != 1 and c != t:
                raise ValueError(f"operands could not be broadcast together: {np.shape(x._value)} to {shape}")
        result = x
        ax = 0
        while ax < len(shape):
            if cur[ax] == 1 and shape[ax] != 1:
                end = ax
                while end < len(shape) and cur[end] == 1 and shape[end] != 1:
                    end += 1
                pre = math.prod(cur[:ax])
                reps = math.prod(shape[ax:end])
                post = math.prod(cur[end:])
                before = tuple(cur)
                cur[ax:end] = shape[ax:end]
                value = np.broadcast_to(np.reshape(result._value, before), tuple(cur))
                result = self._emit(
                    K.OP_BROADCAST,
                    tuple(cur),
                    [result._sid],
                    {"pre": pre, "r": reps, "post": post},
                    kind=self.slots[result._sid].kind,
                    value=np.array(value),
                )
                ax = end
            else:
                ax += 1
        if result is x:
            return self.reshape(x, shape)
        return result

    def reduce(self, op, x: Tracer, axis, keepdims, value, kind="f") -> Tracer:
        """A reduction over ``axis`` (None, int or tuple), lowered to (pre, r, post) form."""
        value = _as_value(value)
        shape = self.slots[x._sid].shape
        axes = normalize_axes(axis, len(shape))
        if not axes:
            return x
        if axes != tuple(range(axes[0], axes[-1] + 1)):  # not adjacent: move them last
            kept = tuple(a for a in range(len(shape)) if a not in axes)
            x = move(np.transpose, [x], kept + axes)
            shape = self.slots[x._sid].shape
            axes = tuple(range(len(kept), len(shape)))
        pre = math.prod(shape[: axes[0]])
        r = math.prod(shape[axes[0] : axes[-1] + 1])
        post = math.prod(shape[axes[-1] + 1 :])
        if op == K.OP_CUMSUM:
            return self._emit(op, shape, [x._sid], {"pre": pre, "r": r, "post": post}, value=value)
        out_shape = tuple(d for a, d in enumerate(shape) if a not in axes)
        extents = {"pre": pre, "r": r, "post": post}
        t = self._emit(op, out_shape, [x._sid], extents, kind=kind, value=value.reshape(out_shape))
        if value.shape != out_shape:
            return self.reshape(t, value.shape)
        return t

    def gather(self, index: np.ndarray, value, sources) -> Tracer:
        """Data movement through absolute buffer positions; contiguous runs become views."""
        value = _as_value(value)
        flat = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
        n = flat.size
        src_slots = [self.slot_of(s) for s in sources]
        if n > 0 and flat[-1] - flat[0] == n - 1 and (n < 3 or np.all(np.diff(flat) == 1)):
            for parent in src_slots:  # a view must lie inside one slot (activity is per slot)
                s = self.slots[parent]
                if s.offset <= flat[0] and flat[-1] < s.offset + s.size:
                    return self.view(parent, int(flat[0]), value.shape, value)
        start = self.pool_len
        self.pool.append(flat)
        self.pool_len += n
        return self._emit(
            K.OP_GATHER,
            value.shape,
            src_slots,
            {"start": start, "count": n},
            kind=kind_of(value.dtype),
            value=value,
            grads=[any(self.slots[s].active for s in src_slots)],
        )

    def take(self, x, index: Tracer, axis: int, along: bool, value) -> Tracer:
        """``x`` indexed along ``axis`` by the integer tracer ``index``, read in the sweep: ``np.take`` (its
        shape: x's with that axis replaced by index's) or, ``along``, ``np.take_along_axis`` (index already
        of x's shape but for that axis)."""
        value = _as_value(value)
        x = self.as_tracer(x)
        shape = x.shape
        pre, n = math.prod(shape[:axis]), shape[axis]
        params = {"pre": pre, "n": n, "mode": (1 if along else 0) | axis << 1}
        grads = [self.slots[x._sid].active, False]
        return self._emit(K.OP_TAKE, value.shape, [x._sid, index._sid], params, kind=kind_of(value.dtype),
                          value=value, grads=grads)  # fmt: skip

    def scatter(self, x, positions: Tracer, values, add: bool, value) -> Tracer:
        """``x`` (flat) with ``values`` added (``add``) or written at the flat ``positions`` (an integer
        tracer of the same size as ``values``), read in the sweep."""
        value = _as_value(value)
        x, values = self.as_tracer(x), self.as_tracer(values)
        params = {"n": x.size, "mode": 0 if add else 1}
        grads = [self.slots[x._sid].active, False, self.slots[values._sid].active]
        return self._emit(K.OP_SCATTER, value.shape, [x._sid, positions._sid, values._sid], params,
                          kind=kind_of(value.dtype), value=value, grads=grads)  # fmt: skip

    def matmul(self, a, b, value) -> Tracer:
        """Batched matrix product; 1-D operands are promoted as in np.matmul."""
        value = _as_value(value)
        a2, b2 = self.as_tracer(a), self.as_tracer(b)
        if a2.ndim == 1:
            a2 = self.reshape(a2, (1, a2.shape[0]))
        if b2.ndim == 1:
            b2 = self.reshape(b2, (b2.shape[0], 1))
        A2, B2 = a2.shape, b2.shape
        batch = np.broadcast_shapes(A2[:-2], B2[:-2])
        m, k, n = A2[-2], A2[-1], B2[-1]
        if A2[:-2] != batch:
            a2 = self.broadcast(a2, batch + (m, k))
        if B2[:-2] != batch:
            b2 = self.broadcast(b2, batch + (k, n))
        out = self._emit(
            K.OP_MATMUL,
            batch + (m, n),
            [a2._sid, b2._sid],
            {"batch": math.prod(batch), "m": m, "k": k, "n": n},
            value=value.reshape(batch + (m, n)),
        )
        return self.reshape(out, value.shape)

    def linalg(self, op, operands, value, grads=None, **params) -> Tracer:
        """A linear-algebra instruction (the linalg and factor families) on matrices (..., n, n) and
        right-hand sides (..., n, m), their batch axes broadcast; ``value``: its result, shaped (batch, ...);
        ``grads``: which operands are differentiated (by default the active ones); ``params``: the family's
        parameters besides ``batch`` and ``n``."""
        value = _as_value(value)
        tracers = [self.as_tracer(x) for x in operands]
        n = tracers[0].shape[-1]
        batch = np.broadcast_shapes(*(t.shape[:-2] for t in tracers))
        tracers = [t if t.shape[:-2] == batch else self.broadcast(t, batch + t.shape[-2:]) for t in tracers]
        params = {"batch": math.prod(batch), "n": n, "m": 0, **params}
        if grads is not None:
            grads = [g and self.slots[t._sid].active for g, t in zip(grads, tracers)]
        return self._emit(op, value.shape, [t._sid for t in tracers], params, value=value, grads=grads)

    def guard(self, x: Tracer, outcome: bool):
        """Record that the tape is valid only while ``bool(x)`` keeps this outcome."""
        self.guards.append((self.slots[x._sid].offset, bool(outcome)))


_RECORDING = threading.local()  # the recorders running a function on this thread, innermost last
_OPEN = 0  # recordings in progress in any thread: while none is, no thread has an active recorder
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def recording(rec: Recorder):
    """``rec`` is the trace of this thread while the block runs: a transformation called inside it
    records onto it (fasttape.nesting), whether or not its arguments are traced."""
    global _OPEN
    stack = getattr(_RECORDING, "stack", None)
    if stack is None:
        stack = _RECORDING.stack = []
    with _OPEN_LOCK:
        _OPEN += 1
    stack.append(rec)
    try:
        yield
    finally:
        stack.pop()
        with _OPEN_LOCK:
            _OPEN -= 1


def active_recorder() -> Recorder | None:
    """The innermost trace this thread is recording, or None."""
    if not _OPEN:  # (no recording anywhere: the thread-local lookup is the dearer test)
        return None
    stack = getattr(_RECORDING, "stack", None)
    return stack[-1] if stack else None


def _value_of(slot: Slot):
    """The value of a slot from a live tracer of it, or its constant (None if neither exists)."""
    if slot.origin[0] == "const":
        return slot.origin[1].reshape(slot.shape).astype(slot.dtype)
    return slot.value()


def _as_value(value):
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def normalize_axes(axis, ndim) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for a in axis:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in 'axis': {axis}")
    return tuple(sorted(out))


def recorder_of(args) -> Recorder | None:
    for a in args:
        if isinstance(a, Tracer):
            return a._rec
        if isinstance(a, (list, tuple)):
            rec = recorder_of(a)
            if rec is not None:
                return rec
    return None


def index_array(rec: Recorder, x):
    """Absolute buffer positions of ``x``'s elements, shaped like ``x``."""
    sid = rec.slot_of(x)
    s = rec.slots[sid]
    return np.arange(s.offset, s.offset + s.size, dtype=np.int64).reshape(s.shape)


def concrete(x):
    """The concrete value of a tracer, or the argument itself."""
    return x._value if isinstance(x, Tracer) else x


def move(fn, operands, *args, **kwargs) -> Tracer:
    """Record a pure data-movement function by running it on index arrays.

    ``fn`` is any NumPy function that only rearranges, repeats or selects
    elements (transpose, concatenate, tile, diagonal, ...).  Applied to the
    concrete values it gives the result; applied to the operands' buffer
    positions it gives the gather indices.  NumPy's own semantics, for free.
    """
    rec = recorder_of(operands)
    seq = isinstance(operands, list) and kwargs.pop("_sequence", False)
    if seq:
        value = fn([concrete(o) for o in operands], *args, **kwargs)
        index = fn([index_array(rec, o) for o in operands], *args, **kwargs)
    else:
        value = fn(*[concrete(o) for o in operands], *args, **kwargs)
        index = fn(*[index_array(rec, o) for o in operands], *args, **kwargs)
    return rec.gather(np.asarray(index), value, list(operands))
